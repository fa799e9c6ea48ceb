"""Run-time settings: the one place that knows every key of `system_settings`.

Each key has a type, bounds, a default and a meaning (SPEC §3). Values are stored as text;
`parse_setting_text` turns a stored value into its typed form and `encode_setting` does the
reverse. `validate_setting` checks a value that arrives from the admin API (JSON), so that the
admin service and the validator share the same rules rather than two copies of them.

`SettingsStore` reads the whole table in one query. A value that breaks its rule keeps the last
good value of that key and logs an error naming the key and the rule: a bad value written by
hand never crashes a service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, Protocol
from uuid import UUID

import asyncpg
import phonenumbers
from prometheus_client import Counter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)

from sms_gateway import db
from sms_gateway.errors import ReadOnlySettingError, SettingValueError, UnknownSettingError
from sms_gateway.logging import set_level
from sms_gateway.text import require_plain_text

logger = logging.getLogger(__name__)

ZERO_UUID: Final = UUID(int=0)
# The upper bound of the integer settings SPEC §3 leaves open: a PostgreSQL INTEGER (the type of
# count_sms.message_count), so that every reader can use any accepted value: a window or TTL of
# this many seconds (68 years) still fits `timedelta` and Redis EXPIRE, where 10**20 does not.
MAX_INTEGER: Final = 2_147_483_647

SETTINGS_RELOADS = Counter(
    "sms_settings_reloads_total", "Reloads of system_settings by this process."
)
SETTINGS_INVALID = Counter(
    "sms_settings_invalid_values_total",
    "Distinct stored setting values refused (the last good value was kept).",
    ["key"],
)

# Validation context key: the names of the checks this process knows (the registry). When it is
# given, check_sequence and check_enabled may name only those checks.
KNOWN_CHECKS: Final = "known_checks"


def _refuse_unknown_checks(names: Iterable[str], info: ValidationInfo) -> None:
    """When the validation context names the known checks, every name must be one of them."""
    context = info.context
    known = context.get(KNOWN_CHECKS) if isinstance(context, Mapping) else None
    if known is None:
        return
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(
            f"unknown check(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )


def _check_sequence_rule(value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    repeated = sorted({name for name in value if value.count(name) > 1})
    if repeated:
        raise ValueError(f"check names must not repeat: {', '.join(repeated)}")
    _refuse_unknown_checks(value, info)
    return value


def _check_enabled_rule(
    value: dict[str, StrictBool], info: ValidationInfo
) -> dict[str, StrictBool]:
    _refuse_unknown_checks(value, info)
    return value


def _regex_rule(value: str) -> str:
    if value != value.strip():
        # The stored text is trimmed when it is read: " " would be read back as "", no pattern.
        raise ValueError("it starts or ends with white space, which is trimmed when read")
    try:
        with warnings.catch_warnings():
            # re's FutureWarnings (e.g. "possible nested set") are about future meanings of
            # a valid pattern, not errors of it.
            warnings.simplefilter("ignore", FutureWarning)
            re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def _regions_rule(value: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(r for r in value if r not in phonenumbers.SUPPORTED_REGIONS)
    if unknown:
        raise ValueError(f"not ISO 3166 alpha-2 regions with phone numbering: {', '.join(unknown)}")
    if len(set(value)) != len(value):
        raise ValueError("regions must not repeat")
    return value


def _hostname_rule(value: str) -> str:
    require_plain_text(value)
    if value != value.strip() or not value or any(c.isspace() for c in value):
        raise ValueError("a host name or address without white space")
    return value


def _separator_rule(value: str) -> str:
    return require_plain_text(value, allow="\t")


# Every string a setting holds is plain text (sms_gateway.text): no lone surrogate, no NUL, no
# control character; the message separator alone may be a TAB.
PlainText = Annotated[str, AfterValidator(require_plain_text)]
CheckName = Annotated[PlainText, Field(min_length=1, max_length=50)]
CheckSequence = Annotated[
    tuple[CheckName, ...], Field(max_length=100), AfterValidator(_check_sequence_rule)
]
CheckEnabled = Annotated[
    dict[CheckName, StrictBool], Field(max_length=100), AfterValidator(_check_enabled_rule)
]
Regex = Annotated[
    str, Field(max_length=500), AfterValidator(require_plain_text), AfterValidator(_regex_rule)
]
AllowedHeaders = Annotated[
    tuple[Annotated[PlainText, Field(min_length=1, max_length=160)], ...],
    Field(max_length=10_000),
]
Separator = Annotated[str, Field(min_length=1, max_length=3), AfterValidator(_separator_rule)]
Regions = Annotated[
    tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...], AfterValidator(_regions_rule)
]
HostName = Annotated[str, Field(max_length=255), AfterValidator(_hostname_rule)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _setting(default: Any, rule: str, meaning: str, *, read_only: bool = False) -> Any:
    return Field(
        default=default,
        description=meaning,
        json_schema_extra={"rule": rule, "read_only": read_only},
    )


class RuntimeSettings(BaseModel):
    """Every run-time setting with its type, bounds and default (SPEC §3)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: Annotated[int, Field(ge=1, le=10_000)] = _setting(
        20, "an integer from 1 to 10000", "SMS per batch"
    )
    blacklist_threshold: Annotated[int, Field(ge=1, le=MAX_INTEGER)] = _setting(
        10, f"an integer from 1 to {MAX_INTEGER}", "a sender with more SMS than this is blacklisted"
    )
    last_processed_uuid: UUID = _setting(
        ZERO_UUID, "a UUID", "the validator's checkpoint", read_only=True
    )
    # The core knows no check: `default_settings(names)` lists and enables the registered ones
    # (checks.DEFAULT_SETTINGS), so that the defaults follow the registry.
    check_sequence: CheckSequence = _setting(
        (),
        "a JSON list of check names without repeats",
        "the order in which checks run; a check not listed is not run",
    )
    check_enabled: CheckEnabled = _setting(
        {},
        "a JSON object mapping check names to true or false",
        "a disabled check records 3 (skipped) and the pipeline goes on",
    )
    validation_time_window: Annotated[int, Field(ge=0, le=MAX_INTEGER)] = _setting(
        3600,
        f"an integer number of seconds from 0 to {MAX_INTEGER}",
        "maximum delay of an SMS; 0 skips the check",
    )
    out_sms_cache_ttl: Annotated[int, Field(ge=60, le=MAX_INTEGER)] = _setting(
        604_800,
        f"an integer number of seconds from 60 to {MAX_INTEGER}",
        "TTL of the Redis set out_sms_numbers",
    )
    max_database_retries: Annotated[int, Field(ge=0, le=10)] = _setting(
        3, "an integer from 0 to 10", "attempts for a transient database or Redis error"
    )
    log_level: LogLevel = _setting(
        "INFO", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL", "log level, applied at run time"
    )
    parallel_workers: Annotated[int, Field(ge=1, le=64)] = _setting(
        1, "an integer from 1 to 64", "batches in flight at once"
    )
    maintenance_mode: bool = _setting(
        False, "true or false", "the validator claims no new batch; the receiver keeps accepting"
    )
    pgbouncer_pool_size: Annotated[int, Field(ge=1, le=1000)] = _setting(
        10, "an integer from 1 to 1000", "pgbouncer default_pool_size"
    )
    redis_host: HostName = _setting(
        "localhost",
        "a host name or address of at most 255 characters, no white space",
        "where Redis is; a change reconnects",
    )
    redis_port: Annotated[int, Field(ge=1, le=65_535)] = _setting(
        6379, "an integer from 1 to 65535", "Redis port; a change reconnects"
    )
    message_separator: Separator = _setting(
        " ",
        "a string of 1 to 3 characters, no control character but TAB",
        "separates HEADER, HASH and MOBILE",
    )
    header_pattern: Regex = _setting(
        r"^[A-Z][A-Z0-9]{1,10}$",
        "a regular expression of at most 500 characters, no control character, not starting or "
        "ending with white space (full match; empty for none)",
        "the header must match it",
    )
    header_allowed: AllowedHeaders = _setting(
        (),
        "a JSON list of at most 10000 strings of 1 to 160 characters, no control character",
        "allowed headers; empty allows any that match the pattern",
    )
    hash_length: Annotated[int, Field(ge=0, le=256)] = _setting(
        16, "an integer from 0 to 256", "length of the hash; 0 skips the check"
    )
    hash_encoding: Literal["hex", "base64url", "base32"] = _setting(
        "hex", "one of hex, base64url, base32", "alphabet of the hash"
    )
    mobile_encoding: Literal["none", "plain", "base64", "aes-gcm"] = _setting(
        "plain",
        "one of none, plain, base64, aes-gcm",
        "how the mobile number is encoded in the message; none skips the check",
    )
    mobile_regions: Regions = _setting(
        (),
        "a JSON list of ISO 3166 alpha-2 region codes",
        "regions the mobile number may belong to; empty allows any",
    )
    mobile_match_sender: bool = _setting(
        True, "true or false", "the mobile number must equal the sender"
    )
    time_window_reference: Literal["arrival", "processing"] = _setting(
        "arrival", "one of arrival, processing", "reference time of the time_window check"
    )
    time_window_max_skew: Annotated[int, Field(ge=0, le=MAX_INTEGER)] = _setting(
        300,
        f"an integer number of seconds from 0 to {MAX_INTEGER}",
        "how far in the future a timestamp may be",
    )
    max_message_length: Annotated[int, Field(ge=1, le=65_536)] = _setting(
        1600, "an integer from 1 to 65536", "the receiver refuses a longer sms_message"
    )
    retention_days: Annotated[int, Field(ge=0, le=3650)] = _setting(
        30,
        "an integer number of days from 0 to 3650 (0 keeps everything)",
        "how long judged SMS are kept: a day's time partition is dropped once it is this many "
        "days old and every SMS in it is judged",
    )


