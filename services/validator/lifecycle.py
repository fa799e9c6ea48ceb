"""Time partitions of input_sms, sms_monitor and out_sms: made ahead, dropped after the retention
(db/init/0013; docs/architecture.md, "Data lifecycle").

The validator runs this upkeep because every deployment runs the validator, and because it is
the one service that writes results: what decides whether a day may go (every SMS of it judged)
is its own work. The DDL runs in the database functions of 0013, as the schema owner; each takes
a transaction-scoped advisory lock without waiting, so among several validator processes one
does the work at a time and the others find it done. Nothing here holds state between rounds:
the table `sms_time_partitions` is the state.

A round:
1. make the day partitions up to `DAYS_AHEAD` days ahead;
2. with `retention_days` > 0, for each partition whose day ended more than `retention_days`
   ago, oldest first: examine it (a scan of that day under ACCESS SHARE), archive it when an
   archive directory is configured, and drop it if every SMS in it is judged. A partition
   with a pending, processing or error SMS is kept, counted in a gauge and shown by /stats;
3. measure what the metrics and the alert need.

A problem of this upkeep is logged and counted, never raised: the engine must go on judging
SMS while the storage is looked after (an alert says when partitions stop being made ahead).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncpg

from services.validator import metrics
from sms_gateway import archive, db
from sms_gateway.db import TRANSIENT_DB_ERRORS

logger = logging.getLogger(__name__)

DAYS_AHEAD: Final = 7
# How long a drop may wait for the tables' locks; the receiver's inserts queue behind the
# waiting drop for at most this long (docs/benchmarks.md measures the effect on its p99).
LOCK_WAIT_MS: Final = 100
DROP_ATTEMPTS: Final = 5
DROP_PAUSE_SECONDS: Final = 0.5
# A partition kept for unjudged SMS is examined again at most this often (a scan of a day).
REEXAMINE_SECONDS: Final = 600
# Examining or archiving a day at ten million SMS a day takes seconds, not the pool's
# per-statement timeout.
SCAN_TIMEOUT_SECONDS: Final = 3600.0

ENSURE: Final = "SELECT sms_time_partitions_ensure($1)"
DUE: Final = """
SELECT partition_name, lower_uuid, upper_uuid, ends_at, examined_at, unjudged_count,
       sms_count, archived_at,
       examined_at IS NULL
           OR (unjudged_count > 0
               AND examined_at < now() - make_interval(secs => $2::float8)) AS to_examine
FROM sms_time_partitions
WHERE dropped_at IS NULL AND ends_at <= now() - make_interval(days => $1)
ORDER BY ends_at
"""
EXAMINE: Final = "SELECT sms_time_partition_examine($1)"
SMS_COUNT: Final = "SELECT sms_count FROM sms_time_partitions WHERE partition_name = $1"
DROP: Final = "SELECT sms_time_partition_drop($1, $2, $3, $4)"
PURGE: Final = "SELECT sms_time_partition_purge($1)"
# Dropped days whose detached tables are still on disk (the process stopped between the two).
LEFTOVERS: Final = """
SELECT partition_name FROM sms_time_partitions
WHERE dropped_at IS NOT NULL AND to_regclass('public.input_sms_' || partition_name) IS NOT NULL
   OR dropped_at IS NOT NULL AND to_regclass('public.sms_monitor_' || partition_name) IS NOT NULL
   OR dropped_at IS NOT NULL AND to_regclass('public.out_sms_' || partition_name) IS NOT NULL
"""
# What the metrics need: the end of the newest partition, how many are kept past the retention
# for unjudged SMS, and whether rows are landing in the default partition (keys after the
# newest partition: the upkeep stopped for longer than DAYS_AHEAD days).
MEASURE: Final = """
SELECT extract(epoch FROM max(ends_at) - now()) AS ahead_seconds,
       count(*) FILTER (WHERE dropped_at IS NULL) AS kept,
       count(*) FILTER (WHERE dropped_at IS NULL AND unjudged_count > 0
                        AND ends_at <= now() - make_interval(days => $1)) AS blocked,
       (SELECT count(*) FROM (SELECT FROM input_sms
                              WHERE uuid >= (SELECT upper_uuid FROM sms_time_partitions
                                             ORDER BY upper_uuid DESC LIMIT 1)
                              LIMIT 10000) AS overflow) AS default_rows
