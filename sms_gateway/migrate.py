"""`sms-migrate`: apply the numbered SQL files of `db/init/` that the database has not seen.

Each file runs in its own transaction under a transaction-scoped advisory lock (so two
migrators never interleave, and it works through pgbouncer too) and records itself in
`schema_migrations`. A second run applies nothing. The files are also plain SQL that psql can
run as container init scripts: each is safe to apply twice on its own.

A file may be cut into steps by lines that read exactly `-- migrate:step`: each step is its own
transaction, so that a long scan (validating a constraint on a big table) does not run under the
exclusive lock that a later step takes. Every step is safe to run again, and the last one records
the file, so a migrator stopped between steps resumes where it was on its next run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from sms_gateway.errors import MigrationError
from sms_gateway.logging import configure_logging

logger = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[1] / "db" / "init"
# An arbitrary constant shared by every migrator: "the schema is being changed".
_MIGRATION_LOCK: Final = 0x5D5_6A7E
_STEP_MARK: Final = "-- migrate:step"


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # the file name without .sql, e.g. "0001_core_tables"
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def steps(self) -> list[str]:
        """The file's transactions, in order (one unless it has `-- migrate:step` lines)."""
        steps: list[list[str]] = [[]]
        for line in self.sql.splitlines(keepends=True):
            if line.strip() == _STEP_MARK:
                steps.append([])
            else:
                steps[-1].append(line)
        # A part with nothing but comments (the file's header) belongs to the next step.
        merged: list[str] = []
        pending = ""
        for lines in steps:
            text = pending + "".join(lines)
            if any(line.strip() and not line.lstrip().startswith("--") for line in lines):
                merged.append(text)
                pending = ""
            else:
                pending = text
        if pending.strip() and merged:
            merged[-1] += pending
        return merged or [self.sql]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = [Migration(path.stem, path) for path in sorted(directory.glob("[0-9]*.sql"))]
    if not migrations:
        # An installed package has no db/init beside it: say so rather than "up to date".
        raise MigrationError(f"no migrations in {directory}: give --dir or SMSGW_MIGRATIONS_DIR")
    numbers = [m.version.split("_", 1)[0] for m in migrations]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"two migrations share a number in {directory}")
    return migrations


async def applied_versions(connection: asyncpg.Connection) -> set[str]:
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    rows = await connection.fetch("SELECT version FROM schema_migrations")
    return {row["version"] for row in rows}


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; return the versions applied now, in order."""
    applied_now: list[str] = []
    connection = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        for migration in discover(directory):
            if await _apply(connection, migration):
                logger.info("migration applied", extra={"version": migration.version})
                applied_now.append(migration.version)
    finally:
        await connection.close()
    return applied_now


async def _apply(connection: asyncpg.Connection, migration: Migration) -> bool:
    """Run the file's steps, each in a transaction; False when it was applied already."""
    steps = migration.steps
    for number, step in enumerate(steps, start=1):
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if migration.version in await applied_versions(connection):
                return False
            try:
                await connection.execute(step)
            except asyncpg.PostgresError as exc:
                where = f" (step {number} of {len(steps)})" if len(steps) > 1 else ""
                raise MigrationError(f"{migration.path.name}{where}: {exc}") from exc
            if number == len(steps) and migration.version not in await applied_versions(connection):
                raise MigrationError(
                    f"{migration.path.name} does not record itself in schema_migrations"
                )
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sms-migrate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("SMSGW_MIGRATE_DATABASE_URL"),
        help="URL of the role that owns the schema (default: $SMSGW_MIGRATE_DATABASE_URL)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("SMSGW_MIGRATIONS_DIR") or MIGRATIONS_DIR),
        help="the numbered SQL files (default: $SMSGW_MIGRATIONS_DIR, else db/init of the source)",
    )
    args = parser.parse_args(argv)
    configure_logging("sms-migrate", fmt="text")
    if not args.dsn:
        parser.error("no database: give --dsn or set SMSGW_MIGRATE_DATABASE_URL")
    try:
        applied = asyncio.run(migrate(args.dsn, args.dir))
    except (MigrationError, OSError, asyncpg.PostgresError) as exc:
        logger.error("migration failed: %s", exc)  # noqa: TRY400 - the message is the diagnosis
        return 1
    logger.info("schema up to date", extra={"applied_now": applied})
    return 0


if __name__ == "__main__":
    sys.exit(main())
