"""The validation checks, one rule per file, and their explicit registry.

`REGISTRY` maps each check's name to the check, in the SPEC's seed order (the default
`check_sequence`). It is written out below rather than discovered: a check that fails to
import stops the process instead of silently disappearing from the pipeline, and a repeated
name is refused when the registry is built.

Everything else that exists once per check is derived from a registry, never written out: the
default `check_sequence` and `check_enabled` (`DEFAULT_SETTINGS`), the result columns of
`sms_monitor` (`result_columns`) and with them the validator's and the admin's statements.
Adding a check is one new file in this package exporting `check` (an object with a `name` and
`__call__(sms, context) -> CheckResult`), one line in `_CHECKS` below (and its module in the
import) and a migration adding its column; `docs/architecture.md` walks through it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from checks import blacklist, duplicate, hash_length, header, mobile, time_window
from checks.base import Check, CheckSecrets, ConfigurationAware
from checks.errors import DuplicateCheckError, InvalidCheckNameError, UnknownCheckError
from sms_gateway.settings import RuntimeSettings, default_settings

# A check's name is the prefix of its sms_monitor column (`<name>_check`) and fits in
# sms_monitor.failed_at_check, VARCHAR(20).
_CHECK_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,19}")


class CheckRegistry(Mapping[str, Check]):
    """A read-only mapping of check name to check, in registration order."""

    __slots__ = ("_checks",)

    def __init__(self, checks: Iterable[Check]) -> None:
        by_name: dict[str, Check] = {}
        for check in checks:
            name = check.name
            if not _CHECK_NAME.fullmatch(name):
                raise InvalidCheckNameError(name)
            if name in by_name:
                raise DuplicateCheckError(name)
            by_name[name] = check
        self._checks: Final = by_name

    def __getitem__(self, name: str) -> Check:
        try:
            return self._checks[name]
        except KeyError:
            raise UnknownCheckError(name, tuple(self._checks)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._checks)

    def __len__(self) -> int:
        return len(self._checks)

    def __repr__(self) -> str:
        return f"CheckRegistry({', '.join(self._checks)})"


def build_registry(checks: Iterable[Check]) -> CheckRegistry:
    """A registry of `checks`; raises `DuplicateCheckError` on a repeated name."""
    return CheckRegistry(checks)


_CHECKS: Final[tuple[Check, ...]] = (
    blacklist.check,
    duplicate.check,
    header.check,
    hash_length.check,
    mobile.check,
    time_window.check,
)

REGISTRY: Final = build_registry(_CHECKS)
CHECK_NAMES: Final = tuple(REGISTRY)
# Every registered check runs, in registration order, enabled: the SPEC's seed order.
DEFAULT_SETTINGS: Final = default_settings(REGISTRY)


def result_column(name: str) -> str:
    """The sms_monitor column of the check `name` (0 not run, 1 pass, 2 fail, 3 skipped).

    Registered names are lower-case identifiers of at most 20 characters, so the column name
    can be written into SQL; anything else is refused rather than quoted.
    """
    if not _CHECK_NAME.fullmatch(name):
        raise InvalidCheckNameError(name)
    return f"{name}_check"


def result_columns(registry: Iterable[str] = REGISTRY) -> tuple[str, ...]:
    """The result columns of `registry`'s checks, in its order."""
    return tuple(result_column(name) for name in registry)


def get_check(name: str) -> Check:
    """The check called `name`; raises `UnknownCheckError` naming the known ones."""
    return REGISTRY[name]


def configuration_problems(
    settings: RuntimeSettings,
    secrets: CheckSecrets,
    names: Iterable[str] | None = None,
    *,
    registry: Mapping[str, Check] = REGISTRY,
) -> tuple[str, ...]:
    """What in `settings` and `secrets` would make the checks `names` (default: all of
    `registry`) raise `CheckConfigurationError` instead of judging SMS; empty when nothing would.

    For the validator to report (or refuse) a bad configuration when it loads settings.
    """
    problems: list[str] = []
    for name in registry if names is None else names:
        check = registry[name]
        if isinstance(check, ConfigurationAware):
            problems.extend(check.configuration_problems(settings, secrets))
    return tuple(problems)


__all__ = [
    "CHECK_NAMES",
    "DEFAULT_SETTINGS",
    "REGISTRY",
    "CheckRegistry",
    "build_registry",
    "configuration_problems",
    "get_check",
    "result_column",
    "result_columns",
]
