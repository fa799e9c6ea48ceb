"""Least privilege (SPEC §2), checked through pgbouncer as each service connects."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from sms_gateway import db
from tests.conftest import FreshDatabase


async def run_as(database: FreshDatabase, role: str, query: str, *args: object) -> object:
    async with database.pool(role, max_size=1) as pool, db.transaction(pool) as connection:
        return await connection.fetch(query, *args)


async def test_receiver_may_insert_and_read_back_the_delivery_key(database: FreshDatabase) -> None:
    rows = await run_as(
        database,
        "sms_receiver",
        "INSERT INTO input_sms (sender_number, sms_message, received_timestamp, source, "
        "client_event_id) VALUES ('447700900123', 'hi', $1, 'api', 'k1') RETURNING uuid",
        datetime.now(UTC),
    )
    assert isinstance(rows, list)
    assert len(rows) == 1
    again = await run_as(
        database,
        "sms_receiver",
        "SELECT uuid FROM input_sms WHERE source = 'api' AND client_event_id = 'k1'",
    )
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


# Every privilege a role holds on the schema's tables and sequences, table-wide (column None) or
# on one column: what the catalog says, so that no migration can widen a role unnoticed.
PRIVILEGES = """
SELECT c.relname, NULL AS column_name, a.privilege_type
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = $1::regrole
UNION ALL
SELECT c.relname, att.attname, a.privilege_type
FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid
CROSS JOIN LATERAL aclexplode(att.attacl) a
WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = $1::regrole
"""
REQUEUE_COLUMNS = (
    "overall_status",
    "failed_at_check",
    "blacklist_check",
    "duplicate_check",
    "header_check",
    "hash_length_check",
    "mobile_check",
    "time_window_check",
)
LEAST_PRIVILEGES: dict[str, set[tuple[str, str | None, str]]] = {
    # SPEC §2: insert SMS, read back the uuid of a repeated delivery, read the settings.
    "sms_receiver": {
        ("input_sms", None, "INSERT"),
        ("input_sms", "uuid", "SELECT"),
        ("input_sms", "source", "SELECT"),
        ("input_sms", "client_event_id", "SELECT"),
        ("uuid_v7_seq", None, "USAGE"),  # the uuid default's tie-breaker (0001)
        ("system_settings", None, "SELECT"),
    },
    # SPEC §7: read everything it shows; write settings with their audit, remove blacklist
    # entries and their counts, requeue (only the columns contracts §6 resets). Never out_sms.
    "sms_admin": {
        *{
            (table, None, "SELECT")
            for table in (
                "input_sms",
                "sms_monitor",
                "out_sms",
                "blacklist_sms",
                "count_sms",
                "system_settings",
                "settings_audit",
                "sms_status_counts",
                "validator_partitions",
                "validator_workers",
                "forwarded_senders",
            )
        },
        ("system_settings", None, "INSERT"),
        ("system_settings", None, "UPDATE"),
        ("settings_audit", None, "INSERT"),
        ("blacklist_sms", None, "DELETE"),
        ("count_sms", None, "DELETE"),
        *{("sms_monitor", column, "UPDATE") for column in REQUEUE_COLUMNS},
    },
}


@pytest.mark.parametrize("role", sorted(LEAST_PRIVILEGES))
async def test_a_service_role_holds_exactly_what_it_needs(
    database: FreshDatabase, role: str
) -> None:
    connection = await asyncpg.connect(database.direct_url())
    try:
        rows = await connection.fetch(PRIVILEGES, role)
    finally:
        await connection.close()
    held = {(row["relname"], row["column_name"], row["privilege_type"]) for row in rows}
    assert held == LEAST_PRIVILEGES[role]


async def test_only_the_owner_changes_the_schema(database: FreshDatabase) -> None:
    for role in ("sms_receiver", "sms_validator", "sms_admin"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_as(database, role, "ALTER TABLE input_sms ADD COLUMN intruder int")
