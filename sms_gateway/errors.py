"""The exception root of the gateway.

    GatewayError
    ├── ConfigurationError       bootstrap configuration is missing or unsafe
    ├── SettingValueError        a run-time setting value breaks its rule
    │   └── ReadOnlySettingError
    ├── UnknownSettingError
    ├── MigrationError
    ├── NotStartedError          a request reached a service whose lifespan has not run
    └── TransientError           an infrastructure fault that is worth retrying
        └── RetriesExhaustedError

Each class's docstring is its default message. Domain packages (checks, the services) derive
their own errors from `GatewayError` and map them to HTTP in one place per service.
"""

from __future__ import annotations


class GatewayError(Exception):
    """An error of the SMS gateway."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(GatewayError):
    """The bootstrap configuration is missing or unsafe."""


class UnknownSettingError(GatewayError):
    """No such setting."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"{key}: no such setting")


class SettingValueError(GatewayError):
    """A setting value breaks its rule."""

    def __init__(self, key: str, rule: str) -> None:
        self.key = key
        self.rule = rule
        super().__init__(f"{key}: {rule}")


class ReadOnlySettingError(SettingValueError):
    """The setting is written only by the gateway itself."""


class MigrationError(GatewayError):
    """A schema migration failed."""


class NotStartedError(GatewayError):
    """The service's lifespan has not run: it has no state to answer with."""


class TransientError(GatewayError):
    """An infrastructure fault that is worth retrying."""


class RetriesExhaustedError(TransientError):
    """A transient fault outlasted every retry."""
