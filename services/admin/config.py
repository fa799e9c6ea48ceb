"""The admin service's bootstrap configuration (SPEC §10): the shared fields plus the
operators' bearer tokens.

`SMSGW_ADMIN_TOKENS` (or `SMSGW_ADMIN_TOKENS_FILE`) holds comma-separated `name:token` pairs.
Several pairs may be live at once so that a token can be rotated without downtime: add the new
one, move the clients, remove the old one. The name is what the settings audit records as
`changed_by`; the token itself is a secret and is never logged or echoed.
"""

from __future__ import annotations

import re
from typing import ClassVar, Final

from pydantic import Field, SecretStr, model_validator

from sms_gateway.config import BootstrapConfig

# The name ends up in settings_audit.changed_by (VARCHAR(100)) and in logs: keep it plain.
TOKEN_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
# Below this length a token is guessable; development keeps its short placeholders.
MIN_TOKEN_LENGTH: Final = 16


class AdminConfig(BootstrapConfig):
    """What the admin service reads from the environment (`SMSGW_*`, each also `*_FILE`)."""

    service_name: ClassVar[str] = "sms-admin"
    default_http_port: ClassVar[int] = 8082

    admin_tokens: SecretStr = Field(
        description="comma-separated name:token pairs; the name is recorded in the audit"
    )

    def operator_tokens(self) -> dict[str, str]:
        """Token name → token (never log the values)."""
        return parse_admin_tokens(self.admin_tokens.get_secret_value())

    def secrets(self) -> dict[str, str]:
        # Each token is judged on its own by the placeholder rule of BootstrapConfig, so that a
        # real token next to a placeholder one does not hide the placeholder.
        found = super().secrets()
        found.pop("admin_tokens", None)
        for name, token in self.operator_tokens().items():
            found[f"admin_tokens ({name})"] = token
        return found

    @model_validator(mode="before")
    @classmethod
    def _tokens_are_well_formed(cls, data: object) -> object:
        # Runs before the base class's placeholder rule, which needs the pairs to parse.
        if isinstance(data, dict):
            raw = data.get("admin_tokens")
            if isinstance(raw, SecretStr):
                raw = raw.get_secret_value()
            if isinstance(raw, str):
                parse_admin_tokens(raw)
        return data

    @model_validator(mode="after")
    def _tokens_are_long_enough(self) -> AdminConfig:
        if self.development:
            return self
        short = sorted(
            name for name, token in self.operator_tokens().items() if len(token) < MIN_TOKEN_LENGTH
        )
        if short:
            raise ValueError(
                f"admin token(s) shorter than {MIN_TOKEN_LENGTH} characters: {', '.join(short)}"
            )
        return self


def parse_admin_tokens(raw: str) -> dict[str, str]:
    """`name:token,name:token` → {name: token}. Errors name the pair by position and name,
    never by its token."""
    tokens: dict[str, str] = {}
    for position, pair in enumerate(raw.split(","), start=1):
        name, colon, token = pair.strip().partition(":")
        if not colon:
            raise ValueError(f"admin_tokens: pair {position} is not name:token")
        if not TOKEN_NAME.match(name):
            raise ValueError(
                f"admin_tokens: pair {position} has a bad name (letters, digits, _ . @ -; "
                "at most 100 characters)"
            )
        if not token or token != token.strip():
            raise ValueError(f"admin_tokens: the token of {name!r} is empty or padded")
        if name in tokens:
            raise ValueError(f"admin_tokens: the name {name!r} is given twice")
        if token in tokens.values():
            raise ValueError(f"admin_tokens: {name!r} reuses another name's token")
        tokens[name] = token
    return tokens
