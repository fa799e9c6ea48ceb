"""The exceptions of the checks package.

    GatewayError
    └── ChecksError                  root of this package
        ├── CheckRegistryError       the registry itself is wrong (a bug, found at import)
        │   ├── DuplicateCheckError
        │   └── InvalidCheckNameError
        ├── UnknownCheckError        no check of that name (also a KeyError)
        └── CheckConfigurationError  settings and secrets that no SMS can satisfy
            └── MissingSecretError

A check never raises to say "invalid": a bad SMS gets `CheckResult.FAIL`. These exceptions mean
a bug or a configuration fault, which is not the SMS's fault: the validator marks such an SMS
`error` (SPEC §6.4) so that it can be requeued once the configuration is fixed, rather than
judging it invalid for good.
"""

from __future__ import annotations

from sms_gateway.errors import GatewayError


class ChecksError(GatewayError):
    """An error of the validation checks."""


class CheckRegistryError(ChecksError):
    """The check registry is inconsistent."""


class DuplicateCheckError(CheckRegistryError):
    """Two checks have the same name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"check {name!r} is registered twice; check names must be unique")


class InvalidCheckNameError(CheckRegistryError):
    """A check name is not usable as an sms_monitor column prefix."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"check name {name!r} must be 1 to 20 lower case letters, digits and underscores, "
            "starting with a letter (it names a sms_monitor column and fits failed_at_check)"
        )


class UnknownCheckError(ChecksError, KeyError):
    """No check has this name.

    Also a `KeyError`, so that the registry behaves as a `Mapping` (`in`, `.get`).
    """

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown check {name!r} (known: {', '.join(known)})")

    def __str__(self) -> str:
        # KeyError would print the repr of the message, quotes included.
        return str(self.args[0])


class CheckConfigurationError(ChecksError):
    """The settings and secrets given to a check cannot judge any SMS."""


class MissingSecretError(CheckConfigurationError):
    """A setting needs a secret that is not configured."""

    def __init__(self, setting: str, variable: str) -> None:
        self.setting = setting
        self.variable = variable
        super().__init__(f"{setting} needs the secret {variable}, which is not configured")