SETTING_KEYS: Final = tuple(RuntimeSettings.model_fields)
# The defaults of a process that knows no check; see `default_settings`.
DEFAULTS: Final = RuntimeSettings()


def default_settings(known_checks: Iterable[str]) -> RuntimeSettings:
    """The defaults when `known_checks` (in registry order) are the checks: every one of them
    runs, in that order, enabled. This is what a key missing from the table means."""
    names = tuple(known_checks)
    return DEFAULTS.model_copy(
        update={"check_sequence": names, "check_enabled": dict.fromkeys(names, True)}
    )


_JSON_KEYS: Final = frozenset(
    {"check_sequence", "check_enabled", "header_allowed", "mobile_regions"}
)


def _adapter(key: str) -> TypeAdapter[Any]:
    field = RuntimeSettings.model_fields[key]
    assert field.annotation is not None
    if not field.metadata:
        return TypeAdapter(field.annotation)
    annotated: Any = Annotated[field.annotation, *field.metadata]
    return TypeAdapter(annotated)


_ADAPTERS: Final = {key: _adapter(key) for key in SETTING_KEYS}


def setting_rule(key: str) -> str:
    """The human-readable rule of a key, as error messages state it."""
    extra = RuntimeSettings.model_fields[key].json_schema_extra
    assert isinstance(extra, dict)
    return str(extra["rule"])


