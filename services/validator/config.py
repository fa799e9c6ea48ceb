"""The validator's bootstrap configuration (SPEC §10): the database, Redis password, the two
secrets the checks use (SPEC §10), and where time partitions are archived (a deployment path,
not a setting: compose mounts a volume there, the playbook makes the directory)."""

from __future__ import annotations

import os
from pathlib import Path
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

    archive_dir: Path | None = Field(
        None,
        description="where time partitions are archived before retention drops them "
        "(an existing directory the validator may write; unset: no archive)",
    )

    @field_validator("archive_dir", mode="before")
    @classmethod
    def _empty_is_no_archive(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("archive_dir")
    @classmethod
    def _archive_dir_is_writable(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        if not os.access(value, os.W_OK | os.X_OK):
            raise ValueError(f"{value} is not writable by this user")
        return value

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
