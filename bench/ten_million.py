"""Ten million SMS through the gateway as it ships: in through the receiver's batch endpoint,
judged by the validator, with every process at its shipped defaults and tracing on.

Steps, each reported as it runs:
1. The validator's drain rate on empty tables: a backlog of `--probe` SMS COPYed in, drained
   by `sms-validator` (bench/validator_throughput.py's workload and measure).
2. The receiver and the validator start as `./stack` starts them (one process per core each,
   tracing to an OTLP collector stand-in, bench/otlp_sink.py); `--clients` concurrent clients
   POST `/sms/receive/batch` with 1,000 SMS each until `--sms` are acknowledged, while the
   validator judges. Every 5 s: SMS acknowledged and judged, the backlog's age, the RSS of each
   service's processes.
3. When everything is judged: total time, peak RSS per service, size per table, Redis memory
   per sender, the largest backlog age; SMS/s over time as a PNG plot (`--plot`).
4. The drain rate again, with ten million rows in the tables: the ratio to step 1.
`--drain-again ROUND` repeats step 4 alone on the finished run's database (each round with new
senders), to be alternated with `bench.validator_throughput drain` on empty tables under the
same load.

    export SMSGW_STACK_DIR=.stack-bench-10m SMSGW_PGBOUNCER_PORT=6503 SMSGW_REDIS_PORT=6513 \\
           SMSGW_DB_NAME=smsgw_bench_10m SMSGW_RECEIVER_PORT=8590 SMSGW_VALIDATOR_PORT=8591
    .venv/bin/pip install -c constraints.txt -e '.[bench]'
    .venv/bin/sms-stack up --infra-only
    .venv/bin/python -m bench.ten_million --sms 10000000 --plot docs/ten_million.png
    .venv/bin/sms-stack down

It refuses any database whose name does not start with `smsgw_bench`: it empties the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench.validator_throughput import (
    RESET,
    cpu_seconds,
    drain_once,
    postgres_processes,
    processes_of_session,
    workload,
)
from services.validator import sql
from sms_gateway.devstack import StackConfig

SAMPLE_SECONDS = 5.0
BATCH = 1000
SINK_PORT = 4399
BATCH_SETTINGS = {"batch_size": "1000"}


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    peak_rss: int = 0

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, rss_bytes(processes_of_session(self.process.pid)))

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(40)


def start(config: StackConfig, service: str, otlp: str, log_dir: Path) -> Service:
    env = {**os.environ, **config.service_env(service), "SMSGW_LOG_FORMAT": "json"}
    env.pop("SMSGW_PROCESSES", None)  # the shipped default: one process per core
    env["SMSGW_OTLP_ENDPOINT"] = otlp
    executable = Path(sys.executable).with_name(f"sms-{service}")
    with (log_dir / f"ten-million-{service}.log").open("wb") as output:
        process = subprocess.Popen(
            [str(executable)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(service, process)


def bodies(total: int) -> list[bytes]:
    """The batch bodies, made before the clock starts: the workload of the drain benchmark with
    a fresh sender range (4476...), received now."""
    items: list[bytes] = []
    batch: list[dict[str, str]] = []
    for sender, message, received in workload(total, seed=10):
        batch.append(
            {
                "sender_number": "4476" + sender[4:],
                "sms_message": message.replace(sender, "4476" + sender[4:]),
                "received_timestamp": received.isoformat(),
            }
        )
        if len(batch) == BATCH:
            items.append(json.dumps(batch).encode())
            batch = []
    if batch:
        items.append(json.dumps(batch).encode())
    return items


@dataclass
class Progress:
    started: float = field(default_factory=time.perf_counter)
    acknowledged: int = 0
    refused: int = 0
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)


async def ingest(port: int, queue: asyncio.Queue[bytes], progress: Progress) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            while True:
                response = await client.post(
                    "/sms/receive/batch",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code == 202:
                    progress.acknowledged += len(response.json()["uuids"])
                    break
                progress.refused += 1  # 503: retry, as a client would
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def judged(owner: asyncpg.Connection) -> int:
    # The admin's exact per-status counters: reading them costs nothing at ten million rows.
    return int(await owner.fetchval("SELECT coalesce(sum(sms_count), 0) FROM sms_status_counts"))


async def backlog_age(owner: asyncpg.Connection) -> float:
    # The checkpoint as a value, as the validator's own gauge reads it: joined in as a subquery
    # it was no index bound, and the query read the primary key from its start (5 s a poll).
    checkpoint = await owner.fetchval(sql.LOWEST_CHECKPOINT)
    oldest = await owner.fetchval(
        "SELECT created_at FROM input_sms WHERE uuid > $1 ORDER BY uuid LIMIT 1", checkpoint
    )
    return (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0


async def run(config: StackConfig, total: int, clients: int, probe: int, plot: Path) -> None:
    owner = await asyncpg.connect(config.admin_url_for(config.db_name))
    log_dir = Path(config.state_dir)
    await owner.executemany(
        "UPDATE system_settings SET setting_value = $2 WHERE setting_key = $1",
        list(BATCH_SETTINGS.items()),
    )
    print(f"== 1. the validator's drain rate on empty tables ({probe} SMS)")
    await owner.execute("TRUNCATE input_sms, sms_monitor, out_sms")
    await owner.copy_records_to_table(
        "input_sms",
        columns=["sender_number", "sms_message", "received_timestamp"],
        records=list(workload(probe)),
    )
    empty = await drain_once(config, owner, "default", probe, 1000, None)
    print(f"   {empty.rate:.0f} SMS/s")
    await owner.execute("TRUNCATE input_sms, sms_monitor, out_sms")
    await owner.execute(RESET)
    await owner.execute("CHECKPOINT")

    print(f"== 2. {total} SMS through the receiver's batch endpoint, {clients} clients")
    sink = subprocess.Popen(  # noqa: ASYNC220 (started before the clock)
        [sys.executable, "-m", "bench.otlp_sink", "--port", str(SINK_PORT)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    otlp = f"http://127.0.0.1:{SINK_PORT}"
    services = [start(config, name, otlp, log_dir) for name in ("receiver", "validator")]
    made = time.perf_counter()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies(total):
        queue.put_nowait(body)
    print(f"   {queue.qsize()} bodies made in {time.perf_counter() - made:.0f} s")
    async with httpx.AsyncClient() as probe_client:
        for _ in range(200):
            try:
                if (
                    await probe_client.get(f"http://127.0.0.1:{config.receiver_port}/ready")
                ).is_success:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    progress = Progress()
    senders = [
        asyncio.create_task(ingest(config.receiver_port, queue, progress)) for _ in range(clients)
    ]
    largest_age = 0.0
    done = 0
    try:
        while done < total:
            await asyncio.sleep(SAMPLE_SECONDS)
            for service in services:
                if service.process.poll() is not None:
                    raise SystemExit(f"sms-{service.name} exited; see {log_dir}")
                service.sample()
            done = await judged(owner)
            age = await backlog_age(owner)
            largest_age = max(largest_age, age)
            elapsed = time.perf_counter() - progress.started
            progress.samples.append((elapsed, progress.acknowledged, done, age))
            print(
                f"   {elapsed:7.0f} s  acknowledged {progress.acknowledged:>10}  "
                f"judged {done:>10}  backlog age {age:6.1f} s  503s {progress.refused}",
                flush=True,
            )
        await asyncio.gather(*senders)
        wall = time.perf_counter() - progress.started
    finally:
        for service in services:
            service.stop()
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)

    print("== 3. results")
    print(
        f"   total: {total} SMS acknowledged and judged in {wall:.0f} s ({total / wall:.0f} SMS/s)"
    )
    for service in services:
        peak = service.peak_rss / 2**20
        print(f"   peak RSS sms-{service.name} (all its processes): {peak:.0f} MiB")
    print(f"   largest backlog age: {largest_age:.1f} s")
    rows = await owner.fetch(
        "SELECT relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC"
    )
    for row in rows:
        if row["bytes"] > 2**20:
            print(f"   {row['relname']:<22}{row['bytes'] / 2**30:8.2f} GiB")
    from redis import asyncio as aioredis  # noqa: PLC0415

    redis = aioredis.Redis(port=config.redis_port, password=config.redis_password)
    members = await redis.scard("out_sms_numbers")
    memory = int((await redis.info("memory"))["used_memory"])
    per_sender = memory / max(members, 1)
    print(
        f"   Redis: {members} senders, {memory / 2**20:.0f} MiB, {per_sender:.0f} bytes per sender"
    )
    await redis.aclose()
    draw(progress, plot)
    print(f"   plot: {plot}")

    print(f"== 4. the validator's drain rate with {total} rows in the tables ({probe} SMS)")
    full = await probe_full(config, owner, probe, prefix=PROBE_PREFIXES[0])
    print(f"   {full:.0f} SMS/s: {full / empty.rate:.2f} of the rate on empty tables")
    await owner.close()


# Senders of the probes after the run: UK mobile ranges the run's own senders (4474...) do not
# use, one per probe, so that every probe's senders are new.
PROBE_PREFIXES = ("4477", "4478", "4479", "4475", "4471", "4472", "4473")


async def probe_full(
    config: StackConfig, owner: asyncpg.Connection, probe: int, *, prefix: str
) -> float:
    """COPY `probe` SMS of new senders beside what the tables hold and drain them."""
    await owner.copy_records_to_table(
        "input_sms",
        columns=["sender_number", "sms_message", "received_timestamp"],
        records=[
            (prefix + s[4:], m.replace(s, prefix + s[4:]), r) for s, m, r in workload(probe, seed=3)
        ],
    )
    await owner.execute("VACUUM ANALYZE input_sms")
    return await drain_after(config, owner, probe)


async def drain_again(config: StackConfig, probe: int, round_: int) -> None:
    """Step 4 alone, on a database that holds a finished run: for measuring the rate with ten
    million rows back to back with an empty database (`bench.validator_throughput drain`)."""
    owner = await asyncpg.connect(config.admin_url_for(config.db_name))
    rows = await judged(owner)
    rate = await probe_full(config, owner, probe, prefix=PROBE_PREFIXES[round_])
    print(f"the validator's drain rate with {rows} judged rows in the tables: {rate:.0f} SMS/s")
    await owner.close()


async def drain_after(config: StackConfig, owner: asyncpg.Connection, probe: int) -> float:
    """Drain the `probe` newest SMS (the rest are judged) with the shipped validator."""
    env = {**os.environ, **config.service_env("validator"), "SMSGW_LOG_FORMAT": "json"}
    env.pop("SMSGW_PROCESSES", None)
    before = await judged(owner)
    started = datetime.now(UTC)
    with (Path(config.state_dir) / "ten-million-drain.log").open("wb") as output:
        process = subprocess.Popen(  # noqa: ASYNC220 (started before the clock)
            [str(Path(sys.executable).with_name("sms-validator"))],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    postgres = {pid: cpu_seconds([pid]) for pid in postgres_processes(config.db_name)}
    validator_cpu = 0.0
    try:
        while await judged(owner) < before + probe:
            await asyncio.sleep(0.5)
            validator_cpu = max(validator_cpu, cpu_seconds(processes_of_session(process.pid)))
            for pid in postgres_processes(config.db_name):
                postgres.setdefault(pid, 0.0)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(40)
    postgres_cpu = sum(cpu_seconds([pid]) - first for pid, first in postgres.items())
    print(
        f"   CPU per SMS: validator {validator_cpu / probe * 1e6:.1f} µs, "
        f"PostgreSQL {postgres_cpu / probe * 1e6:.1f} µs"
    )
    span = await owner.fetchval(
        "SELECT extract(epoch FROM max(processing_completed_at) - min(processing_started_at)) "
        "FROM sms_monitor WHERE processing_started_at >= $1",
        started,
    )
    return probe / float(span)


def draw(progress: Progress, plot: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    times = [s[0] for s in progress.samples]
    received = [0.0] + [
        (b[1] - a[1]) / (b[0] - a[0])
        for a, b in zip(progress.samples, progress.samples[1:], strict=False)
    ]
    judged_rate = [0.0] + [
        (b[2] - a[2]) / (b[0] - a[0])
        for a, b in zip(progress.samples, progress.samples[1:], strict=False)
    ]
    figure, (rates, ages) = pyplot.subplots(2, 1, figsize=(10, 7), sharex=True)
    rates.plot(times, received, label="acknowledged by the receiver")
    rates.plot(times, judged_rate, label="judged by the validator")
    rates.set_ylabel("SMS/s")
    rates.legend()
    rates.grid(True)
    ages.plot(times, [s[3] for s in progress.samples], color="tab:red")
    ages.set_ylabel("backlog age, s")
    ages.set_xlabel("seconds since the first request")
    ages.grid(True)
    figure.suptitle(f"{progress.samples[-1][2]} SMS at shipped defaults, tracing on")
    figure.tight_layout()
    figure.savefig(plot, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=10_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probe", type=int, default=200_000)
    parser.add_argument("--plot", type=Path, default=Path("docs/ten_million.png"))
    parser.add_argument(
        "--drain-again",
        type=int,
        choices=range(1, len(PROBE_PREFIXES)),
        metavar="ROUND",
        help="after a run: only step 4 again, with the ROUND-th new set of senders (1-6)",
    )
    args = parser.parse_args()
    config = StackConfig()
    if not config.db_name.startswith("smsgw_bench"):
        raise SystemExit("refusing: SMSGW_DB_NAME must start with smsgw_bench (it is emptied)")
    if args.drain_again:
        asyncio.run(drain_again(config, args.probe, args.drain_again))
    else:
        asyncio.run(run(config, args.sms, args.clients, args.probe, args.plot))


if __name__ == "__main__":
    main()
