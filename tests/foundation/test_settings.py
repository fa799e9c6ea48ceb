"""Every run-time setting is validated by one typed model (SPEC §3)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

import checks
from sms_gateway import db
from sms_gateway.errors import ReadOnlySettingError, SettingValueError, UnknownSettingError
from sms_gateway.settings import (
    DEFAULTS,
    MAX_INTEGER,
    SETTING_KEYS,
    SettingsStore,
    encode_setting,
    keep_fresh,
    parse_setting_text,
    validate_setting,
    validate_update,
)
from sms_gateway.text import plain_text_problem

# The registry's names, in its order (the default check_sequence of a store that knows them).
KNOWN = tuple(checks.REGISTRY)

# (key, good values, bad values) for every key; a test checks that none is forgotten.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "batch_size": (1, 10_000),
    "blacklist_threshold": (1, MAX_INTEGER),
    "validation_time_window": (0, MAX_INTEGER),
    "out_sms_cache_ttl": (60, MAX_INTEGER),
    "max_database_retries": (0, 10),
    "parallel_workers": (1, 64),
    "pgbouncer_pool_size": (1, 1000),
    "redis_port": (1, 65_535),
    "hash_length": (0, 256),
    "time_window_max_skew": (0, MAX_INTEGER),
    "max_message_length": (1, 65_536),
    "retention_days": (0, 3650),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "hash_encoding": ("hex", "base64url", "base32"),
    "mobile_encoding": ("none", "plain", "base64", "aes-gcm"),
    "time_window_reference": ("arrival", "processing"),
}
BOOLS = ("maintenance_mode", "mobile_match_sender")
OTHER = (
    "last_processed_uuid",
    "check_sequence",
    "check_enabled",
    "redis_host",
    "message_separator",
    "header_pattern",
    "header_allowed",
    "mobile_regions",
)


def test_every_key_is_covered_here() -> None:
    assert set(INT_BOUNDS) | set(CHOICES) | set(BOOLS) | set(OTHER) == set(SETTING_KEYS)


def test_no_integer_setting_is_unbounded() -> None:
    """A value the API accepts must be one every reader can use: a window of 10**20 seconds
    overflows `timedelta` in the time_window check, a TTL that large is refused by Redis, and a
    threshold beyond a PostgreSQL INTEGER can never be reached by count_sms.message_count."""
    for key in INT_BOUNDS:
        with pytest.raises(SettingValueError, match=rf"^{key}: must be an integer"):
            validate_setting(key, 2**31)
        with pytest.raises(SettingValueError, match=rf"^{key}: must be an integer"):
            parse_setting_text(key, str(10**20))
    for key in ("validation_time_window", "time_window_max_skew", "out_sms_cache_ttl"):
        largest = INT_BOUNDS[key][1]
        assert timedelta(seconds=validate_setting(key, largest)) > timedelta(0)


@st.composite
def int_setting(draw: st.DrawFn) -> tuple[str, int, bool]:
    key = draw(st.sampled_from(sorted(INT_BOUNDS)))
    low, high = INT_BOUNDS[key]
    near = st.sampled_from((low, high))
    value = draw(near) + draw(st.integers(min_value=-1000, max_value=1000))
    ok = low <= value <= high
    return key, value, ok


@given(int_setting())
def test_integer_settings_keep_their_bounds(case: tuple[str, int, bool]) -> None:
    key, value, ok = case
    for given_as in (value, str(value)):
        if ok:
            assert validate_setting(key, given_as) == value
            assert parse_setting_text(key, encode_setting(key, value)) == value
        else:
            with pytest.raises(SettingValueError) as raised:
                validate_setting(key, given_as)
            assert raised.value.key == key
            assert str(raised.value).startswith(f"{key}: must be an integer")


@given(st.sampled_from(sorted(CHOICES)), st.text(max_size=12))
def test_choice_settings_accept_only_their_choices(key: str, value: str) -> None:
    if value in CHOICES[key]:
        assert validate_setting(key, value) == value
    else:
        with pytest.raises(SettingValueError, match=rf"^{key}: must be one of"):
            validate_setting(key, value)


@given(st.sampled_from(BOOLS), st.one_of(st.booleans(), st.text(max_size=6), st.integers()))
def test_boolean_settings(key: str, value: Any) -> None:
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
        expected = value if isinstance(value, bool) else value.lower() == "true"
        assert validate_update(key, value) is expected
    else:
        with pytest.raises(SettingValueError, match=rf"^{key}: must be true or false"):
            validate_update(key, value)


@given(st.lists(st.sampled_from([*KNOWN, "spam", "blacklist "]), max_size=8))
def test_check_sequence_names_known_checks_without_repeats(names: list[str]) -> None:
    ok = len(set(names)) == len(names) and set(names) <= set(KNOWN)
    if ok:
        assert validate_setting("check_sequence", names, known_checks=KNOWN) == tuple(names)
        text = encode_setting("check_sequence", tuple(names))
        assert parse_setting_text("check_sequence", text, known_checks=KNOWN) == tuple(names)
    else:
        with pytest.raises(SettingValueError, match=r"^check_sequence: must be a JSON list"):
            validate_setting("check_sequence", names, known_checks=KNOWN)


@given(
    st.dictionaries(
        st.sampled_from([*KNOWN, "spam"]),
        st.one_of(st.booleans(), st.integers(0, 1), st.just("true")),
    )
)
def test_check_enabled_maps_known_checks_to_booleans(value: dict[str, Any]) -> None:
    ok = set(value) <= set(KNOWN) and all(isinstance(v, bool) for v in value.values())
    if ok:
        assert validate_setting("check_enabled", json.dumps(value), known_checks=KNOWN) == value
    else:
        with pytest.raises(SettingValueError, match=r"^check_enabled: "):
            validate_setting("check_enabled", value, known_checks=KNOWN)


@given(st.text(max_size=5))
def test_message_separator_is_one_to_three_characters(value: str) -> None:
    # Plain text (sms_gateway.text): no control character but TAB.
    if 1 <= len(value) <= 3 and plain_text_problem(value, allow="\t") is None:
        assert parse_setting_text("message_separator", value) == value
    else:
        with pytest.raises(SettingValueError, match=r"^message_separator: must be a string of 1"):
            parse_setting_text("message_separator", value)


@pytest.mark.parametrize(
    ("key", "bad", "rule"),
    [
        ("header_pattern", "[A-Z", "not a valid regular expression"),
        ("mobile_regions", '["GB", "ZZ"]', "ZZ"),
        ("mobile_regions", '["gb"]', "should match pattern"),
        ("mobile_regions", '"GB"', "valid tuple"),
        ("header_allowed", "[1, 2]", "valid string"),
        ("redis_host", "two words", "without white space"),
        ("last_processed_uuid", "not-a-uuid", "must be a UUID"),
        ("check_sequence", "[not json", "not JSON"),
    ],
)
def test_structured_settings_name_the_rule(key: str, bad: str, rule: str) -> None:
    with pytest.raises(SettingValueError) as raised:
        parse_setting_text(key, bad, known_checks=KNOWN)
    assert str(raised.value).startswith(f"{key}: ")
    assert rule in str(raised.value)


def test_unknown_and_read_only_keys_are_refused() -> None:
    with pytest.raises(UnknownSettingError, match=r"^no_such_key: no such setting$"):
        validate_update("no_such_key", 1)
    with pytest.raises(ReadOnlySettingError, match=r"^last_processed_uuid: is read-only"):
        validate_update("last_processed_uuid", "00000000-0000-0000-0000-000000000001")


def test_defaults_round_trip_through_their_stored_text() -> None:
    for key in SETTING_KEYS:
        value = getattr(DEFAULTS, key)
        assert parse_setting_text(key, encode_setting(key, value), known_checks=KNOWN) == value


async def test_a_bad_value_written_by_hand_keeps_the_last_good_one(
    owner_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    store = SettingsStore(known_checks=KNOWN)
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "UPDATE system_settings SET setting_value = '50' WHERE setting_key = 'batch_size'"
        )
        assert (await store.reload(connection)).batch_size == 50

        await connection.executemany(
            "UPDATE system_settings SET setting_value = $2 WHERE setting_key = $1",
            [
                ("batch_size", "fifty"),
                ("check_sequence", '["header", "nonsense"]'),
                ("log_level", "LOUD"),
                ("parallel_workers", "8"),
            ],
        )
        await connection.execute(
            "INSERT INTO system_settings (setting_key, setting_value) VALUES ('mystery', 'x')"
        )
        with caplog.at_level(logging.WARNING, logger="sms_gateway.settings"):
            settings = await store.reload(connection)

    assert settings.batch_size == 50  # the last good value
    assert settings.check_sequence == KNOWN
    assert settings.log_level == "INFO"
    assert settings.parallel_workers == 8  # good values next to bad ones still apply
    refused = {r.setting_key for r in caplog.records if r.levelno == logging.ERROR}  # type: ignore[attr-defined]
    assert refused == {"batch_size", "check_sequence", "log_level"}
    rules = {r.setting_key: r.rule for r in caplog.records if r.levelno == logging.ERROR}  # type: ignore[attr-defined]
    assert "unknown check(s): nonsense" in rules["check_sequence"]

    # The same bad value is not logged again on every reload.
    caplog.clear()
    async with db.transaction(owner_pool) as connection:
        await store.reload(connection)
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]


async def test_keep_fresh_applies_a_change_within_its_interval(owner_pool: asyncpg.Pool) -> None:
    store = SettingsStore(known_checks=KNOWN)
    task = asyncio.create_task(keep_fresh(owner_pool, store, interval=0.05))
    try:
        async with db.transaction(owner_pool) as connection:
            await connection.execute(
                "UPDATE system_settings SET setting_value = '77' WHERE setting_key = 'batch_size'"
            )
        for _ in range(100):
            if store.current.batch_size == 77:
                break
            await asyncio.sleep(0.02)
        assert store.current.batch_size == 77
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