def setting_meaning(key: str) -> str:
    return RuntimeSettings.model_fields[key].description or ""


def is_read_only(key: str) -> bool:
    extra = RuntimeSettings.model_fields[key].json_schema_extra
    assert isinstance(extra, dict)
    return bool(extra["read_only"])


def _require_known(key: str) -> None:
    if key not in _ADAPTERS:
        raise UnknownSettingError(key)


def validate_setting(key: str, value: Any, *, known_checks: Iterable[str] | None = None) -> Any:
    """Validate a value given as JSON (or as its stored text) and return its typed form.

    Raises `SettingValueError` naming the key and the rule.
    """
    _require_known(key)
    if RuntimeSettings.model_fields[key].annotation is bool:
        # Only true/false: 0, 1, "yes" or "on" are more likely mistakes than intentions.
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise SettingValueError(key, f"must be {setting_rule(key)}; got {_shown(value)}")
        return value
    if key in _JSON_KEYS and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SettingValueError(key, f"must be {setting_rule(key)}; not JSON: {exc}") from None
        except (ValueError, RecursionError):  # an integer of over 4300 digits, deep nesting
            raise SettingValueError(
                key, f"must be {setting_rule(key)}; not JSON this service can read"
            ) from None
    elif isinstance(value, bool) and RuntimeSettings.model_fields[key].annotation is not bool:
        # JSON true/false are not integers here, whatever Python thinks.
        raise SettingValueError(key, f"must be {setting_rule(key)}; got a boolean")
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    context = {KNOWN_CHECKS: frozenset(known_checks)} if known_checks is not None else None
    try:
        return _ADAPTERS[key].validate_python(value, context=context)
    except ValidationError as exc:
        detail = "; ".join(_describe(error) for error in exc.errors())
        raise SettingValueError(key, f"must be {setting_rule(key)}; {detail}") from None


def _shown(value: Any) -> str:
    """A short repr of a refused value."""
    try:
        text = repr(value)
    except ValueError:  # an integer of over 4300 digits, or a list holding one
        return "a value holding an integer out of range"
    return text if len(text) <= 60 else f"{text[:57]}..."


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    location = ".".join(str(part) for part in error.get("loc", ()))
    return f"{location}: {message}" if location else message


def parse_setting_text(key: str, text: str, *, known_checks: Iterable[str] | None = None) -> Any:
    """Turn a stored text value into its typed form (see `validate_setting`)."""
    _require_known(key)
    if key != "message_separator":
        text = text.strip()
    return validate_setting(key, text, known_checks=known_checks)


