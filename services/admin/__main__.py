"""`sms-admin`: the admin service (one process by default; scale by running more)."""

from __future__ import annotations

import sys

from services.admin.config import AdminConfig
from sms_gateway import service


def main() -> int:
    return service.main(AdminConfig, "services.admin.app:create_app")


if __name__ == "__main__":
    sys.exit(main())
