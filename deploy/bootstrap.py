"""The database bootstrap under its old path: `sms_gateway.bootstrap` (`sms-bootstrap`) is the
one implementation; this shim remains while a deployment still names the file."""

from __future__ import annotations

import sys

from sms_gateway.bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
