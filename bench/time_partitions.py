"""Time partitions and retention (db/init/0013, services/validator/lifecycle.py), measured:

- `migrate`: 0013 on a database of a few million SMS made before it: each step's time, and how
  long a writer and a reader of input_sms waited meanwhile (what the steps lock); FETCH_BATCH's
  plan before and after.
- `month`: a simulated month at a steady rate, twice (with retention and without), time moved
  by the benchmark: each day's SMS get keys of that day, the validator's settle horizon is the
  day's end, and the retention is shifted by the days between the simulated and the real
  clock. Database size per day, drops, and every verdict compared between the two runs; the
  plan of FETCH_BATCH at the end.
- `plans`: every statement that reads the partitioned tables, explained on a month of days.
- `archive`: one judged day written to an archive as the upkeep does, and loaded back.
- `keyed`: the receiver's keyed insert (a delivery key is looked for in every partition) before
  and after 0013.
- `drop`: the receiver under a steady load while days are dropped (the services of `sms-stack
  up` and the validator judging): the receiver's p50/p99 in the seconds around each drop
  against the rest of the same run, and each drop's time and lock waits.

Run against a stack of its own (docs/benchmarks.md, "Time partitions"):

    export SMSGW_STACK_DIR=.stack-bench-lifecycle SMSGW_PGBOUNCER_PORT=6621 \\
           SMSGW_REDIS_PORT=6631 SMSGW_RECEIVER_PORT=8621 SMSGW_VALIDATOR_PORT=8622 \\
           SMSGW_ADMIN_PORT=8623 SMSGW_DB_NAME=smsgw_bench_lifecycle
    .venv/bin/sms-stack up --infra-only
    .venv/bin/python -m bench.time_partitions migrate --rows 3000000
    .venv/bin/python -m bench.time_partitions month --days 30 --per-day 20000 --retention 7
    .venv/bin/python -m bench.time_partitions plans --days 30 --per-day 20000
    .venv/bin/python -m bench.time_partitions keyed --batch 1000 --past-days 30
    .venv/bin/python -m bench.time_partitions archive --per-day 400000
    .venv/bin/sms-stack up          # the services, for `drop`
    .venv/bin/python -m bench.time_partitions drop --days 5 --per-day 500000
    .venv/bin/sms-stack down

It refuses any database whose name does not start with `smsgw_bench`: it drops and makes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from prometheus_client import REGISTRY

import checks
from bench.admin_stats_plans import FILL_INPUT, FILL_OUT, fill_monitor
from checks.base import CheckSecrets
from services.admin import queries as admin_queries
from services.receiver import queries as receiver_queries
from services.validator import sql
from services.validator.batch import BatchRunner
from services.validator.engine import BACKLOG_CAP
from services.validator.lifecycle import PartitionKeeper
from sms_gateway import archive, db
from sms_gateway.devstack import StackConfig, bootstrap_steps, passwords
from sms_gateway.migrate import Migration, discover, migrate
from sms_gateway.redis import RedisLink
from sms_gateway.settings import SettingsStore

TABLES = ("input_sms", "sms_monitor", "out_sms")
SIZES = """
SELECT parent, (SELECT sum(pg_total_relation_size(relid))::bigint
                FROM pg_partition_tree(parent::regclass)) AS bytes
FROM unnest($1::text[]) AS parent
"""
SIZES_PLAIN = "SELECT t, pg_total_relation_size(t::regclass) FROM unnest($1::text[]) AS t"

# One simulated day's SMS: `$2` of them spread evenly over the day starting at `$1`, each with
# a UUIDv7 of its instant (then a counter that keeps keys of one run distinct), arriving 2 s
# after it was received. Senders are spread over `$3` numbers; one SMS in five is not in the
# verification format (fails header), the rest pass every check when the sender is new.
FILL_DAY = """
INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp, created_at)
SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
        || '7' || lpad(to_hex(n % 4096), 3, '0') || '8'
        || lpad(to_hex($4::bigint * 10000000 + n), 15, '0'))::uuid,
       sender,
       CASE WHEN n % 5 = 0 THEN 'hello ' || n ELSE 'ABC 0123456789abcdef +' || sender END,
       at - interval '2 seconds',
       at
