"""Least privilege (SPEC §2), checked through pgbouncer as each service connects."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from sms_gateway import db
from tests.conftest import FreshDatabase


async def run_as(database: FreshDatabase, role: str, query: str, *args: object) -> object:
    pool = await db.create_pool(database.url(role), min_size=0, max_size=1)
    try:
        async with db.transaction(pool) as connection:
            return await connection.fetch(query, *args)
    finally:
        await db.close_pool(pool)


async def test_receiver_may_insert_and_read_back_the_delivery_key(database: FreshDatabase) -> None:
    rows = await run_as(
        database, "sms_receiver",
        "INSERT INTO input_sms (sender_number, sms_message, received_timestamp, source, "
        "client_event_id) VALUES ('447700900123', 'hi', $1, 'api', 'k1') RETURNING uuid",
        datetime.now(UTC),
    )
    assert isinstance(rows, list)
    assert len(rows) == 1
    again = await run_as(
        database, "sms_receiver",
        "SELECT uuid FROM input_sms WHERE source = 'api' AND client_event_id = 'k1'")
    assert again == rows
    assert await run_as(database, "sms_receiver", "SELECT count(*) FROM system_settings")


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM out_sms",
        "SELECT sms_message FROM input_sms",
        "SELECT * FROM sms_monitor",
        "SELECT * FROM blacklist_sms",
        "UPDATE system_settings SET setting_value = '1' WHERE setting_key = 'batch_size'",
        "DELETE FROM input_sms",
        "CREATE TABLE intruder (id int)",
    ],
)
async def test_receiver_may_do_nothing_else(database: FreshDatabase, query: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await run_as(database, "sms_receiver", query)


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO out_sms (uuid, sender_number, sms_message) "
        "VALUES ('00000000-0000-0000-0000-000000000001', '1', 'x')",
        "DELETE FROM out_sms",
        "UPDATE out_sms SET sms_message = 'x'",
        "DELETE FROM input_sms",
    ],
)
async def test_admin_may_not_write_out_sms_or_input(database: FreshDatabase, query: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await run_as(database, "sms_admin", query)


async def test_only_the_owner_changes_the_schema(database: FreshDatabase) -> None:
    for role in ("sms_receiver", "sms_validator", "sms_admin"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_as(database, role, "ALTER TABLE input_sms ADD COLUMN intruder int")
