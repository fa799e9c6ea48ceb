"""Validator throughput as it ships: the real `sms-validator` draining a backlog.

drain     N SMS of a workload like real traffic (mostly distinct senders, about two thirds valid,
          the rest failing at different checks, a few senders writing again) are COPYed into
          input_sms; the COPY rate of those rows is the baseline. Then, for each configuration
          PxW (P processes of one `sms-validator`, W = parallel_workers; `default` = what
          ships: one process per core, the settings' parallel_workers), the real entry point
          drains them with every check on. The rate is N over the span sms_monitor's own
          timestamps give (first start to last completion); CPU seconds of the validator's
          processes and of PostgreSQL's over the drain say what limits it.
plans     EXPLAIN (ANALYZE, BUFFERS) of a batch's read at several table sizes.
recovery  how long the real validator takes from its start to judging a new SMS: with a complete
          Redis index (the baseline), with the index 100,000 forwarded senders behind (a Redis
          restored from an older snapshot), and with the index empty, over millions of
          forwarded senders.

Run against a stack of its own, on a PostgreSQL tuned as the gateway ships it
(docs/benchmarks.md, "Validator"):

    eval "$(bench/postgres-as-shipped)"
    export SMSGW_STACK_DIR=.stack-bench-validator SMSGW_PGBOUNCER_PORT=6502 \\
           SMSGW_REDIS_PORT=6512 SMSGW_DB_NAME=smsgw_bench_validator SMSGW_VALIDATOR_PORT=8581
    .venv/bin/sms-stack up --infra-only
    .venv/bin/python -m bench.validator_throughput drain --sms 300000 --configs 1x1,2x1,1x2,2x2 \\
        --rounds 4
    .venv/bin/python -m bench.validator_throughput plans --sizes 1000,10000000
    .venv/bin/python -m bench.validator_throughput recovery --senders 3000000 --lag 100000
    .venv/bin/sms-stack down

It refuses any database whose name does not start with `smsgw_bench`: it empties the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final
from uuid import UUID

import asyncpg

from services.validator import sql
from sms_gateway.devstack import StackConfig

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Before each drain: the machine counts as quiet below this many busy cores, over one second.
QUIET_CORES: Final = 0.25
SETTLE_LIMIT_SECONDS: Final = 60.0

RESET = """
TRUNCATE sms_monitor, out_sms, forwarded_senders, count_sms, blacklist_sms, validator_workers;
UPDATE validator_partitions SET checkpoint = '00000000-0000-0000-0000-000000000000',
    forwarded_seq = 0, owner = NULL, lease_expires_at = '-infinity';
UPDATE system_settings SET setting_value = '00000000-0000-0000-0000-000000000000'
WHERE setting_key = 'last_processed_uuid';
"""


def sender_of(number: int) -> str:
    """A UK mobile number libphonenumber judges valid: 4474 and eight digits."""
    return f"4474{number:08d}"


def workload(count: int, seed: int = 1) -> Iterator[tuple[str, str, datetime]]:
    """(sender, message, received_timestamp): 95% of SMS from a sender never seen before;
    67% valid; the rest fail header, hash_length, mobile or time_window in equal shares."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    late = now - timedelta(hours=2)
    for i in range(count):
        sender = sender_of(rng.randrange(i)) if i > 100 and rng.random() < 0.05 else sender_of(i)
        draw = rng.random()
        if draw < 0.67:
            yield sender, f"ABC 0123456789abcdef +{sender}", now
        elif draw < 0.75:
            yield sender, f"abc 0123456789abcdef +{sender}", now
        elif draw < 0.83:
            yield sender, f"ABC 0123 +{sender}", now
        elif draw < 0.91:
            yield sender, f"ABC 0123456789abcdef +{sender_of(99_999_999)}", now
        else:
            yield sender, f"ABC 0123456789abcdef +{sender}", late


async def fill(owner: asyncpg.Connection, count: int) -> float:
    """Empty the tables, COPY the workload into input_sms; returns the COPY rate (rows/s)."""
    await owner.execute("TRUNCATE input_sms, sms_monitor, out_sms")
    await owner.execute(RESET)
    rows = list(workload(count))
    started = time.perf_counter()
    await owner.copy_records_to_table(
        "input_sms", columns=["sender_number", "sms_message", "received_timestamp"], records=rows
    )
    rate = count / (time.perf_counter() - started)
    await owner.execute("VACUUM ANALYZE input_sms")
    return rate


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, every process) since boot."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def processes_of_session(session: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session:
                found.append(int(entry.name))
    return found


