"""Settings through the admin API (SPEC §3, §7): typed validation by the shared model, audit in
the same transaction, nothing changed and nothing audited on a refusal."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import httpx
import pytest

from checks import DEFAULT_SETTINGS
from sms_gateway.settings import (
    SETTING_KEYS,
    encode_setting,
    is_read_only,
    setting_rule,
    to_json,
    validate_setting,
)
from tests.admin.conftest import Operators, audit_rows, stored_settings

# For every writable key, a value its rule accepts (different from the default) and one it
# refuses. The rules themselves are sms_gateway.settings's; these are only examples.
EXAMPLES: dict[str, tuple[Any, Any]] = {
    "batch_size": (500, 0),
    "blacklist_threshold": (3, 0),
    "check_sequence": (["header", "blacklist"], ["header", "header"]),
    "check_enabled": ({"mobile": False}, {"spam": True}),
    "validation_time_window": (0, -1),
    "out_sms_cache_ttl": (60, 59),
    "max_database_retries": (10, 11),
    "log_level": ("WARNING", "LOUD"),
    "parallel_workers": (4, 65),
    "maintenance_mode": (True, "yes"),
    "pgbouncer_pool_size": (20, 1001),
    "redis_host": ("redis.internal", "two words"),
    "redis_port": (6390, 70_000),
    "message_separator": ("|", "||||"),
    "header_pattern": ("^[A-Z]{2,5}$", "[A-Z"),
    "header_allowed": (["ACME", "BANK"], [1, 2]),
    "hash_length": (32, 257),
    "hash_encoding": ("base32", "base58"),
    "mobile_encoding": ("aes-gcm", "rot13"),
    "mobile_regions": (["GB", "FR"], ["ZZ"]),
    "mobile_match_sender": (False, 1),
    "time_window_reference": ("processing", "later"),
    "time_window_max_skew": (0, -5),
    "max_message_length": (65_536, 65_537),
    "retention_days": (0, 3651),
}
WRITABLE = sorted(key for key in SETTING_KEYS if not is_read_only(key))


def test_every_writable_key_has_examples() -> None:
    assert sorted(EXAMPLES) == WRITABLE


@pytest.mark.parametrize("key", WRITABLE)
async def test_a_good_value_is_stored_and_audited(
    key: str, authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    good, _ = EXAMPLES[key]
    before = (await stored_settings(owner_pool))[key]

    response = await authed.put(f"/settings/{key}", json={"value": good})

    assert response.status_code == 200, response.text
    body = response.json()
    typed = validate_setting(key, good)
    assert body["changed"] is True
    assert body["changed_by"] == "operator"
    assert body["setting"]["value"] == to_json(key, typed)
    assert (await stored_settings(owner_pool))[key] == encode_setting(key, typed)
    [audit] = await audit_rows(owner_pool)
    assert (audit["setting_key"], audit["old_value"], audit["new_value"], audit["changed_by"]) == (
        key,
        before,
        encode_setting(key, typed),
        "operator",
    )
    read_back = await authed.get(f"/settings/{key}")
    assert read_back.json()["value"] == to_json(key, typed)
    assert read_back.json()["updated_at"] is not None


@pytest.mark.parametrize("key", WRITABLE)
async def test_a_bad_value_is_refused_naming_key_and_rule(
    key: str, authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    _, bad = EXAMPLES[key]
    before = await stored_settings(owner_pool)

    response = await authed.put(f"/settings/{key}", json={"value": bad})

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["key"] == key
    assert setting_rule(key) in body["rule"]
    assert body["detail"].startswith(f"{key}: must be {setting_rule(key)}")
    assert await stored_settings(owner_pool) == before
    assert await audit_rows(owner_pool) == []


async def test_check_names_are_checked_against_the_known_checks(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    for key, value in (
        ("check_sequence", ["blacklist", "spam"]),
        ("check_enabled", {"blacklist": True, "spam": False}),
    ):
        response = await authed.put(f"/settings/{key}", json={"value": value})
        assert response.status_code == 422
        assert "unknown check(s): spam" in response.json()["rule"]
    assert await audit_rows(owner_pool) == []


async def test_the_checkpoint_is_read_only(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    before = await stored_settings(owner_pool)
    response = await authed.put(
        "/settings/last_processed_uuid", json={"value": "01946b8e-7f3a-7c2e-8000-0001a2b3c4d5"}
    )
    assert response.status_code == 422
    assert response.json()["key"] == "last_processed_uuid"
    assert "read-only" in response.json()["rule"]
    assert await stored_settings(owner_pool) == before
    assert await audit_rows(owner_pool) == []
    listed = {s["key"]: s for s in (await authed.get("/settings")).json()}
    assert listed["last_processed_uuid"]["read_only"] is True


async def test_unknown_keys_and_malformed_bodies(authed: httpx.AsyncClient) -> None:
    assert (await authed.get("/settings/no_such_key")).status_code == 404
    response = await authed.put("/settings/no_such_key", json={"value": 1})
    assert response.status_code == 404
    assert response.json()["key"] == "no_such_key"
    assert (await authed.put("/settings/batch_size", json={"val": 1})).status_code == 422
    assert (await authed.put("/settings/batch_size", content=b"{")).status_code == 422


async def test_huge_and_non_finite_values_are_refused(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    """JSON numbers have no size limit; a setting does (the validator must be able to use it)."""
    before = await stored_settings(owner_pool)
    bodies = [
        b'{"value": 100000000000000000000000000000}',
        b'{"value": 1e400}',
        b'{"value": -1e400}',
        b'{"value": 3.5}',
    ]
    for key in ("validation_time_window", "blacklist_threshold", "out_sms_cache_ttl"):
        for body in bodies:
            response = await authed.put(
                f"/settings/{key}", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 422, (key, body, response.text)
            assert response.json()["key"] == key
            assert setting_rule(key) in response.json()["rule"]
    assert await stored_settings(owner_pool) == before
    assert await audit_rows(owner_pool) == []


async def test_the_list_shows_every_key_with_its_rule(authed: httpx.AsyncClient) -> None:
    response = await authed.get("/settings")
    assert response.status_code == 200
    listed = response.json()
    assert [s["key"] for s in listed] == list(SETTING_KEYS)
    for setting in listed:
        key = setting["key"]
        assert setting["rule"] == setting_rule(key)
        assert setting["meaning"]
        assert setting["default"] == to_json(key, getattr(DEFAULT_SETTINGS, key))
        assert setting["invalid"] is None
    by_key = {s["key"]: s for s in listed}
    assert by_key["redis_host"]["value"] == "127.0.0.1"  # what the test harness stored


async def test_a_value_written_badly_by_hand_is_shown_as_such(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE system_settings SET setting_value = 'fifty' WHERE setting_key = 'batch_size'"
        )
    shown = (await authed.get("/settings/batch_size")).json()
    assert shown["value"] == "fifty"
    assert setting_rule("batch_size") in shown["invalid"]
    # ... and an operator can repair it through the API.
    assert (await authed.put("/settings/batch_size", json={"value": 20})).status_code == 200
    [audit] = await audit_rows(owner_pool)
    assert (audit["old_value"], audit["new_value"]) == ("fifty", "20")


async def test_a_change_whose_audit_row_fails_is_not_made(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    """The audit row is written in the change's own transaction: no audit, no change."""
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute("REVOKE INSERT ON settings_audit FROM sms_admin")
    before = await stored_settings(owner_pool)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await authed.put("/settings/batch_size", json={"value": 500})
    assert await stored_settings(owner_pool) == before
    assert await audit_rows(owner_pool) == []


