"""The receiver's errors, mapped to HTTP in one place (`api.refusal`), each answered with the
problem details of `sms_gateway.problems`.

GatewayError
└── ReceiverError
    ├── InvalidSms               422: the request cannot be stored as it is
    ├── BodyTooLarge             413: the body is over its limit (limits.BodyLimits)
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


class BodyTooLarge(ReceiverError):
    """The request body is larger than the receiver accepts."""


class SignatureRefused(ReceiverError):
    """The request's signature does not verify."""


class IdempotencyKeyReused(ReceiverError):
    """This Idempotency-Key was already used for a different batch."""


class StorageUnavailable(ReceiverError):
    """The database cannot be reached; nothing was stored, try again later."""