FROM sms_time_partitions
"""


@dataclass(slots=True)
class UpkeepRound:
    """What one round did (for the logs and the tests)."""

    created: int | None = None  # None: another process held the lifecycle lock
    dropped: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # partition -> unjudged SMS
    lock_timeouts: int = 0


@dataclass(frozen=True, slots=True)
class PartitionKeeper:
    """Runs rounds of upkeep over one pool."""

    pool: asyncpg.Pool
    archive_dir: Path | None = None
    lock_wait_ms: int = LOCK_WAIT_MS
    drop_pause: float = DROP_PAUSE_SECONDS
    reexamine_seconds: float = REEXAMINE_SECONDS

    async def run(self, retention_days: int) -> UpkeepRound:
        """One round; database errors other than transient ones are logged and counted."""
        done = UpkeepRound()
        try:
            await self._ensure(done)
            await self._purge_leftovers()
            if retention_days > 0:
                await self._retire(retention_days, done)
        except TRANSIENT_DB_ERRORS as exc:
            logger.warning("time partition upkeep postponed", extra={"error": type(exc).__name__})
        except (asyncpg.PostgresError, archive.ArchiveError, OSError) as exc:
            metrics.LIFECYCLE_ERRORS.inc()
            logger.error(  # noqa: TRY400 (the message is the diagnosis; no traceback wanted)
                "time partition upkeep failed: %s", exc, extra={"error": type(exc).__name__}
            )
        await _measure(self.pool, retention_days)
        return done

    async def _ensure(self, done: UpkeepRound) -> None:
        done.created = 0
        while True:  # a day per transaction (see sms_time_partitions_ensure)
            async with db.transaction(self.pool) as connection:
                made = await connection.fetchval(ENSURE, DAYS_AHEAD)
            if made is None and done.created == 0:
                done.created = None
            if not made:
                break
            done.created += made
        if done.created:
            metrics.PARTITIONS_CREATED.inc(done.created)
            logger.info("time partitions made", extra={"days": done.created})

    async def _purge_leftovers(self) -> None:
        async with db.transaction(self.pool, readonly=True) as connection:
            names = [row[0] for row in await connection.fetch(LEFTOVERS)]
        for name in names:
            await self._purge(name)

    async def _purge(self, name: str) -> None:
        async with db.transaction(self.pool) as connection:
            await connection.fetchval(PURGE, name)

    async def _retire(self, retention_days: int, done: UpkeepRound) -> None:
        async with db.transaction(self.pool, readonly=True) as connection:
            due = await connection.fetch(DUE, retention_days, self.reexamine_seconds)
        for row in due:
            partition = archive.PartitionRange(
                row["partition_name"], row["lower_uuid"], row["upper_uuid"]
            )
            unjudged, sms_count = row["unjudged_count"], row["sms_count"]
            if row["to_examine"]:
                async with db.transaction(self.pool) as connection:
                    unjudged = await connection.fetchval(
                        EXAMINE, partition.name, timeout=SCAN_TIMEOUT_SECONDS
                    )
                    sms_count = await connection.fetchval(SMS_COUNT, partition.name)
                if unjudged is None:
                    return  # another process is at it
            if unjudged:
                done.kept[partition.name] = unjudged
                logger.warning(
                    "time partition past the retention kept: it has unjudged SMS",
                    extra={"partition": partition.name, "unjudged": unjudged},
                )
                continue
            archived = row["archived_at"] is not None
            if self.archive_dir is not None and not archived:
                await archive.write_partition(
                    self.pool,
                    self.archive_dir,
                    partition,
                    expected_sms=int(sms_count),
                    scan_seconds=SCAN_TIMEOUT_SECONDS,
                )
                archived = True
                done.archived.append(partition.name)
                metrics.PARTITIONS_ARCHIVED.inc()
            if await self._drop(partition.name, retention_days, archived=archived, done=done):
                done.dropped.append(partition.name)

    async def _drop(
        self, name: str, retention_days: int, *, archived: bool, done: UpkeepRound
    ) -> bool:
        for _ in range(DROP_ATTEMPTS):
            started = time.perf_counter()
            try:
                async with db.transaction(self.pool) as connection:
                    dropped = bool(
                        await connection.fetchval(
                            DROP, name, retention_days, self.lock_wait_ms, archived
                        )
                    )
            except asyncpg.LockNotAvailableError:
                # Someone held a table longer than lock_wait_ms: give way and try again.
                done.lock_timeouts += 1
                metrics.DROP_LOCK_TIMEOUTS.inc()
                await asyncio.sleep(self.drop_pause)
                continue
            if dropped:
                seconds = time.perf_counter() - started
                metrics.PARTITIONS_DROPPED.inc()
                metrics.DROP_SECONDS.observe(seconds)
                await self._purge(name)
                logger.info(
                    "time partition dropped",
                    extra={"partition": name, "seconds": round(seconds, 4), "archived": archived},
                )
            return dropped
        logger.warning(
            "time partition not dropped: its tables stayed busy; trying again next round",
            extra={"partition": name},
        )
        return False


async def _measure(pool: asyncpg.Pool, retention_days: int) -> None:
    try:
        async with db.transaction(pool, readonly=True) as connection:
            row = await connection.fetchrow(MEASURE, retention_days)
    except TRANSIENT_DB_ERRORS:
        return
    except asyncpg.PostgresError as exc:
        metrics.LIFECYCLE_ERRORS.inc()
        logger.error("time partitions not measured: %s", exc)  # noqa: TRY400 (as above)
        return
    assert row is not None
    metrics.PARTITIONS_AHEAD.set(float(row["ahead_seconds"] or 0.0))
    metrics.PARTITIONS_KEPT.set(row["kept"])
    metrics.PARTITIONS_BLOCKED.set(row["blocked"])
    metrics.DEFAULT_PARTITION_ROWS.set(row["default_rows"])