FROM generate_series(0, $2::bigint - 1) AS n,
     LATERAL (SELECT $1::timestamptz + n * (interval '1 day' / $2::bigint) AS at,
                     '4479111' || lpad(((n * 7919 + $4::bigint * 104729) % $3)::text, 5, '0')
                         AS sender) AS t
"""


def stack_config() -> StackConfig:
    stack = StackConfig()
    if not stack.db_name.startswith("smsgw_bench"):
        raise SystemExit(f"refusing to drop {stack.db_name!r}: use SMSGW_DB_NAME=smsgw_bench_...")
    return stack


def owner_url(stack: StackConfig, name: str) -> str:
    return stack.direct_url("sms_owner", stack.owner_password, name)


async def recreate(stack: StackConfig, name: str, *, schema: bool) -> None:
    admin = await asyncpg.connect(stack.pg_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    steps = bootstrap_steps(stack)
    await steps.roles(passwords(stack))
    await steps.database(name)
    if schema:
        await steps.schema(name, stack.owner_password)


async def explain(connection: asyncpg.Connection, title: str, query: str, *args: Any) -> None:
    rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {query}", *args)
    print(f"\n#### {title}\n\n```")
    for row in rows:
        print(row[0])
    print("```")


async def explain_fetch_batch(connection: asyncpg.Connection, title: str) -> None:
    """FETCH_BATCH as a worker holding every partition runs it, 2,000 SMS behind the newest."""
    lowest = await connection.fetchval(
        "SELECT uuid FROM input_sms ORDER BY uuid DESC OFFSET 2000 LIMIT 1"
    )
    await explain(
        connection,
        title,
        sql.FETCH_BATCH,
        lowest,
        datetime.now(UTC),
        1000,
        [lowest] * 32,
        32,
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ------------------------------------------------------------------ migrate


@dataclass
class Probe:
    """A writer and a reader of input_sms, each in a loop of short transactions, recording when
    each statement started and how long it took."""

    url: str
    samples: list[tuple[str, float, float]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _loop(self, kind: str, statement: str, args: Callable[[], tuple[Any, ...]]) -> None:
        connection = await asyncpg.connect(self.url, statement_cache_size=0)
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                await connection.execute(statement, *args())
                self.samples.append((kind, started, time.perf_counter() - started))
                await asyncio.sleep(0.01)
        finally:
            await connection.close()

    def run(self) -> list[asyncio.Task[None]]:
        write = (
            "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
            "VALUES ('447911100000', 'probe', now())"
        )
        read = "SELECT count(*) FROM (SELECT uuid FROM input_sms WHERE uuid > $1 LIMIT 100) s"
        since = UUID(int=0)
        return [
            asyncio.create_task(self._loop("write", write, tuple)),
            asyncio.create_task(self._loop("read", read, lambda: (since,))),
        ]

    def during(self, kind: str, start: float, end: float) -> tuple[int, float]:
        """Probes that ran (started or were waiting) during [start, end]: count and longest."""
        hits = [
            seconds
            for k, started, seconds in self.samples
            if k == kind and started <= end and started + seconds >= start
        ]
        return len(hits), max(hits, default=0.0)


async def bench_migrate(rows: int) -> None:
    stack = stack_config()
    name = f"{stack.db_name}_migrate"
    await recreate(stack, name, schema=False)
    url = owner_url(stack, name)
    earlier = [m for m in discover() if m.version < "0013"]
    (target,) = [m for m in discover() if m.version.startswith("0013")]
    with tempfile.TemporaryDirectory() as directory:
        for migration in earlier:
            shutil.copy(migration.path, directory)
        await migrate(url, Path(directory))
    owner = await asyncpg.connect(url, statement_cache_size=0)
    try:
        started = time.perf_counter()
        await owner.execute(FILL_INPUT, rows, max(rows // 10, 10))
        await owner.execute(fill_monitor(tuple(checks.REGISTRY)), rows, 1000)
        await owner.execute(FILL_OUT)
        await owner.execute("VACUUM ANALYZE")
        print(f"-- filled {rows:,} SMS and VACUUM ANALYZE in {time.perf_counter() - started:.0f} s")
        for table, size in await owner.fetch(SIZES_PLAIN, list(TABLES)):
            print(f"-- {table}: {size / 2**20:,.0f} MiB")
        await explain_fetch_batch(owner, "FETCH_BATCH before 0013 (one table)")

        probe = Probe(url)
        tasks = probe.run()
        await asyncio.sleep(2.0)
        quiet_start = time.perf_counter()
        await asyncio.sleep(3.0)
        timings: list[tuple[str, float, float]] = [
            ("(no migration, 3 s)", quiet_start, time.perf_counter())
        ]
        for number, step in enumerate(Migration(target.version, target.path).steps, start=1):
            step_start = time.perf_counter()
            async with owner.transaction():
                await owner.execute(step)
            timings.append((f"step {number}", step_start, time.perf_counter()))
            await asyncio.sleep(1.0)
        probe.stop.set()
        await asyncio.gather(*tasks)
        print("\n| step | time | writer probes during it | longest write | longest read |")
        print("|---|---|---|---|---|")
        for label, start, end in timings:
            writes, longest_write = probe.during("write", start, end)
            _, longest_read = probe.during("read", start, end)
            print(
                f"| {label} | {ms(end - start)} | {writes} | {ms(longest_write)} | "
                f"{ms(longest_read)} |"
            )
        await owner.execute("ANALYZE")
        await explain_fetch_batch(owner, "FETCH_BATCH after 0013 (legacy partition + days)")
        for table, size in await owner.fetch(SIZES, list(TABLES)):
            print(f"-- {table} after: {size / 2**20:,.0f} MiB")
    finally:
        await owner.close()


# ------------------------------------------------------------------ month


@dataclass
class MonthRun:
    label: str
    sizes: list[int] = field(default_factory=list)  # bytes of the three tables after each day
    kept_days: list[int] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    drop_seconds: list[float] = field(default_factory=list)
    judge_seconds: float = 0.0
    judged: int = 0
    verdicts: dict[UUID, tuple[Any, ...]] = field(default_factory=dict)
    senders: dict[str, Any] = field(default_factory=dict)


def _drop_histogram() -> tuple[float, float]:
    name = "sms_time_partition_drop_duration_seconds"
    total = REGISTRY.get_sample_value(f"{name}_sum") or 0.0
    count = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    return total, count


async def month_run(
    stack: StackConfig, label: str, days: int, per_day: int, retention: int, senders: int
) -> MonthRun:
    name = f"{stack.db_name}_{label}"
    await recreate(stack, name, schema=True)
    run = MonthRun(label)
    owner = await db.create_pool(owner_url(stack, name), min_size=1, max_size=2)
    validator = await db.create_pool(
        stack.pooled_url("sms_validator", name), min_size=1, max_size=4
    )
    link = RedisLink(password=stack.redis_password, db=2 if retention else 3)
    try:
        async with db.transaction(owner) as connection:
            await connection.executemany(
                "UPDATE system_settings SET setting_value = $2 WHERE setting_key = $1",
                [
                    ("redis_host", "127.0.0.1"),
                    ("redis_port", str(stack.redis_port)),
                    ("batch_size", "1000"),
                    ("retention_days", "0"),  # this benchmark drives the upkeep itself
                ],
            )
        keeper = PartitionKeeper(validator)
        today = datetime.now(UTC).date()
        first = today - timedelta(days=days)
        client = await link.for_target("127.0.0.1", stack.redis_port)
        await client.flushdb()
        await _arrive(owner, first, per_day, senders, 0)
        for k in range(days):
            day = first + timedelta(days=k)
            day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            # The next day's SMS are there before this day is judged: the horizon passes the
            # day's end by the time the judging takes, and an SMS must never arrive below it.
            if k + 1 < days:
                await _arrive(owner, day + timedelta(days=1), per_day, senders, k + 1)
            # The validator's horizon is the simulated day's end: the clock the benchmark moves.
            margin = (datetime.now(UTC) - (day_start + timedelta(days=1))).total_seconds()
            started = time.perf_counter()
            run.judged += await _judge(validator, link, max(margin, 0.01))
            run.judge_seconds += time.perf_counter() - started
            if retention:
                shifted = retention + (today - day - timedelta(days=1)).days
                before = _drop_histogram()
                done = await keeper.run(shifted)
                after = _drop_histogram()
                run.dropped += done.dropped
                if done.dropped:
                    run.drop_seconds.append((after[0] - before[0]) / max(after[1] - before[1], 1))
            async with db.transaction(owner, readonly=True) as connection:
                sizes = dict(await connection.fetch(SIZES, list(TABLES)))
                kept = await connection.fetchval(
                    "SELECT count(*) FROM sms_time_partitions WHERE dropped_at IS NULL "
                    "AND starts_at <= $1",
                    day_start,
                )
            run.sizes.append(sum(sizes.values()))
            run.kept_days.append(kept)
        async with db.transaction(owner, readonly=True) as connection:
            unjudged = await connection.fetchval(
                "SELECT count(*) FROM input_sms i WHERE NOT EXISTS (SELECT FROM sms_monitor m "
                "WHERE m.uuid = i.uuid AND m.overall_status IN ('valid', 'invalid', 'skipped'))"
            )
            print(f"-- {label}: SMS without a final result at the end: {unjudged}")
            columns = ", ".join(checks.result_columns(tuple(checks.REGISTRY)))
            rows = await connection.fetch(
                f"SELECT uuid, {columns}, overall_status, failed_at_check FROM sms_monitor"
            )
            run.verdicts = {row[0]: tuple(row[1:]) for row in rows}
            run.senders = {
                "count_sms": await connection.fetch(
                    "SELECT sender_number, message_count FROM count_sms ORDER BY 1"
                ),
                "blacklist_sms": await connection.fetch(
                    "SELECT sender_number, message_count FROM blacklist_sms ORDER BY 1"
                ),
                "forwarded_senders": await connection.fetch(
                    "SELECT sender_number FROM forwarded_senders ORDER BY 1"
                ),
                "redis": sorted(await client.smembers("out_sms_numbers")),
            }
        async with owner.acquire() as connection:
            await connection.execute("ANALYZE")
            if retention:
                await explain_fetch_batch(
                    connection, f"FETCH_BATCH after the month ({label}: {retention}-day retention)"
                )
    finally:
        await link.close()
        await db.close_pool(validator)
        await db.close_pool(owner)
    return run


async def _arrive(pool: asyncpg.Pool, day: date, per_day: int, senders: int, k: int) -> None:
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    async with db.transaction(pool) as connection:
        await connection.execute("SELECT sms_time_partition_create($1)", day)
        await connection.execute(FILL_DAY, day_start, per_day, senders, k)


async def _judge(pool: asyncpg.Pool, link: RedisLink, margin: float) -> int:
    runner = BatchRunner(
        pool,
        link,
        checks.REGISTRY,
        CheckSecrets(),
        SettingsStore(known_checks=checks.REGISTRY),
        settle_margin=margin,
    )
    judged = 0
    while True:
        outcome = await runner.run("batch")
        if outcome.size == 0:
            return judged
        judged += outcome.size


async def bench_month(days: int, per_day: int, retention: int, senders: int) -> None:
    stack = stack_config()
    runs = [
        await month_run(stack, "keep", days, per_day, 0, senders),
        await month_run(stack, "retention", days, per_day, retention, senders),
    ]
    keep, kept = runs
    print("\n| simulated day | size without retention | size with retention | days kept |")
    print("|---|---|---|---|")
    for k in range(days):
        print(
            f"| {k + 1} | {keep.sizes[k] / 2**20:,.1f} MiB | {kept.sizes[k] / 2**20:,.1f} MiB "
            f"| {kept.kept_days[k]} |"
        )
    for run in runs:
        rate = run.judged / run.judge_seconds if run.judge_seconds else 0.0
        print(f"-- {run.label}: judged {run.judged:,} SMS at {rate:,.0f} SMS/s")
    print(f"-- days dropped: {len(kept.dropped)} ({kept.dropped[0]} .. {kept.dropped[-1]})")
    if kept.drop_seconds:
        print(
            f"-- drop transaction: median {ms(statistics.median(kept.drop_seconds))}, "
            f"max {ms(max(kept.drop_seconds))}"
        )
    different = [u for u, v in kept.verdicts.items() if keep.verdicts.get(u) != v]
    print(
        f"-- verdicts kept by the retention run: {len(kept.verdicts):,}; different from the run "
        f"without retention: {len(different)}"
    )
    for key in ("count_sms", "blacklist_sms", "forwarded_senders", "redis"):
        same = keep.senders[key] == kept.senders[key]
        print(f"-- {key}: {len(kept.senders[key]):,} rows, equal in both runs: {same}")


# ------------------------------------------------------------------ drop


async def bench_drop(days: int, per_day: int, rate: float, seconds: float) -> None:
    stack = stack_config()
    owner = await db.create_pool(owner_url(stack, stack.db_name), min_size=1, max_size=2)
    validator = await db.create_pool(
        stack.pooled_url("sms_validator", stack.db_name), min_size=1, max_size=2
    )
    today = datetime.now(UTC).date()
    victims = [today - timedelta(days=60 + k) for k in range(days)]
    try:
        async with db.transaction(owner) as connection:
            await connection.execute(
                "UPDATE system_settings SET setting_value = '0' "
                "WHERE setting_key = 'retention_days'"
            )
        for k, day in enumerate(victims):
            await _fill_judged_day(owner, day, per_day, k)
        async with owner.acquire() as connection:
            sizes = dict(await connection.fetch(SIZES, list(TABLES)))
        print(f"-- {days} days of {per_day:,} judged SMS made; tables {sizes}")
        drops: list[tuple[str, float, float, int]] = []
        purges: list[float] = []
        latencies: list[tuple[float, float]] = []
        stop = asyncio.Event()
        load = asyncio.create_task(_receive_load(stack, rate, latencies, stop))
        await asyncio.sleep(seconds / (days + 1))
        for day in victims:
            drops.append(await _drop_now(validator, f"p{day:%Y%m%d}", purges))
            await asyncio.sleep(seconds / (days + 1))
        stop.set()
        await load
    finally:
        await db.close_pool(validator)
        await db.close_pool(owner)
    print("\n| day | drop (detach) transaction | lock timeouts before it went | purge |")
    print("|---|---|---|---|")
    for (name, start, end, timeouts), purge in zip(drops, purges, strict=True):
        print(f"| {name} | {ms(end - start)} | {timeouts} | {ms(purge)} |")
    near = [
        latency
        for sent, latency in latencies
        if any(start - 0.5 <= sent <= end + 0.5 for _, start, end, _ in drops)
    ]
    far = [
        latency
        for sent, latency in latencies
        if all(not (start - 2 <= sent <= end + 2) for _, start, end, _ in drops)
    ]
    for label, values in (("within 0.5 s of a drop", near), ("away from drops (baseline)", far)):
        print(
            f"-- receiver {label}: n={len(values)}, p50 {ms(statistics.median(values))}, "
            f"p99 {ms(percentile(values, 0.99))}, max {ms(max(values))}"
        )
    print(f"-- p99 ratio near/away: {percentile(near, 0.99) / percentile(far, 0.99):.2f}")


async def _fill_judged_day(pool: asyncpg.Pool, day: date, per_day: int, k: int) -> None:
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    async with db.transaction(pool) as connection:
        await connection.execute("SELECT sms_time_partition_create($1)", day)
        await connection.execute(FILL_DAY, day_start, per_day, 50_000, 100 + k)
        await connection.execute(
            "INSERT INTO sms_monitor (uuid, overall_status, processing_started_at, "
            "processing_completed_at) SELECT uuid, 'valid', created_at, created_at "
            "FROM input_sms WHERE uuid >= $1 AND uuid < $2",
            await connection.fetchval("SELECT sms_day_start_uuid($1::date)", day),
            await connection.fetchval("SELECT sms_day_start_uuid($1::date + 1)", day),
        )
        await connection.execute(
            "INSERT INTO out_sms (uuid, sender_number, sms_message) "
            "SELECT uuid, sender_number, sms_message FROM input_sms "
            "WHERE uuid >= $1 AND uuid < $2 AND sms_message LIKE 'ABC%'",
            await connection.fetchval("SELECT sms_day_start_uuid($1::date)", day),
            await connection.fetchval("SELECT sms_day_start_uuid($1::date + 1)", day),
        )
    async with pool.acquire() as connection:
        await connection.execute(f"VACUUM ANALYZE input_sms_p{day:%Y%m%d}")
        await connection.execute(
            "SELECT sms_time_partition_examine($1)", f"p{day:%Y%m%d}", timeout=600
        )


async def _drop_now(
    pool: asyncpg.Pool, name: str, purges: list[float]
) -> tuple[str, float, float, int]:
    """As the validator's upkeep drops: detach with a 100 ms lock wait (give way and retry),
    then remove the detached tables in a transaction of their own."""
    timeouts = 0
    while True:
        start = time.perf_counter()
        try:
            async with db.transaction(pool) as connection:
                dropped = await connection.fetchval(
                    "SELECT sms_time_partition_drop($1, 30, 100, false)", name
                )
        except asyncpg.LockNotAvailableError:
            timeouts += 1
            await asyncio.sleep(0.5)
            continue
        if not dropped:
            raise SystemExit(f"{name} was not dropped")
        end = time.perf_counter()
        async with db.transaction(pool) as connection:
            await connection.execute("SELECT sms_time_partition_purge($1)", name)
        purges.append(time.perf_counter() - end)
        return name, start, end, timeouts


async def _receive_load(
    stack: StackConfig, rate: float, latencies: list[tuple[float, float]], stop: asyncio.Event
) -> None:
    """Open loop: one POST /sms/receive every 1/rate s whatever the answers, each timed."""
    url = f"http://127.0.0.1:{stack.receiver_port}/sms/receive"
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        n = 0

        async def one(i: int) -> None:
            body = {
                "sender_number": f"+4479111{i % 90000 + 10000:05d}",
                "sms_message": f"ABC 0123456789abcdef +4479111{i % 90000 + 10000:05d}",
                "received_timestamp": datetime.now(UTC).isoformat(),
            }
            sent = time.perf_counter()
            response = await client.post(url, json=body)
            response.raise_for_status()
            latencies.append((sent, time.perf_counter() - sent))

        while not stop.is_set():
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)


# ------------------------------------------------------------------ plans


PARTITION_SCAN = re.compile(r" on (input_sms|sms_monitor|out_sms)_(p\d{8}|default|legacy)\b")
SUBPLANS_REMOVED = re.compile(r"Subplans Removed: (\d+)")


def _summary(rows: list[Any]) -> list[str]:
    """The plan's node lines, without the long per-row filters (the checkpoint array)."""
    keep = []
    for row in rows:
        line: str = row[0]
        if "Filter: (" in line and "::uuid[])" in line:
            continue
        keep.append(line)
    return keep


