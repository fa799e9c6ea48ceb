"""The receiver's errors, mapped to HTTP in one place (`api.install_error_handlers`); a body
over its cap is refused before it is read, by `limits.BodyLimitMiddleware` (413).

GatewayError
└── ReceiverError
    ├── InvalidSms               422: the request cannot be stored as it is
    ├── SignatureRefused         401: an adapter's signature does not verify
    ├── IdempotencyKeyReused     409: a batch key names a different batch
    └── StorageUnavailable       503: the database did not answer within the retries
"""

from __future__ import annotations

from sms_gateway.errors import GatewayError
from sms_gateway.problems import FieldProblem, field_problems


class ReceiverError(GatewayError):
    """An error of the receiver."""


class InvalidSms(ReceiverError):
    """The request cannot be stored as it is."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__(field_problems(problems))


class SignatureRefused(ReceiverError):
    """The request's signature does not verify."""


class IdempotencyKeyReused(ReceiverError):
    """This Idempotency-Key was already used for a different batch."""


class StorageUnavailable(ReceiverError):
    """The database cannot be reached; nothing was stored, try again later."""
