"""Validator throughput and batch cost at scale.

1. Throughput: N SMS (repeated senders, about 60% valid), drained by the engine's batch runner
   with every check on, at batch_size 20 and 1000 (and 4 concurrent runners at 1000, which is
   what parallel_workers=4 does), against two baselines measured in the same run: the naive
   engine (one transaction per SMS, a Redis round trip per SMS) and the checks alone in memory
   (the CPU floor of the pipeline).
2. Plans: EXPLAIN (ANALYZE, BUFFERS) of a batch's and a sweep's read at two table sizes, filled
   with generate_series, to show that their cost does not grow with the tables.

Run against a stack of its own (docs/benchmarks.md, "Validator"):

    export SMSGW_STACK_DIR=.stack-bench-validator SMSGW_PGBOUNCER_PORT=6502 \\
           SMSGW_REDIS_PORT=6512 SMSGW_DB_NAME=smsgw_bench_validator
    .venv/bin/sms-stack up --infra-only
    .venv/bin/python -m bench.validator_throughput --sms 20000 --plans 1000,10000000
    .venv/bin/sms-stack down

It refuses any database whose name does not start with `smsgw_bench`: it empties the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

import checks
from checks.base import CheckContext, CheckResult, CheckSecrets, MessageParts, SmsToJudge
from services.validator import sql
from services.validator.batch import BatchRunner
from services.validator.index import SET_KEY
from services.validator.ledger import BatchLedger
from services.validator.pipeline import judge_batch
from sms_gateway import db
from sms_gateway.devstack import StackConfig
from sms_gateway.redis import RedisLink
from sms_gateway.settings import SettingsStore

SENDERS = [f"447911{n:06d}" for n in range(2000)]
RESET = """
TRUNCATE sms_monitor, out_sms, count_sms, blacklist_sms;
UPDATE system_settings SET setting_value = '00000000-0000-0000-0000-000000000000'
WHERE setting_key = 'last_processed_uuid';
"""


def make_stream(count: int, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        sender = rng.choice(SENDERS)
        if rng.random() < 0.6:
            rows.append((sender, f"ABC 0123456789abcdef +{sender}"))
        else:
            rows.append((sender, f"abc 0123456789abcdef +{sender}"))
    return rows


async def fill(owner: asyncpg.Connection, stream: list[tuple[str, str]]) -> None:
    await owner.execute("TRUNCATE input_sms, sms_monitor, out_sms, count_sms, blacklist_sms")
    now = datetime.now(UTC)
    await owner.copy_records_to_table(
        "input_sms",
        columns=["sender_number", "sms_message", "received_timestamp"],
        records=[(s, m, now) for s, m in stream],
    )
    await owner.execute("ANALYZE input_sms")


async def reset(owner: asyncpg.Connection, redis: Any, settings: dict[str, str]) -> None:
    await owner.execute(RESET)
    await owner.executemany(
        "UPDATE system_settings SET setting_value = $2 WHERE setting_key = $1",
        list(settings.items()),
    )
    await redis.flushdb()


async def run_engine(pool: asyncpg.Pool, link: RedisLink, runners: int) -> int:
    registry = checks.REGISTRY
    store = SettingsStore(known_checks=registry)
    done = 0

    async def drain() -> None:
        nonlocal done
        runner = BatchRunner(pool, link, registry, CheckSecrets(), store, settle_margin=0.0)
        while (outcome := await runner.run("batch")).size:
            done += outcome.size

    await asyncio.gather(*(drain() for _ in range(runners)))
    return done


async def run_naive(pool: asyncpg.Pool, link: RedisLink, limit: int) -> int:
    """One SMS per transaction, a Redis round trip per SMS: the design the engine replaces."""
    store = SettingsStore(known_checks=checks.REGISTRY)
    done = 0
    while done < limit:
        async with db.transaction(pool) as connection:
            checkpoint = await connection.fetchval(sql.LOCK_CHECKPOINT)
            settings = await store.reload(connection)
            row = await connection.fetchrow(
                "SELECT * FROM input_sms WHERE uuid > $1::uuid ORDER BY uuid LIMIT 1", checkpoint
            )
            if row is None:
                break
            sms = SmsToJudge(
                row["uuid"],
                row["sender_number"],
                row["sms_message"],
                row["received_timestamp"],
                row["created_at"],
            )
            count = (
                await connection.fetchval(
                    "SELECT message_count FROM count_sms WHERE sender_number = $1 FOR UPDATE",
                    sms.sender_number,
                )
                or 0
            )
            listed = await connection.fetchval(
                "SELECT true FROM blacklist_sms WHERE sender_number = $1", sms.sender_number
            )
            client = await link.for_target(settings.redis_host, settings.redis_port)
            forwarded = await client.sismember(SET_KEY, sms.sender_number)
            ledger = BatchLedger(
                {sms.sender_number: count},
                {sms.sender_number} if listed else set(),
                {sms.sender_number} if forwarded else set(),
            )
            context = CheckContext(
                settings,
                CheckSecrets(),
                MessageParts.parse(sms.sms_message, " "),
                datetime.now(UTC),
                ledger,
            )
            results = {}
            for name in settings.check_sequence:
                results[name] = checks.REGISTRY[name](sms, context)
                if results[name] is CheckResult.FAIL:
                    break
            status = "invalid" if CheckResult.FAIL in results.values() else "valid"
            await connection.execute(
                "INSERT INTO sms_monitor (uuid, blacklist_check, duplicate_check, header_check,"
                " hash_length_check, mobile_check, time_window_check, overall_status)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                sms.uuid,
                *(int(results.get(n, 0)) for n in checks.REGISTRY),
                status,
            )
            await connection.execute(
                "INSERT INTO count_sms (sender_number, message_count) VALUES ($1, $2) "
                "ON CONFLICT (sender_number) DO UPDATE SET message_count = $2",
                sms.sender_number,
                ledger.counts[sms.sender_number],
            )
            if status == "valid":
                await connection.execute(
                    "INSERT INTO out_sms (uuid, sender_number, sms_message) VALUES ($1, $2, $3)",
                    sms.uuid,
                    sms.sender_number,
                    sms.sms_message,
                )
            await connection.execute(
                "UPDATE system_settings SET setting_value = $1 "
                "WHERE setting_key = 'last_processed_uuid'",
                str(sms.uuid),
            )
        if status == "valid":
            await client.sadd(SET_KEY, sms.sender_number)
        done += 1
    return done


def checks_only(stream: list[tuple[str, str]]) -> float:
    """SMS/s of the pipeline in memory: the CPU floor of any scheme on this interpreter."""
    now = datetime.now(UTC)
    batch = [SmsToJudge(UUID(int=i + 1), s, m, now, now) for i, (s, m) in enumerate(stream)]
    ledger = BatchLedger({}, set(), set())
    started = time.perf_counter()
    judge_batch(
        batch,
        checks=checks.REGISTRY,
        settings=SettingsStore().current,
        secrets=CheckSecrets(),
        ledger=ledger,
    )
    return len(batch) / (time.perf_counter() - started)


async def throughput(config: StackConfig, count: int, repeats: int) -> None:
    owner = await asyncpg.connect(
        config.direct_url("sms_owner", config.owner_password, config.db_name)
    )
    pool = await db.create_pool(
        config.pooled_url("sms_validator", config.db_name), min_size=0, max_size=8
    )
    link = RedisLink(password=config.redis_password, db=0)
    redis = await link.for_target("127.0.0.1", config.redis_port)
    stream = make_stream(count)
    await fill(owner, stream)
    base = {"redis_host": "127.0.0.1", "redis_port": str(config.redis_port)}
    print(f"{count} SMS, {len(SENDERS)} senders, all checks on; SMS/s, best of {repeats}")
    print(f"checks only, in memory: {checks_only(stream):10.0f}")
    naive_n = min(count, 2000)
    naive = 0.0
    for _ in range(repeats):
        await reset(owner, redis, base | {"batch_size": "1"})
        started = time.perf_counter()
        done = await run_naive(pool, link, naive_n)
        naive = max(naive, done / (time.perf_counter() - started))
    print(f"naive, 1 SMS/transaction ({naive_n} SMS): {naive:10.0f}  ratio 1.0")
    for batch_size, runners in ((20, 1), (1000, 1), (20, 4), (1000, 4)):
        best = 0.0
        for _ in range(repeats):
            await reset(owner, redis, base | {"batch_size": str(batch_size)})
            started = time.perf_counter()
            done = await run_engine(pool, link, runners)
            assert done == count, (done, count)
            best = max(best, done / (time.perf_counter() - started))
        print(
            f"engine batch_size={batch_size:<5} workers={runners}: {best:10.0f}  "
            f"ratio {best / naive:5.1f}"
        )
    await link.close()
    await db.close_pool(pool)
    await owner.close()


FILL_SERIES = """
INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp, created_at)
SELECT uuid_v7_lower_bound(now() - interval '30 days' + g * interval '1 millisecond'),
       '447911' || lpad((g % 2000)::text, 6, '0'), 'ABC 0123456789abcdef +447911000001',
       now(), now()