async def bench_plans(days: int, per_day: int) -> None:
    """Every statement of the engine, the admin and the receiver that reads the partitioned
    tables, explained on a database of `days` judged days plus the week ahead."""
    stack = stack_config()
    name = f"{stack.db_name}_plans"
    await recreate(stack, name, schema=True)
    owner = await db.create_pool(owner_url(stack, name), min_size=1, max_size=2)
    today = datetime.now(UTC).date()
    try:
        for k in range(days, 0, -1):
            await _fill_judged_day(owner, today - timedelta(days=k), per_day, k)
        async with owner.acquire() as connection:
            await connection.execute("ANALYZE")
            partitions = await connection.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'input_sms'::regclass"
            )
            newest = await connection.fetchval(
                "SELECT uuid FROM input_sms ORDER BY uuid DESC LIMIT 1"
            )
            checkpoint = await connection.fetchval(
                "SELECT uuid FROM input_sms ORDER BY uuid DESC OFFSET 2000 LIMIT 1"
            )
            print(f"-- {days} days of {per_day:,} SMS; input_sms has {partitions} partitions")
            statements: list[tuple[str, str, tuple[Any, ...]]] = [
                (
                    "validator FETCH_BATCH",
                    sql.FETCH_BATCH,
                    (checkpoint, datetime.now(UTC), 1000, [checkpoint] * 32, 32),
                ),
                (
                    "validator FETCH_SWEEP",
                    sql.FETCH_SWEEP,
                    (newest, 10.0, 1000, [newest] * 32, 32, newest),
                ),
                ("validator BACKLOG", sql.BACKLOG, (checkpoint, BACKLOG_CAP)),
                (
                    "admin GET /stats",
                    admin_queries.STATS,
                    (checkpoint, 100_000, 60.0),
                ),
                ("admin GET /stats, storage", admin_queries.STORAGE, ()),
                (
                    "admin GET /sms/{uuid}",
                    admin_queries.sms_detail(checks.result_columns()),
                    (newest,),
                ),
                (
                    "receiver SELECT_DELIVERIES",
                    receiver_queries.SELECT_DELIVERIES,
                    (["api"], ["key-1"]),
                ),
            ]
            for title, query, args in statements:
                rows = await connection.fetch(
                    f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) {query}", *args
                )
                lines = _summary(rows)
                scans = [line for line in lines if PARTITION_SCAN.search(line)]
                ran = [line for line in scans if "never executed" not in line]
                removed = sum(
                    int(m.group(1)) for line in lines if (m := SUBPLANS_REMOVED.search(line))
                )
                time_line = next(line for line in lines if line.startswith("Execution Time"))
                print(
                    f"\n#### {title}: {time_line}; partition scans in the plan {len(scans)}, "
                    f"executed {len(ran)}, removed at run time {removed}\n\n```"
                )
                print("\n".join(lines))
                print("```")
    finally:
        await db.close_pool(owner)


