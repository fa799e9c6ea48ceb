"""The validator's exceptions.

GatewayError
└── ValidatorError
    ├── HorizonUnsafeError      the role cannot see other sessions' transactions
    ├── DoubleJudgementError    a batch tried to judge an SMS that already has a final row
    └── IndexIncompleteError    the Redis set changed under a repair (transient: retried)
"""

from __future__ import annotations

from sms_gateway.errors import GatewayError


class ValidatorError(GatewayError):
    """An error of the validator."""


class HorizonUnsafeError(ValidatorError):
    """The validator's role cannot read other sessions' xact_start in pg_stat_activity (it needs
    pg_read_all_stats, granted by db/init/0005): the settle horizon would not be safe."""


class DoubleJudgementError(ValidatorError):
    """A batch tried to write a final result for an SMS that already has one; it was rolled
    back."""


class IndexIncompleteError(ValidatorError):
    """The Redis set out_sms_numbers is not known to be complete; the batch is retried rather
    than judged from it."""
