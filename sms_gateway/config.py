"""Bootstrap configuration: what a process needs before it can read `system_settings`.

Only the way to reach the database, where to export traces, and secrets come from the
environment (SPEC §10); everything else is a run-time setting. Every field can be given as
`SMSGW_<NAME>` or, for Docker secrets, as `SMSGW_<NAME>_FILE` naming a file that holds it.
Outside development mode a placeholder secret (the values of `.env.example`) is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sms_gateway.errors import ConfigurationError

ConfigT = TypeVar("ConfigT", bound="BootstrapConfig")

ENV_PREFIX = "SMSGW_"
_PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me", "placeholder", "example", "dev-only")
_PLACEHOLDER_VALUES = frozenset({"", "secret", "password", "token", "key", "admin", "postgres"})


def is_placeholder(secret: str) -> bool:
    lowered = secret.strip().lower()
    return lowered in _PLACEHOLDER_VALUES or any(mark in lowered for mark in _PLACEHOLDER_MARKS)


class _SecretFileSource(PydanticBaseSettingsSource):
    """Reads `SMSGW_<NAME>_FILE` (Docker and systemd credentials) for every field."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(variable)
        if not path:
            return None, field_name, False
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigurationError(f"{variable}: cannot read {path}: {exc.strerror}") from None
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


def available_cores() -> int:
    """The cores this process may run on (a cpuset limits them; a CPU quota does not show)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BootstrapConfig(BaseSettings):
    """What every service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    service_name: ClassVar[str] = "sms-gateway"
    default_http_port: ClassVar[int] = 8080
    # Processes when `processes` is unset; 0: one per core.
    default_processes: ClassVar[int] = 1

    environment: Literal["development", "production"] = Field(
        "production", description="development allows placeholder secrets"
    )
    database_url: SecretStr = Field(
        description="postgresql:// URL of this service's role, through pgbouncer (port 6432)"
    )
    db_pool_min_size: int = Field(1, ge=0, le=1000)
    db_pool_max_size: int = Field(
        8, ge=1, le=1000, description="kept within the pgbouncer_pool_size setting"
    )
    db_command_timeout: float = Field(10.0, gt=0, description="seconds for one statement")
    redis_password: SecretStr | None = None
    redis_db: int = Field(0, ge=0, le=15)
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint for traces, e.g. http://jaeger:4318"
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of SMS traced (decided from the uuid, the same in every service); "
        "1 = every SMS",
    )
    log_format: Literal["json", "text"] = "json"
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=1, le=65_535)
    processes: int | None = Field(
        None,
        ge=1,
        le=256,
        description="processes of this service on its port (gunicorn with uvicorn workers "
        "when more than 1); unset: the service's default",
    )
    # Slow and idle clients (sms_gateway.http_limits): how long a client may take to send its
    # request, how long an idle kept-alive connection stays, how many connections at once.
    http_header_timeout: float = Field(
        5.0, gt=0, le=300, description="seconds to receive the request line and headers"
    )
    http_body_timeout: float = Field(
        15.0, gt=0, le=600, description="seconds to receive the body once the headers are in"
    )
    http_keep_alive_timeout: float = Field(
        5.0, gt=0, le=300, description="seconds an idle kept-alive connection stays open"
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="connections and requests served at once per process; past it, 503",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        return (init_settings, env_settings, _SecretFileSource(settings_cls))

    @property
    def port(self) -> int:
        return self.http_port or self.default_http_port

    @property
    def process_count(self) -> int:
        """`processes`, else the service's default (`default_processes`; 0 means one per
        core)."""
        if self.processes is not None:
            return self.processes
        return self.default_processes or min(available_cores(), 64)

    @property
    def development(self) -> bool:
        return self.environment == "development"

    def secrets(self) -> dict[str, str]:
        """Every secret of this configuration by field name (never log the values)."""
        found: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                found[name] = value.get_secret_value()
        password = urlsplit(self.database_url.get_secret_value()).password
        if password is not None:
            found["database_url (password)"] = password
        found.pop("database_url", None)
        return found

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> BootstrapConfig:
        url = urlsplit(self.database_url.get_secret_value())
        if url.scheme not in ("postgresql", "postgres"):
            raise ValueError("database_url must be a postgresql:// URL")
        if self.development:
            return self
        unsafe = sorted(name for name, value in self.secrets().items() if is_placeholder(value))
        if unsafe:
            raise ValueError(
                f"placeholder secret(s) outside development mode: {', '.join(unsafe)}; "
                f"set real values or {ENV_PREFIX}ENVIRONMENT=development"
            )
        return self


def load_config(config_cls: type[ConfigT]) -> ConfigT:
    """Build a configuration from the environment, with one clear error when it is bad."""
    try:
        return config_cls()
    except ValidationError as exc:
        # Never echo the input: it holds secrets.
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper() or '*'}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(
            f"{config_cls.service_name}: bad configuration: {problems}"
        ) from None