# ------------------------------------------------------------------ archive


async def bench_archive(per_day: int) -> None:
    """Write one judged day to an archive as the upkeep does, and load it back."""
    stack = stack_config()
    name = f"{stack.db_name}_archive"
    await recreate(stack, name, schema=True)
    owner = await db.create_pool(owner_url(stack, name), min_size=1, max_size=2)
    validator = await db.create_pool(
        stack.pooled_url("sms_validator", name), min_size=1, max_size=2
    )
    day = datetime.now(UTC).date() - timedelta(days=40)
    partition = f"p{day:%Y%m%d}"
    try:
        await _fill_judged_day(owner, day, per_day, 0)
        async with owner.acquire() as connection:
            bounds = await connection.fetchrow(
                "SELECT lower_uuid, upper_uuid, sms_count FROM sms_time_partitions "
                "WHERE partition_name = $1",
                partition,
            )
            table_bytes = await connection.fetchval(
                "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c "
                "WHERE c.relname IN ($1, $2, $3)",
                *(f"{t}_{partition}" for t in TABLES),
            )
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            written = await archive.write_partition(
                validator,
                Path(directory),
                archive.PartitionRange(partition, bounds["lower_uuid"], bounds["upper_uuid"]),
                expected_sms=bounds["sms_count"],
                scan_seconds=3600.0,
            )
            write_seconds = time.perf_counter() - started
            files = sum(f.stat().st_size for f in written.iterdir())
            started = time.perf_counter()
            loaded = await archive.load_partition(owner_url(stack, name), written, "restored")
            load_seconds = time.perf_counter() - started
        print(
            f"-- one day of {per_day:,} judged SMS: tables {table_bytes / 2**20:,.0f} MiB with "
            f"their indexes, archive {files / 2**20:,.1f} MiB (gzip CSV)"
        )
        print(
            f"-- archived in {write_seconds:.1f} s; loaded back ({loaded}) in {load_seconds:.1f} s"
        )
    finally:
        await db.close_pool(validator)
        await db.close_pool(owner)