FROM generate_series(1, $1::bigint) g
"""
JUDGE_SERIES = """
INSERT INTO sms_monitor (uuid, overall_status)
SELECT uuid, 'invalid' FROM input_sms WHERE uuid <= $1::uuid
"""


async def checkpoint_of(owner: asyncpg.Connection, size: int) -> UUID:
    checkpoint: UUID = await owner.fetchval(
        "SELECT uuid FROM input_sms ORDER BY uuid OFFSET $1 LIMIT 1", size * 9 // 10
    )
    return checkpoint


async def plans(config: StackConfig, sizes: list[int]) -> None:
    owner = await asyncpg.connect(
        config.direct_url("sms_owner", config.owner_password, config.db_name)
    )
    for size in sizes:
        started = time.perf_counter()
        # A fill of this size left by an earlier run is reused (10 million rows take minutes).
        if await owner.fetchval("SELECT count(*) FROM input_sms") != size:
            await owner.execute(
                "TRUNCATE input_sms, sms_monitor, out_sms, count_sms, blacklist_sms"
            )
            await owner.execute(FILL_SERIES, size)
            # Nine tenths judged: a batch reads the rows after that checkpoint.
            await owner.execute(JUDGE_SERIES, await checkpoint_of(owner, size))
            await owner.execute("VACUUM ANALYZE input_sms")
            await owner.execute("VACUUM ANALYZE sms_monitor")
        checkpoint = await checkpoint_of(owner, size)
        print(f"\n== {size} rows in input_sms (filled in {time.perf_counter() - started:.0f} s)")
        for name, query, args in (
            ("batch", sql.FETCH_BATCH, (checkpoint, datetime.now(UTC), 1000)),
            ("sweep", sql.FETCH_SWEEP, (checkpoint, 60.0, 1000)),
        ):
            plan = await owner.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", *args)
            print(f"-- {name}")
            for row in plan:
                print("  " + row[0])
    await owner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plans", default="", help="table sizes for EXPLAIN, e.g. 1000,10000000")
    args = parser.parse_args()
    config = StackConfig()
    if not config.db_name.startswith("smsgw_bench"):
        raise SystemExit("refusing: SMSGW_DB_NAME must start with smsgw_bench (it is emptied)")
    if args.sms:
        asyncio.run(throughput(config, args.sms, args.repeats))
    if args.plans:
        asyncio.run(plans(config, [int(n) for n in args.plans.split(",")]))


if __name__ == "__main__":
    main()