def postgres_processes(db_name: str) -> list[int]:
    """The PostgreSQL backends serving `db_name` (their title names it): the benchmark's own,
    not those of whatever else runs on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f" {db_name} " in f"{title} ":
                found.append(int(entry.name))
    return found


# The steady rate: the middle 60% of the backlog (from the moment a fifth of it was judged to the
# moment four fifths were) over the time it took, leaving out the processes' start, the leases'
# first hand-over and the last seconds, when a worker whose partitions are done waits for the
# others. It is the rate of a validator that is running when a long backlog builds up.
STEADY_SHARE: Final = 0.6
STEADY_SPAN: Final = """
SELECT extract(epoch FROM percentile_disc(0.8) WITHIN GROUP (ORDER BY processing_completed_at)
                        - percentile_disc(0.2) WITHIN GROUP (ORDER BY processing_completed_at))
FROM sms_monitor
"""


@dataclass
class Result:
    config: str
    rate: float
    steady_rate: float
    wall: float
    validator_cpu: float
    postgres_cpu: float
    machine_cpu: float


async def settle() -> None:
    """Wait until the machine is quiet, so that what the previous drain left running (the OTLP
    sink's backlog of spans, autovacuum of the tables it filled) is not counted in the next."""
    deadline = time.perf_counter() + SETTLE_LIMIT_SECONDS
    while True:
        before = machine_busy_seconds()
        await asyncio.sleep(1.0)
        busy = machine_busy_seconds() - before
        if busy < QUIET_CORES:
            return
        if time.perf_counter() > deadline:
            print(f"  the machine is still busy ({busy:.2f} cores): measuring anyway")
            return


async def drain_once(
    config: StackConfig,
    owner: asyncpg.Connection,
    name: str,
    count: int,
    batch_size: int,
    otlp: str | None,
) -> Result:
    processes, _, workers = name.partition("x")
    await owner.execute(RESET)
    # `default`: the settings' own default of parallel_workers (1), one process per core.
    settings = {"batch_size": str(batch_size), "parallel_workers": workers or "1"}
    await owner.executemany(
        "UPDATE system_settings SET setting_value = $2 WHERE setting_key = $1",
        list(settings.items()),
    )
    await owner.execute("CHECKPOINT")
    await settle()
    env = {**os.environ, **config.service_env("validator"), "SMSGW_LOG_FORMAT": "json"}
    env.pop("SMSGW_PROCESSES", None)
    if name != "default":
        env["SMSGW_PROCESSES"] = processes
    if otlp:
        env["SMSGW_OTLP_ENDPOINT"] = otlp
    executable = Path(sys.executable).with_name("sms-validator")
    log = Path(config.state_dir) / f"bench-validator-{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: ASYNC220 (started once, before the timing)
            [str(executable)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # PostgreSQL's CPU: every postgres process seen during the run (backends come and go), each
    # from its first sighting (a process that already existed counts from its value before).
    pg_first = {pid: cpu_seconds([pid]) for pid in postgres_processes(config.db_name)}
    pg_last = dict(pg_first)
    started = time.perf_counter()
    machine_started = machine_busy_seconds()
    validator_cpu = 0.0
    try:
        judged = 0
        while judged < count:
            await asyncio.sleep(0.5)
            if process.poll() is not None:
                raise SystemExit(f"sms-validator exited; see {log}")
            validator_cpu = max(validator_cpu, cpu_seconds(processes_of_session(process.pid)))
            for pid in postgres_processes(config.db_name):
                pg_first.setdefault(pid, 0.0)
                pg_last[pid] = cpu_seconds([pid])
            judged = await owner.fetchval("SELECT count(*) FROM sms_monitor")
            elapsed = time.perf_counter() - started
            print(f"\r  {name}: {judged:>9} judged, {elapsed:6.1f} s", end="", flush=True)
        wall = time.perf_counter() - started
        machine_cpu = machine_busy_seconds() - machine_started
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(40)
    for pid in pg_first:
        pg_last[pid] = max(pg_last.get(pid, 0.0), cpu_seconds([pid]))
    pg_cpu = sum(pg_last[pid] - pg_first[pid] for pid in pg_first)
    span = await owner.fetchval(
        "SELECT extract(epoch FROM max(processing_completed_at) - min(processing_started_at)) "
        "FROM sms_monitor"
    )
    middle = await owner.fetchval(STEADY_SPAN)
    print()
    return Result(
        name,
        count / float(span),
        STEADY_SHARE * count / float(middle),
        wall,
        validator_cpu,
        pg_cpu,
        machine_cpu,
    )


async def drain(
    config: StackConfig,
    count: int,
    configs: list[str],
    batch_size: int,
    otlp: str | None,
    rounds: int,
) -> None:
    """Each round drains the same backlog once per configuration, in the order given; the
    ratios are taken within a round (to its first configuration), so that the machine's drift
    from one minute to the next cancels, and summed up as medians over the rounds."""
    # The superuser: it empties tables and forces a CHECKPOINT between runs.
    owner = await asyncpg.connect(config.admin_url_for(config.db_name))
    copy_rate = await fill(owner, count)
    valid = await owner.fetchval(
        "SELECT count(*) FROM input_sms WHERE sms_message LIKE 'ABC 0123456789abcdef +%' "
        "AND received_timestamp > now() - interval '1 hour'"
    )
    senders = await owner.fetchval("SELECT count(DISTINCT sender_number) FROM input_sms")
    print(
        f"{count} SMS, {senders} distinct senders, {valid} well-formed and recent; "
        f"batch_size {batch_size}; tracing {'on' if otlp else 'off'}; {os.cpu_count()} cores"
    )
    print(f"COPY into input_sms: {copy_rate:10.0f} rows/s")
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    steady_ratios: dict[str, list[float]] = {name: [] for name in configs}
    steady_rates: dict[str, list[float]] = {name: [] for name in configs}
    for round_no in range(1, rounds + 1):
        results = [
            await drain_once(config, owner, name, count, batch_size, otlp) for name in configs
        ]
        print(f"round {round_no} of {rounds}")
        print_results(results, copy_rate, count)
        for r in results:
            rates[r.config].append(r.rate)
            ratios[r.config].append(r.rate / results[0].rate)
            steady_rates[r.config].append(r.steady_rate)
            steady_ratios[r.config].append(r.steady_rate / results[0].steady_rate)
    if rounds > 1:
        for label, by_config, ratios_of in (
            ("whole drain", rates, ratios),
            ("steady (the middle 60%)", steady_rates, steady_ratios),
        ):
            print(f"medians over {rounds} rounds, {label}")
            print(f"{'config':<30}{'SMS/s':>10}{'x COPY':>8}{'x first':>9}  x first, each round")
            for name in configs:
                rate = statistics.median(by_config[name])
                each = " ".join(f"{x:.2f}" for x in ratios_of[name])
                print(
                    f"{name:<30}{rate:10.0f}{rate / copy_rate:8.2f}"
                    f"{statistics.median(ratios_of[name]):9.2f}  {each}"
                )
    await owner.close()


def print_results(results: list[Result], copy_rate: float, count: int) -> None:
    first = results[0].rate
    print(
        f"{'config (processes x workers)':<30}{'SMS/s':>10}{'steady':>8}{'x COPY':>8}{'x first':>9}"
        f"{'wall s':>8}{'validator cpu s':>17}{'postgres cpu s':>16}"
        f"{'validator us/SMS':>18}{'postgres us/SMS':>17}{'rest us/SMS':>13}{'cores busy':>12}"
    )
    for r in results:
        # Everything else the machine did over the drain: pgbouncer, Redis, PostgreSQL's own
        # writers, the kernel's network work, this benchmark's polling.
        rest = r.machine_cpu - r.validator_cpu - r.postgres_cpu
        print(
            f"{r.config:<30}{r.rate:10.0f}{r.steady_rate:8.0f}{r.rate / copy_rate:8.2f}"
            f"{r.rate / first:9.2f}"
            f"{r.wall:8.1f}{r.validator_cpu:17.1f}{r.postgres_cpu:16.1f}"
            f"{r.validator_cpu / count * 1e6:18.1f}{r.postgres_cpu / count * 1e6:17.1f}"
            f"{rest / count * 1e6:13.1f}{r.machine_cpu / r.wall:12.2f}"
        )


FILL_SERIES = """
INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp, created_at)
SELECT uuid_v7_lower_bound(now() - interval '30 days' + g * interval '1 millisecond'),
       '4474' || lpad(g::text, 8, '0'), 'ABC 0123456789abcdef +447400000001', now(), now()
FROM generate_series(1, $1::bigint) g
"""
JUDGE_SERIES = """
INSERT INTO sms_monitor (uuid, overall_status)
SELECT uuid, 'invalid' FROM input_sms WHERE uuid <= $1::uuid
"""


async def plans(config: StackConfig, sizes: list[int]) -> None:
    owner = await asyncpg.connect(
        config.direct_url("sms_owner", config.owner_password, config.db_name)
    )
    partitions = int(await owner.fetchval(sql.PARTITION_COUNT))
    for size in sizes:
        started = time.perf_counter()
        # A fill of this size left by an earlier run is reused (10 million rows take minutes).
        if await owner.fetchval("SELECT count(*) FROM input_sms") != size:
            await owner.execute("TRUNCATE input_sms, sms_monitor, out_sms")
            await owner.execute(FILL_SERIES, size)
            # Nine tenths judged: a batch reads the rows after that checkpoint.
            await owner.execute(JUDGE_SERIES, await checkpoint_of(owner, size))
            await owner.execute("VACUUM ANALYZE input_sms")
            await owner.execute("VACUUM ANALYZE sms_monitor")
        checkpoint = await checkpoint_of(owner, size)
        print(f"\n== {size} rows in input_sms (filled in {time.perf_counter() - started:.0f} s)")
        # One worker holding half the partitions, as with two workers.
        mine = [checkpoint if p % 2 == 0 else UUID(int=2**128 - 1) for p in range(partitions)]
        sweep = [checkpoint if p % 2 == 0 else UUID(int=0) for p in range(partitions)]
        for name, query, args in (
            ("batch", sql.FETCH_BATCH, (checkpoint, datetime.now(UTC), 1000, mine, partitions)),
            ("sweep", sql.FETCH_SWEEP, (checkpoint, 10.0, 1000, sweep, partitions, checkpoint)),
        ):
            plan = await owner.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", *args)
            print(f"-- {name}")
            for row in plan:
                print("  " + row[0])
    await owner.close()


async def checkpoint_of(owner: asyncpg.Connection, size: int) -> UUID:
    checkpoint: UUID = await owner.fetchval(
        "SELECT uuid FROM input_sms ORDER BY uuid OFFSET $1 LIMIT 1", size * 9 // 10
    )
    return checkpoint


FILL_FORWARDED = """
WITH senders AS (
    SELECT '4475' || lpad(g::text, 8, '0') AS sender_number FROM generate_series(1, $1::int) g
)
INSERT INTO forwarded_senders (sender_number, partition_no, seq, first_uuid)
SELECT sender_number, p, row_number() OVER (PARTITION BY p ORDER BY sender_number),
       uuid_v7_lower_bound(now() - interval '1 day')
FROM (SELECT sender_number, sms_sender_partition(sender_number, $2) AS p FROM senders) s
"""
SET_SEQS = """
UPDATE validator_partitions p SET forwarded_seq = f.last
FROM (SELECT partition_no, max(seq) AS last FROM forwarded_senders GROUP BY 1) f
WHERE f.partition_no = p.partition_no
"""


async def time_to_judge(config: StackConfig, owner: asyncpg.Connection, label: str) -> float:
    """Start the validator as it ships, send one SMS from a sender already forwarded, and time
    until it is judged (a duplicate); returns seconds."""
    await owner.execute(
        "TRUNCATE input_sms, sms_monitor, out_sms; TRUNCATE validator_workers; "
        "UPDATE validator_partitions SET owner = NULL, lease_expires_at = '-infinity'"
    )
    await owner.execute(
        "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
        "VALUES ('447500000001', 'ABC 0123456789abcdef +447500000001', now())"
    )
    env = {**os.environ, **config.service_env("validator"), "SMSGW_LOG_FORMAT": "json"}
    env.pop("SMSGW_PROCESSES", None)
    executable = Path(sys.executable).with_name("sms-validator")
    log = Path(config.state_dir) / "bench-validator-recovery.log"
    started = time.perf_counter()
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: ASYNC220 (the start is what is timed)
            [str(executable)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            verdict = await owner.fetchval("SELECT failed_at_check FROM sms_monitor LIMIT 1")
            if verdict is not None:
                break
            if process.poll() is not None:
                raise SystemExit(f"sms-validator exited; see {log}")
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(40)
    assert verdict == "duplicate", verdict
    print(f"  {label:<55}{seconds:8.2f} s")
    return seconds


async def recovery(config: StackConfig, senders: int, lag: int) -> None:
    from redis import asyncio as aioredis  # noqa: PLC0415
    from services.validator.index import MARKS_KEY, SET_KEY  # noqa: PLC0415

    owner = await asyncpg.connect(config.admin_url_for(config.db_name))
    redis = aioredis.Redis(
        port=config.redis_port, password=config.redis_password, decode_responses=True
    )
    partitions = int(await owner.fetchval(sql.PARTITION_COUNT))
    await owner.execute("TRUNCATE input_sms, sms_monitor, out_sms")
    await owner.execute(RESET)
    started = time.perf_counter()
    await owner.execute(FILL_FORWARDED, senders, partitions)
    await owner.execute(SET_SEQS)
    await owner.execute("VACUUM ANALYZE forwarded_senders")
    print(
        f"{senders} forwarded senders in {partitions} partitions "
        f"(filled in {time.perf_counter() - started:.0f} s); one process per core"
    )
    await redis.flushdb()
    empty = await time_to_judge(config, owner, "index empty (rebuilt from the database)")
    memory = int((await redis.info("memory"))["used_memory"])
    print(
        f"  Redis: {await redis.scard(SET_KEY)} members, {memory / 2**20:.0f} MiB, "
        f"{memory / max(1, senders):.0f} bytes per sender"
    )
    complete = await time_to_judge(config, owner, "index complete (the baseline)")
    # A Redis restored from an older snapshot: each partition's latest senders gone, `lag` in all.
    per_partition = lag // partitions
    rows = await owner.fetch(
        "SELECT f.sender_number FROM forwarded_senders f JOIN validator_partitions p "
        "USING (partition_no) WHERE f.seq > p.forwarded_seq - $1",
        per_partition,
    )
    for start in range(0, len(rows), 10_000):
        await redis.srem(SET_KEY, *(r["sender_number"] for r in rows[start : start + 10_000]))
    marks = await redis.hgetall(MARKS_KEY)
    await redis.hset(
        MARKS_KEY,
        mapping={
            str(k): int(v) - per_partition for k, v in marks.items() if str(k).startswith("p")
        },
    )
    behind = await time_to_judge(config, owner, f"index {len(rows)} senders behind (caught up)")
    print(
        f"  ratios to the baseline: behind {behind / complete:.1f}x, empty {empty / complete:.1f}x"
    )
    await redis.aclose()
    await owner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drain_parser = commands.add_parser("drain", help="the real validator draining a backlog")
    drain_parser.add_argument("--sms", type=int, default=200_000)
    drain_parser.add_argument("--batch-size", type=int, default=1000)
    drain_parser.add_argument("--configs", default="1x1,1x2,2x1,default")
    drain_parser.add_argument("--otlp", default=None, help="OTLP/HTTP endpoint: tracing on")
    drain_parser.add_argument("--rounds", type=int, default=1, help="drains of each config")
    plans_parser = commands.add_parser("plans", help="EXPLAIN a batch's read at table sizes")
    plans_parser.add_argument("--sizes", default="1000,10000000")
    recovery_parser = commands.add_parser("recovery", help="time to judge after a restart")
    recovery_parser.add_argument("--senders", type=int, default=3_000_000)
    recovery_parser.add_argument("--lag", type=int, default=100_000)
    args = parser.parse_args()
    config = StackConfig()
    if not config.db_name.startswith("smsgw_bench"):
        raise SystemExit("refusing: SMSGW_DB_NAME must start with smsgw_bench (it is emptied)")
    if args.command == "drain":
        asyncio.run(
            drain(
                config,
                args.sms,
                args.configs.split(","),
                args.batch_size,
                args.otlp,
                args.rounds,
            )
        )
    elif args.command == "plans":
        asyncio.run(plans(config, [int(n) for n in args.sizes.split(",")]))
    else:
        asyncio.run(recovery(config, args.senders, args.lag))


if __name__ == "__main__":
    main()