# ------------------------------------------------------------------ keyed


KEYED_INSERT = """
SELECT count(sms_uuid) FROM store_input_sms(
    array_fill('447911100000'::text, ARRAY[$1::int]), array_fill('hi'::text, ARRAY[$1::int]),
    array_fill(now(), ARRAY[$1::int]), array_fill('api'::text, ARRAY[$1::int]),
    ARRAY(SELECT $2::text || '-' || n FROM generate_series(1, $1::int) AS n))
"""


async def bench_keyed(batch: int, repeat: int, past_days: int) -> None:
    """The receiver's keyed insert (store_input_sms) before 0013 (one unique index) and after it
    (a look in every partition), on databases of the same SMS."""
    stack = stack_config()
    results: dict[str, list[float]] = {}
    for label in ("before 0013", "after 0013"):
        name = f"{stack.db_name}_keyed"
        await recreate(stack, name, schema=False)
        url = owner_url(stack, name)
        with tempfile.TemporaryDirectory() as directory:
            for migration in discover():
                if label == "after 0013" or migration.version < "0013":
                    shutil.copy(migration.path, directory)
            await migrate(url, Path(directory))
        connection = await asyncpg.connect(url, statement_cache_size=0)
        try:
            partitions = 1
            if label == "after 0013":
                today = datetime.now(UTC).date()
                for k in range(1, past_days + 1):
                    await connection.execute(
                        "SELECT sms_time_partition_create($1)", today - timedelta(days=k)
                    )
                partitions = await connection.fetchval(
                    "SELECT count(*) FROM pg_inherits WHERE inhparent = 'input_sms'::regclass"
                )
            timings = []
            for i in range(repeat):
                started = time.perf_counter()
                async with connection.transaction():
                    stored = await connection.fetchval(KEYED_INSERT, batch, f"r{i}")
                timings.append(time.perf_counter() - started)
                assert stored == batch
            results[f"{label} ({partitions} partitions of input_sms)"] = timings
        finally:
            await connection.close()
    for label, timings in results.items():
        print(
            f"-- {label}: {batch} keyed SMS per call, median {ms(statistics.median(timings))}, "
            f"p95 {ms(percentile(timings, 0.95))} (n={len(timings)})"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("migrate")
    m.add_argument("--rows", type=int, default=3_000_000)
    month = commands.add_parser("month")
    month.add_argument("--days", type=int, default=30)
    month.add_argument("--per-day", type=int, default=20_000)
    month.add_argument("--retention", type=int, default=7)
    month.add_argument("--senders", type=int, default=50_000)
    d = commands.add_parser("drop")
    d.add_argument("--days", type=int, default=5)
    d.add_argument("--per-day", type=int, default=500_000)
    d.add_argument("--rate", type=float, default=200.0, help="POST /sms/receive per second")
    d.add_argument("--seconds", type=float, default=60.0)
    plans = commands.add_parser("plans")
    plans.add_argument("--days", type=int, default=30)
    plans.add_argument("--per-day", type=int, default=20_000)
    a = commands.add_parser("archive")
    a.add_argument("--per-day", type=int, default=400_000)
    k = commands.add_parser("keyed")
    k.add_argument("--batch", type=int, default=1000)
    k.add_argument("--repeat", type=int, default=30)
    k.add_argument("--past-days", type=int, default=30)
    args = parser.parse_args()
    print(f"-- load average at start: {os.getloadavg()}")
    work: Callable[[], Awaitable[None]]
    if args.command == "migrate":
        work = lambda: bench_migrate(args.rows)  # noqa: E731
    elif args.command == "month":
        work = lambda: bench_month(args.days, args.per_day, args.retention, args.senders)  # noqa: E731
    elif args.command == "plans":
        work = lambda: bench_plans(args.days, args.per_day)  # noqa: E731
    elif args.command == "archive":
        work = lambda: bench_archive(args.per_day)  # noqa: E731
    elif args.command == "drop":
        work = lambda: bench_drop(args.days, args.per_day, args.rate, args.seconds)  # noqa: E731
    else:
        work = lambda: bench_keyed(args.batch, args.repeat, args.past_days)  # noqa: E731
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(work())
    print(f"-- load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    cli()
