"""Migrations: they apply to an empty database, a second run changes nothing, and the result is
exactly the schema that docs/schema.md documents."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from checks import DEFAULT_SETTINGS
from sms_gateway.errors import MigrationError
from sms_gateway.migrate import discover, migrate
from sms_gateway.settings import SETTING_KEYS, encode_setting
from tests.conftest import FreshDatabase

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"

COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attnotnull THEN 'no' ELSE 'yes' END,
       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped
"""
# The time partitions (0013) are named by day and come and go; their parents are the schema.
INDEXES = """
SELECT x.tablename, x.indexname, x.indexdef
FROM pg_indexes x
JOIN pg_class c ON c.relname = x.tablename AND c.relnamespace = 'public'::regnamespace
WHERE x.schemaname = 'public' AND NOT c.relispartition
"""


def documented_schema() -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    columns: set[tuple[str, ...]] = set()
    indexes: set[tuple[str, ...]] = set()
    table = None
    for line in SCHEMA_DOC.read_text().splitlines():
        heading = re.match(r"^## (\w+)$", line)
        if heading:
            table = heading.group(1)
            continue
        if not line.startswith("| ") or line.startswith(("| column", "| table")):
            continue
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        if table == "Indexes":
            indexes.add((cells[0], cells[1], cells[2]))
        elif table is not None:
            columns.add((table, cells[0], cells[1], cells[2], cells[3]))
    return columns, indexes


async def actual_schema(url: str) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    connection = await asyncpg.connect(url)
    try:
        columns = {tuple(str(cell) for cell in row) for row in await connection.fetch(COLUMNS)}
        indexes: set[tuple[str, ...]] = set()
        for table, name, definition in await connection.fetch(INDEXES):
            short = definition.split(" USING ", 1)[1]
            unique = "UNIQUE " if definition.startswith("CREATE UNIQUE") else ""
            indexes.add((table, name, unique + short))
    finally:
        await connection.close()
    return columns, indexes


async def test_migrations_apply_to_an_empty_database_once(empty_database: FreshDatabase) -> None:
    url = empty_database.direct_url()
    applied = await migrate(url)
    assert applied == [m.version for m in discover()]
    assert await migrate(url) == []

    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations")
        recorded = {row["version"] for row in rows}
    finally:
        await connection.close()
    assert recorded == set(applied)


async def test_migrations_applied_twice_as_plain_sql_change_nothing(
    empty_database: FreshDatabase,
) -> None:
    """The files also serve as container init scripts, so each must be idempotent by itself."""
    url = empty_database.direct_url()
    await migrate(url)
    before = await actual_schema(url)
    connection = await asyncpg.connect(url)
    try:
        settings_before = await connection.fetch("SELECT * FROM system_settings ORDER BY 1")
        for migration in discover():
            await connection.execute(migration.sql)
        settings_after = await connection.fetch("SELECT * FROM system_settings ORDER BY 1")
    finally:
        await connection.close()
    assert await actual_schema(url) == before
    assert settings_after == settings_before


async def test_schema_is_the_documented_one(database: FreshDatabase) -> None:
    documented_columns, documented_indexes = documented_schema()
    columns, indexes = await actual_schema(database.direct_url())
    assert columns - documented_columns == set(), "in the database, not in docs/schema.md"
    assert documented_columns - columns == set(), "in docs/schema.md, not in the database"
    assert indexes - documented_indexes == set(), "in the database, not in docs/schema.md"
    assert documented_indexes - indexes == set(), "in docs/schema.md, not in the database"


async def test_initial_settings_are_the_model_defaults(database: FreshDatabase) -> None:
    connection = await asyncpg.connect(database.direct_url())
    try:
        rows = dict(
            await connection.fetch(
                "SELECT setting_key, setting_value FROM system_settings "
                "WHERE setting_key NOT IN ('redis_host', 'redis_port')"
            )
        )
    finally:
        await connection.close()
    expected = {key: encode_setting(key, getattr(DEFAULT_SETTINGS, key)) for key in SETTING_KEYS}
    del expected["redis_host"], expected["redis_port"]  # the test harness points these at its Redis
    assert rows == expected


async def test_a_directory_without_migrations_is_an_error_not_up_to_date(
    empty_database: FreshDatabase, tmp_path: Path
) -> None:
    with pytest.raises(MigrationError, match="no migrations in"):
        await migrate(empty_database.direct_url(), tmp_path)
