"""Least privilege (SPEC §2), checked through pgbouncer as each service connects: each refused
statement is run as the role it is refused to, and each role's privileges are read from the
catalog and compared with the exact list it needs."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import pytest

import checks
from sms_gateway import db
from sms_gateway.bootstrap import OWNER, ROLES, SERVICE_ROLE_NAMES
from tests.conftest import FreshDatabase, Infra, bootstrapped_roles


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
# A requeue (SPEC §7) resets the status and every registered check's result column.
REQUEUE_COLUMNS = ("overall_status", "failed_at_check", *checks.result_columns())
# What the receiver may write: the content of an SMS; the database assigns uuid and created_at.
CONTENT_COLUMNS = (
    "sender_number",
    "sms_message",
    "received_timestamp",
    "source",
    "client_event_id",
)
LEAST_PRIVILEGES: dict[str, set[tuple[str, str | None, str]]] = {
    # SPEC §2: insert SMS, read back the uuid of a repeated delivery, read the settings.
    "sms_receiver": {
        *{("input_sms", column, "INSERT") for column in CONTENT_COLUMNS},
        ("input_sms", "uuid", "SELECT"),
        ("input_sms", "source", "SELECT"),
        ("input_sms", "client_event_id", "SELECT"),
        ("uuid_v7_seq", None, "USAGE"),  # the uuid default's tie-breaker (0001)
        ("system_settings", None, "SELECT"),
    },
    # SPEC §7: read everything it shows; write settings with their audit, remove blacklist
    # entries and their counts, requeue (only the columns a requeue resets). Never out_sms.
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
                "sms_time_partitions",
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


# ------------------------------------------------------------------ SPEC §2, row by row


@pytest.mark.parametrize(
    ("column", "value"),
    [("uuid", "'00000000-0000-7000-8000-000000000001'"), ("created_at", "now()")],
)
async def test_receiver_cannot_choose_uuid_or_arrival_time(
    database: FreshDatabase, column: str, value: str
) -> None:
    """A uuid chosen below the checkpoint would never be judged: only the database assigns it."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await run_as(
            database,
            "sms_receiver",
            f"INSERT INTO input_sms (sender_number, sms_message, received_timestamp, {column}) "
            f"VALUES ('447700900123', 'hi', now(), {value})",
        )


async def test_receiver_stores_through_the_function_that_assigns_the_keys(
    database: FreshDatabase,
) -> None:
    rows = await run_as(
        database,
        "sms_receiver",
        "SELECT item_position, sms_uuid FROM store_input_sms("
        "ARRAY['447700900123', '447700900124'], ARRAY['a', 'b'], ARRAY[now(), now()], "
        "ARRAY['api', 'api'], ARRAY['k1', 'k1'])",
    )
    assert isinstance(rows, list)
    assert [row["item_position"] for row in rows] == [1, 2]
    assert rows[0]["sms_uuid"] is not None
    assert rows[1]["sms_uuid"] is None  # the same delivery key: stored once


async def setting(database: FreshDatabase, key: str) -> str:
    connection = await asyncpg.connect(database.direct_url())
    try:
        value: str = await connection.fetchval(
            "SELECT setting_value FROM system_settings WHERE setting_key = $1", key
        )
    finally:
        await connection.close()
    return value


UPDATE_SETTING = (
    "UPDATE system_settings SET setting_value = $2, updated_at = now() WHERE setting_key = $1 "
    "RETURNING setting_key"
)
CHECKPOINT = "last_processed_uuid"
MOVED = "00000000-0000-7000-8000-000000000001"


