"""`sms-validator`: the batch engine and its operational endpoints.

One process per core by default (`SMSGW_PROCESSES`): the checks' Python work then uses every
core, each process's workers leasing their share of the partitions (docs/architecture.md,
"Partitions").
"""

from __future__ import annotations

import sys

from services.validator.config import ValidatorConfig
from sms_gateway import service


def main() -> int:
    return service.main(ValidatorConfig, "services.validator.app:create_app")


if __name__ == "__main__":
    sys.exit(main())
