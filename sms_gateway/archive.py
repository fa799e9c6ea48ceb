"""The archive of time partitions: one day of input_sms, sms_monitor and out_sms written to
compressed files before retention drops it, and `sms-archive`, which checks an archive and loads
it back into a database for an investigation (docs/operations.md, "Restoring from an archive").

An archived partition is a directory `<archive dir>/<partition>/` holding, per table,
`<table>.csv.gz` (CSV with a header line, rows in uuid order) and `manifest.json`: the
partition's uuid range and, per table, its file, row count, columns with their types, and the
SHA-256 of the compressed file (what `sha256sum` checks). The directory is written as
`.<partition>.partial` and renamed when complete and synced, so a directory with the partition's
name is always whole; the drop waits for it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final
from uuid import UUID

import asyncpg

from sms_gateway import db
from sms_gateway.errors import GatewayError
from sms_gateway.logging import configure_logging

logger = logging.getLogger(__name__)

TABLES: Final = ("input_sms", "sms_monitor", "out_sms")
MANIFEST: Final = "manifest.json"
FORMAT_VERSION: Final = 1
CHUNK_BYTES: Final = 1 << 20
COMPRESS_LEVEL: Final = 6

COLUMNS: Final = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class ArchiveError(GatewayError):
    """An archive could not be written, or is not what its manifest says."""


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """A time partition: its name (the tables' suffix) and its uuid range."""

    name: str
    lower_uuid: UUID
    upper_uuid: UUID


@dataclass(frozen=True, slots=True)
class TableFile:
    table: str
    file: str
    rows: int
    sha256: str
    columns: list[tuple[str, str]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _copied_rows(status: str) -> int:
    # asyncpg answers the command tag: "COPY 1234".
    return int(status.rsplit(maxsplit=1)[-1])


async def write_partition(
    pool: asyncpg.Pool,
    archive_dir: Path,
    partition: PartitionRange,
    *,
    expected_sms: int,
    scan_seconds: float,
) -> Path:
    """Write one time partition of the three tables under `archive_dir`; its directory.

    The rows are read through the parents with the partition's uuid range (the validator's role
    may read the tables, not change them). Every SMS of a partition that is archived is judged
    and its day is past, so its rows no longer change while they are read.
    """
    target = archive_dir / partition.name
    if (target / MANIFEST).exists():
        return target  # archived already (an earlier round's drop gave way)
    partial = archive_dir / f".{partition.name}.partial"
    await asyncio.to_thread(shutil.rmtree, partial, True)
    await asyncio.to_thread(partial.mkdir, parents=True)
    files: list[TableFile] = []
    async with db.transaction(pool, readonly=True, isolation="repeatable_read") as connection:
        for table in TABLES:
            files.append(await _write_table(connection, partial, table, partition, scan_seconds))
    by_table = {f.table: f for f in files}
    if by_table["input_sms"].rows != expected_sms:
        raise ArchiveError(
            f"{partition.name}: input_sms has {by_table['input_sms'].rows} rows, the examination "
            f"counted {expected_sms}"
        )
    manifest = {
        "format": FORMAT_VERSION,
        "partition": partition.name,
        "lower_uuid": str(partition.lower_uuid),
        "upper_uuid": str(partition.upper_uuid),
        "written_at": datetime.now(UTC).isoformat(),
        "tables": {
            f.table: {
                "file": f.file,
                "rows": f.rows,
                "sha256": f.sha256,
                "columns": [{"name": n, "type": t} for n, t in f.columns],
            }
            for f in files
        },
    }
    await asyncio.to_thread(_finish, partial, target, manifest)
    logger.info(
        "time partition archived",
        extra={"partition": partition.name, "rows": {f.table: f.rows for f in files}},
    )
    return target


async def _write_table(
    connection: asyncpg.Connection,
    directory: Path,
    table: str,
    partition: PartitionRange,
    scan_seconds: float,
) -> TableFile:
    columns = [(r["attname"], r["type"]) for r in await connection.fetch(COLUMNS, table)]
    name = f"{table}.csv.gz"
    path = directory / name
    # Level 6, gzip's own default: Python's level 9 took 3.7 times as long for a 1 % smaller
    # archive (docs/benchmarks.md, "The archive").
    handle: IO[bytes] = await asyncio.to_thread(
        gzip.open,  # type: ignore[arg-type]
        path,
        "wb",
        COMPRESS_LEVEL,
    )
    try:

        async def write(chunk: bytes) -> None:
            await asyncio.to_thread(handle.write, chunk)

        # Only a table name of TABLES is formatted in; the bounds are parameters.
        status = await connection.copy_from_query(
            f"SELECT * FROM {table} WHERE uuid >= $1 AND uuid < $2 ORDER BY uuid",  # noqa: S608
            partition.lower_uuid,
            partition.upper_uuid,
            output=write,
            format="csv",
            header=True,
            timeout=scan_seconds,
        )
    finally:
        await asyncio.to_thread(handle.close)
    await asyncio.to_thread(_fsync, path)
    digest = await asyncio.to_thread(_sha256, path)
    return TableFile(table, name, _copied_rows(status), digest, columns)


def _finish(partial: Path, target: Path, manifest: dict[str, Any]) -> None:
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _fsync(partial / MANIFEST)
    _fsync(partial)
    partial.rename(target)
    _fsync(target.parent)


# ------------------------------------------------------------------ reading an archive


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of an archived partition, with every file checked against it."""
    path = directory / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchiveError(f"{directory} is not an archived partition: no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ArchiveError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    for table in TABLES:
        entry = manifest.get("tables", {}).get(table)
        if entry is None:
            raise ArchiveError(f"{path} names no file for {table}")
        file = directory / entry["file"]
        if not file.is_file():
            raise ArchiveError(f"{file} is missing")
        if _sha256(file) != entry["sha256"]:
            raise ArchiveError(f"{file} does not match its SHA-256 in {MANIFEST}")
    return manifest


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(gzip.open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def load_partition(dsn: str, directory: Path, schema: str) -> dict[str, int]:
    """Load an archived partition into `schema` (made if missing) of the database at `dsn`, one
    table per archived table with the archived columns and types; rows loaded per table. All or
    nothing: one transaction, and the row counts must equal the manifest's."""
    manifest = await asyncio.to_thread(read_manifest, directory)
    loaded: dict[str, int] = {}
    connection = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        async with connection.transaction():
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_identifier(schema)}")
            for table in TABLES:
                entry = manifest["tables"][table]
                columns = ", ".join(
                    f"{_identifier(c['name'])} {c['type']}" for c in entry["columns"]
                )
                qualified = f"{_identifier(schema)}.{_identifier(table)}"
                await connection.execute(f"CREATE TABLE {qualified} ({columns})")
                status = await connection.copy_to_table(
                    table,
                    schema_name=schema,
                    source=_file_chunks(directory / entry["file"]),
                    format="csv",
                    header=True,
                )
                rows = _copied_rows(status)
                if rows != entry["rows"]:
                    raise ArchiveError(
                        f"{table}: loaded {rows} rows, the manifest says {entry['rows']}"
                    )
                await connection.execute(f"ALTER TABLE {qualified} ADD PRIMARY KEY (uuid)")
                loaded[table] = rows
    finally:
        await connection.close()
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sms-archive", description="Check an archived time partition or load it back."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check the files against the manifest")
    verify.add_argument("directory", type=Path, help="<archive dir>/<partition>")
    load = commands.add_parser("load", help="load into a schema of a database")
    load.add_argument("directory", type=Path, help="<archive dir>/<partition>")
    load.add_argument(
        "--dsn",
        default=os.environ.get("SMSGW_MIGRATE_DATABASE_URL"),
        help="a role that may create a schema (default: $SMSGW_MIGRATE_DATABASE_URL)",
    )
    load.add_argument(
        "--schema",
        help="schema to load into (default: archive_<partition>); must not hold the tables already",
    )
    args = parser.parse_args(argv)
    configure_logging("sms-archive", fmt="text")
    try:
        if args.command == "verify":
            manifest = read_manifest(args.directory)
            rows = {t: manifest["tables"][t]["rows"] for t in TABLES}
            logger.info("archive intact", extra={"partition": manifest["partition"], "rows": rows})
            return 0
        if not args.dsn:
            parser.error("no database: give --dsn or set SMSGW_MIGRATE_DATABASE_URL")
        schema = args.schema or f"archive_{args.directory.resolve().name}"
        loaded = asyncio.run(load_partition(args.dsn, args.directory, schema))
    except (ArchiveError, OSError, asyncpg.PostgresError) as exc:
        logger.error("archive: %s", exc)  # noqa: TRY400 - the message is the diagnosis
        return 1
    logger.info("archive loaded", extra={"schema": schema, "rows": loaded})
    return 0


if __name__ == "__main__":
    sys.exit(main())