async def test_validator_writes_its_checkpoint_and_no_other_setting(
    database: FreshDatabase,
) -> None:
    assert await run_as(database, "sms_validator", UPDATE_SETTING, CHECKPOINT, MOVED)
    assert await setting(database, CHECKPOINT) == MOVED
    # Row-level security hides every other row from its UPDATE: nothing changes.
    assert await run_as(database, "sms_validator", UPDATE_SETTING, "batch_size", "7") == []
    assert await run_as(database, "sms_validator", UPDATE_SETTING, "maintenance_mode", "true") == []
    assert await setting(database, "batch_size") == "20"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await run_as(
            database,
            "sms_validator",
            "UPDATE system_settings SET setting_key = 'batch_size' WHERE setting_key = $1",
            CHECKPOINT,
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await run_as(
            database,
            "sms_validator",
            "INSERT INTO system_settings (setting_key, setting_value) VALUES ('x', 'y')",
        )


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM out_sms",
        "UPDATE input_sms SET sms_message = 'x'",
        "DELETE FROM input_sms",
        "INSERT INTO settings_audit (setting_key, old_value, new_value, changed_by) "
        "VALUES ('batch_size', '1', '2', 'validator')",
        "DELETE FROM system_settings",
        "CREATE TABLE intruder (id int)",
    ],
)
async def test_validator_may_do_nothing_else(database: FreshDatabase, query: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await run_as(database, "sms_validator", query)


async def test_admin_writes_settings_but_never_moves_the_checkpoint(
    database: FreshDatabase,
) -> None:
    assert await run_as(database, "sms_admin", UPDATE_SETTING, "batch_size", "7")
    assert await run_as(database, "sms_admin", UPDATE_SETTING, CHECKPOINT, MOVED) == []
    assert await setting(database, CHECKPOINT) == "00000000-0000-0000-0000-000000000000"
    for query in (
        "INSERT INTO system_settings (setting_key, setting_value) "
        f"VALUES ('{CHECKPOINT}', '{MOVED}') ON CONFLICT (setting_key) DO NOTHING",
        f"UPDATE system_settings SET setting_key = '{CHECKPOINT}' WHERE setting_key = 'batch_size'",
        "DELETE FROM system_settings",
        # The partitions' checkpoints (0008) are the validator's alone.
        f"UPDATE validator_partitions SET checkpoint = '{MOVED}'",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_as(database, "sms_admin", query)


@pytest.mark.parametrize(
    "query",
    [
        "CREATE ROLE intruder LOGIN",
        "GRANT pg_execute_server_program TO sms_owner",
        "ALTER ROLE sms_receiver PASSWORD 'chosen'",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "COPY (SELECT 1) TO '/tmp/sms_owner_intruder'",
    ],
)
async def test_the_schema_owner_administers_no_role_and_reaches_no_program_or_file(
    database: FreshDatabase, infra: Infra, query: str
) -> None:
    await bootstrapped_roles(infra.stack)  # the attributes the bootstrap gives (no CREATEROLE)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await run_as(database, "sms_owner", query)


async def test_no_gateway_role_holds_a_cluster_wide_power(infra: Infra) -> None:
    await bootstrapped_roles(infra.stack)
    connection = await asyncpg.connect(infra.stack.pg_admin_url)
    try:
        rows = await connection.fetch(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname = ANY($1::text[])",
            [role.name for role in ROLES],
        )
        memberships = await connection.fetch(
            "SELECT m.member::regrole::text AS member, m.roleid::regrole::text AS role "
            "FROM pg_auth_members m WHERE m.member::regrole::text = ANY($1::text[])",
            [role.name for role in ROLES],
        )
    finally:
        await connection.close()
    assert {row["rolname"] for row in rows} == {role.name for role in ROLES}
    for row in rows:
        assert row["rolcanlogin"]
        assert not any(row[a] for a in list(row.keys())[2:]), dict(row)
    # The validator reads other sessions' xact_start for its settle horizon; nothing else.
    assert {(row["member"], row["role"]) for row in memberships} == {
        ("sms_validator", "pg_read_all_stats")
    }


@pytest.mark.parametrize("role", [OWNER.name, *SERVICE_ROLE_NAMES])
async def test_gateway_roles_cannot_connect_to_the_clusters_postgres_database(
    infra: Infra, role: str
) -> None:
    await bootstrapped_roles(infra.stack)
    cluster = urlsplit(infra.stack.pg_admin_url)
    password = infra.stack.owner_password if role == OWNER.name else infra.stack.role_password
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # "permission denied for database"
        await asyncpg.connect(
            host=cluster.hostname,
            port=cluster.port or 5432,
            user=role,
            password=password,
            database="postgres",
        )
