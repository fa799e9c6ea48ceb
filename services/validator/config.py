"""The validator's bootstrap configuration (SPEC §10): the database, Redis password, and the
two secrets the checks use (SPEC §10)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, SecretStr, field_validator

from sms_gateway.config import BootstrapConfig

if TYPE_CHECKING:  # the entry point imports this module before prometheus_client may be
    from checks.base import CheckSecrets


class ValidatorConfig(BootstrapConfig):
    service_name: ClassVar[str] = "sms-validator"
    default_http_port: ClassVar[int] = 8081
    default_processes: ClassVar[int] = 0  # one per core

    hash_key: SecretStr | None = Field(
        None, description="HMAC key of the hash check (UTF-8 text; its bytes are the key)"
    )
    mobile_aes_key: SecretStr | None = Field(
        None, description="AES-256-GCM key of the mobile check: 64 hex digits"
    )

    @field_validator("mobile_aes_key")
    @classmethod
    def _aes_key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            key = bytes.fromhex(value.get_secret_value())
        except ValueError:
            raise ValueError("must be 64 hex digits (32 bytes)") from None
        if len(key) != 32:
            raise ValueError("must be 64 hex digits (32 bytes)")
        return value

    def check_secrets(self) -> CheckSecrets:
        from checks.base import CheckSecrets  # noqa: PLC0415 (see the import above)

        return CheckSecrets(
            hash_key=(
                self.hash_key.get_secret_value().encode() if self.hash_key is not None else None
            ),
            mobile_aes_key=(
                bytes.fromhex(self.mobile_aes_key.get_secret_value())
                if self.mobile_aes_key is not None
                else None
            ),
        )
