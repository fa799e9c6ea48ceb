"""The admin service's errors, mapped to HTTP in one place (`app.install_error_handlers`).

GatewayError
├── UnknownSettingError (sms_gateway)  404
├── SettingValueError (sms_gateway)    422: names the key and the rule
└── AdminError
    ├── NotAuthenticated               401: a missing, malformed or unknown bearer token
    ├── UnknownQueryParameters         422: names them and the accepted ones
    ├── InvalidParameters              422: a path or query parameter is not plain text
    ├── SmsNotFound                    404
    ├── SenderNotBlacklisted           404
    └── SmsNotInError                  409: only an SMS in error can be requeued
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from uuid import UUID

from sms_gateway.errors import GatewayError
from sms_gateway.problems import FieldProblem, field_problems


class AdminError(GatewayError):
    """An error of the admin service."""


class NotAuthenticated(AdminError):
    """A valid bearer token is required."""

    def __init__(self, reason: str) -> None:
        # `reason` is for logs and metrics (missing, malformed, unknown); never the token.
        self.reason = reason
        super().__init__()


class UnknownQueryParameters(AdminError):
    """The request names query parameters this endpoint does not take."""

    def __init__(self, unknown: Collection[str], accepted: Collection[str]) -> None:
        self.unknown = sorted(unknown)
        super().__init__(
            f"unknown query parameter(s): {', '.join(self.unknown)} "
            f"(accepted: {', '.join(sorted(accepted)) or 'none'})"
        )


class InvalidParameters(AdminError):
    """A path or query parameter breaks its rule."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__(field_problems(self.problems))


class SmsNotFound(AdminError):
    """No SMS has this uuid."""

    def __init__(self, sms_uuid: UUID) -> None:
        self.sms_uuid = sms_uuid
        super().__init__(f"no SMS has the uuid {sms_uuid}")


class SenderNotBlacklisted(AdminError):
    """The sender is not blacklisted."""

    def __init__(self, sender_number: str) -> None:
        self.sender_number = sender_number
        super().__init__(f"sender {sender_number!r} is not blacklisted")


class SmsNotInError(AdminError):
    """Only an SMS whose overall_status is 'error' can be requeued."""

    def __init__(self, sms_uuid: UUID, overall_status: str) -> None:
        self.sms_uuid = sms_uuid
        self.overall_status = overall_status
        super().__init__(
            f"SMS {sms_uuid} is {overall_status}; only an SMS in error can be requeued"
        )
