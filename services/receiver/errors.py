"""The receiver's errors, mapped to HTTP in one place (`api.install_error_handlers`).

GatewayError
└── ReceiverError
    ├── InvalidSms               422: the request cannot be stored as it is
    ├── BodyTooLarge             413
    ├── SignatureRefused         401: an adapter's signature does not verify
    ├── IdempotencyKeyReused     409: a batch key names a different batch
    └── StorageUnavailable       503: the database did not answer within the retries
"""

from __future__ import annotations

from dataclasses import dataclass

from sms_gateway.errors import GatewayError


@dataclass(frozen=True)
class Problem:
    """One reason a request is refused: where (field, and item index in a batch) and the rule."""

    field: str
    rule: str
    index: int | None = None

    def describe(self) -> str:
        where = self.field if self.index is None else f"[{self.index}].{self.field}"
        return f"{where}: {self.rule}"

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"field": self.field, "rule": self.rule}
        if self.index is not None:
            body["index"] = self.index
        return body


class ReceiverError(GatewayError):
    """An error of the receiver."""


class InvalidSms(ReceiverError):
    """The request cannot be stored as it is."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(problem.describe() for problem in problems))


class BodyTooLarge(ReceiverError):
    """The request body is larger than the receiver accepts."""


class SignatureRefused(ReceiverError):
    """The request's signature does not verify."""


class IdempotencyKeyReused(ReceiverError):
    """This Idempotency-Key was already used for a different batch."""


class StorageUnavailable(ReceiverError):
    """The database cannot be reached; nothing was stored, try again later."""