def validate_update(key: str, value: Any, *, known_checks: Iterable[str] | None = None) -> Any:
    """Validate a value that an operator wants to write; read-only keys are refused."""
    _require_known(key)
    if is_read_only(key):
        raise ReadOnlySettingError(key, "is read-only: only the validator writes it")
    return validate_setting(key, value, known_checks=known_checks)


def encode_setting(key: str, value: Any) -> str:
    """The stored text of a typed value."""
    _require_known(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if key in _JSON_KEYS:
        plain = list(value) if isinstance(value, tuple) else value
        return json.dumps(plain, separators=(", ", ": "))
    return str(value)


def to_json(key: str, value: Any) -> Any:
    """A typed value as JSON-ready data (for the admin API)."""
    _require_known(key)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


SELECT_SETTINGS: Final = "SELECT setting_key, setting_value FROM system_settings"


class SettingsStore:
    """The last good settings of this process, refreshed from `system_settings`.

    A stored value that breaks its rule is logged once (until it changes) and the key keeps its
    last good value; a missing key keeps its default. A stored text seen at the previous reload
    is not parsed again: the validator reloads before every batch. With `known_checks` (in
    registry order), check names are validated against them and the defaults list them.
    """

    def __init__(self, *, known_checks: Iterable[str] | None = None) -> None:
        names = tuple(known_checks) if known_checks is not None else None
        self._known_checks = frozenset(names) if names is not None else None
        self._defaults = default_settings(names) if names is not None else DEFAULTS
        self._current = self._defaults
        self._seen: dict[str, str] = {}  # key -> the stored text last applied or refused
        self._refused: set[str] = set()  # keys whose stored text is refused now
        self._stored: frozenset[str] = frozenset()  # keys the table held at the last reload
        self._unknown_reported: set[str] = set()

    @property
    def current(self) -> RuntimeSettings:
        return self._current

    @property
    def defaults(self) -> RuntimeSettings:
        """What a key missing from the table means to this process."""
        return self._defaults

    def holds_valid(self, key: str) -> bool:
        """Whether the table held an accepted value of `key` at the last reload: not a default
        standing in for a missing row, nor a last good value kept over a refused one. A setting
        that deletes data (retention_days) acts only on such a value."""
        return key in self._stored and key not in self._refused

    def apply(self, rows: Iterable[tuple[str, str]]) -> RuntimeSettings:
        SETTINGS_RELOADS.inc()
        changes: dict[str, Any] = {}
        stored = []
        for key, text in rows:
            stored.append(key)
            if self._seen.get(key) == text:
                continue
            if key not in _ADAPTERS:
                if key not in self._unknown_reported:
                    self._unknown_reported.add(key)
                    logger.warning("ignoring unknown setting", extra={"setting_key": key})
                continue
            self._seen[key] = text
            try:
                changes[key] = parse_setting_text(key, text, known_checks=self._known_checks)
                self._refused.discard(key)
            except SettingValueError as exc:
                self._refused.add(key)
                SETTINGS_INVALID.labels(key=key).inc()
                logger.error(  # noqa: TRY400 - a refused value is not an exception to trace
                    "refusing stored setting value, keeping the last good one",
                    extra={
                        "setting_key": key,
                        "rule": exc.rule,
                        "kept_value": to_json(key, getattr(self._current, key)),
                    },
                )
        if changes:
            # Every value was validated on its own above; the model holds no cross-key rule.
            self._current = RuntimeSettings.model_construct(**(dict(self._current) | changes))
        self._stored = frozenset(stored)
        return self._current

    async def reload(self, connection: _Fetcher) -> RuntimeSettings:
        rows = await connection.fetch(SELECT_SETTINGS)
        return self.apply((row["setting_key"], row["setting_value"]) for row in rows)


class _Fetcher(Protocol):
    """An asyncpg connection or pool, as far as reading settings goes."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


async def keep_fresh(
    pool: asyncpg.Pool,
    store: SettingsStore,
    *,
    interval: float = 2.0,
    transient: tuple[type[BaseException], ...] = (),
) -> None:
    """Reload `store` every `interval` seconds until cancelled (receiver and admin; SPEC §3:
    a change takes effect within a few seconds). The `log_level` setting is applied on each
    reload. A transient database fault is logged and the last good settings stay in force."""
    while True:
        try:
            async with db.transaction(pool, readonly=True) as connection:
                settings = await store.reload(connection)
            set_level(settings.log_level)
        except transient as exc:
            logger.warning(
                "cannot reload settings, keeping the current ones",
                extra={"error": type(exc).__name__},
            )
        await asyncio.sleep(interval)