async def test_an_unchanged_value_is_not_audited(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    response = await authed.put("/settings/batch_size", json={"value": 20})
    assert response.status_code == 200
    assert response.json()["changed"] is False
    assert await audit_rows(owner_pool) == []


async def test_a_key_missing_from_the_table_gets_its_row(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute("DELETE FROM system_settings WHERE setting_key = 'hash_length'")
    shown = (await authed.get("/settings/hash_length")).json()
    assert (shown["value"], shown["updated_at"]) == (16, None)
    assert (await authed.put("/settings/hash_length", json={"value": 8})).status_code == 200
    assert (await stored_settings(owner_pool))["hash_length"] == "8"
    [audit] = await audit_rows(owner_pool)
    assert (audit["old_value"], audit["new_value"]) == (None, "8")


async def test_the_audit_records_each_token_name(
    admin: httpx.AsyncClient, operators: Operators, owner_pool: asyncpg.Pool
) -> None:
    """Two tokens live at once (rotation): each works, and each change names its own."""
    first = await admin.put(
        "/settings/batch_size", json={"value": 30}, headers=operators.header("operator")
    )
    second = await admin.put(
        "/settings/batch_size", json={"value": 40}, headers=operators.header("rotated")
    )
    assert (first.status_code, second.status_code) == (200, 200)
    audits = await audit_rows(owner_pool)
    assert [(a["old_value"], a["new_value"], a["changed_by"]) for a in audits] == [
        ("20", "30", "operator"),
        ("30", "40", "rotated"),
    ]


async def test_the_audit_pages_newest_first_and_filters_by_key(
    authed: httpx.AsyncClient,
) -> None:
    for value in range(21, 26):
        await authed.put("/settings/batch_size", json={"value": value})
    await authed.put("/settings/log_level", json={"value": "ERROR"})

    page = (await authed.get("/settings/audit", params={"limit": 2})).json()
    assert [(e["key"], e["new_value"]) for e in page["entries"]] == [
        ("log_level", "ERROR"),
        ("batch_size", "25"),
    ]
    seen: list[str] = []
    before_id = None
    while True:
        params: dict[str, Any] = {"key": "batch_size", "limit": 2}
        if before_id is not None:
            params["before_id"] = before_id
        page = (await authed.get("/settings/audit", params=params)).json()
        seen += [e["new_value"] for e in page["entries"]]
        before_id = page["next_before_id"]
        if before_id is None:
            break
    assert seen == ["25", "24", "23", "22", "21"]
    assert (await authed.get("/settings/audit", params={"limit": 0})).status_code == 422


async def test_concurrent_changes_lose_no_audit_row_and_record_true_old_values(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    values = list(range(100, 130))
    responses = await asyncio.gather(
        *(authed.put("/settings/batch_size", json={"value": v}) for v in values)
    )
    assert all(r.status_code == 200 for r in responses)

    audits = await audit_rows(owner_pool)
    assert sorted(int(a["new_value"]) for a in audits) == values
    # The changes form one chain: each replaced exactly the value the previous one wrote.
    assert audits[0]["old_value"] == "20"
    for previous, current in itertools.pairwise(audits):
        assert current["old_value"] == previous["new_value"]
    assert (await stored_settings(owner_pool))["batch_size"] == audits[-1]["new_value"]
