"""Receiver throughput at the shipped defaults, against its baselines, in one run:

    .venv/bin/python -m bench.receiver_bench [--duration 10] [--rounds 2] [--connections 32,128]

Starts a stack of its own (`sms-stack up --infra-only`: its own state directory, database,
pgbouncer and Redis; no validator, so nothing is judged meanwhile: "validator paused") and an
OTLP/HTTP collector stand-in (bench/otlp_sink.py), then, one after the other in each round:

* the two baselines of bench/receiver_baselines.py (no database; one INSERT and one commit per
  request), each under gunicorn with 2 uvicorn workers;
* `sms-receiver` at its shipped defaults (one process per core), tracing every SMS to the
  stand-in, and the same with tracing off;

each loaded with the same wrk script (bench/receiver_post.lua) at every connection count; a
server's figure is the best of its connection counts. Then the batch endpoint (1000 SMS per
request, bench/receiver_batch.lua, tracing on and off) against COPY of the same rows into
input_sms (1000 rows per COPY, as many concurrent copies as the batch load has connections,
as the receiver's role through the same pgbouncer). Reports every measurement, the medians over
rounds and the ratios; stops everything it started. Other work on the machine makes single
numbers noisy: compare the ratios, which are measured in the same run.

The batch and COPY measurements also count the CPU time (/proc) each spends per 1000 SMS: the
receiver's processes or the COPY clients (this process), pgbouncer, and the PostgreSQL backends
of the benchmark's database; the load generator and the collector stand-in are left out. On a
machine shared with other work, throughput follows the share of the cores each load gets (eight
COPY backends compete for them better than a pipeline through the receiver); CPU per SMS does
not, so "COPY's CPU / the batch's CPU" is the ratio the batch would reach with the cores to
itself.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STACK = {
    "SMSGW_STACK_DIR": str(ROOT / os.environ.get("BENCH_STACK_DIR", ".stack-bench-receiver")),
    "SMSGW_DB_NAME": os.environ.get("BENCH_DB_NAME", "smsgw_bench_receiver"),
    "SMSGW_PGBOUNCER_PORT": os.environ.get("BENCH_PGBOUNCER_PORT", "6503"),
    "SMSGW_REDIS_PORT": os.environ.get("BENCH_REDIS_PORT", "6513"),
}
PORT = int(os.environ.get("BENCH_HTTP_PORT", "8130"))
SINK_PORT = PORT + 3
BATCH_ITEMS = 1000
PG_ADMIN_URL = os.environ.get("SMSGW_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Endpoint:
    name: str
    command: Callable[[int], list[str]]  # the server's command line for a port
    probe: str  # a GET path that answers 2xx once the server is up
    environment: dict[str, str] = field(default_factory=dict)


def _gunicorn(factory: str) -> Callable[[int], list[str]]:
    """A baseline app under gunicorn with 2 uvicorn workers (the issue's reference setup)."""
    return lambda port: [
        str(BIN / "gunicorn"),
        f"bench.receiver_baselines:{factory}()",
        "--workers",
        "2",
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "--log-level",
        "warning",
    ]


def _receiver(_: int) -> list[str]:
    return [str(BIN / "sms-receiver")]  # the port comes from SMSGW_HTTP_PORT


TRACED = {"SMSGW_OTLP_ENDPOINT": f"http://127.0.0.1:{SINK_PORT}"}
NO_DATABASE = "no database, 2 workers"
NAIVE = "one INSERT per request, 2 workers"
RECEIVER_TRACED = "receiver, shipped defaults, tracing on"
RECEIVER_UNTRACED = "receiver, shipped defaults, tracing off"
ENDPOINTS = [
    Endpoint(NO_DATABASE, _gunicorn("no_database_app"), "/docs"),
    Endpoint(NAIVE, _gunicorn("naive_app"), "/docs"),
    Endpoint(RECEIVER_TRACED, _receiver, "/ready", TRACED),
    Endpoint(RECEIVER_UNTRACED, _receiver, "/ready"),
]
BATCH_TRACED = "batch, tracing on"
BATCH_UNTRACED = "batch, tracing off"
COPY = "COPY"


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


# ---------------------------------------------------------------------------- CPU accounting


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # the process has ended
        return None


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far (/proc/PID/stat utime + stime)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (a gunicorn master and its workers)."""
    children = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (_stat_fields(int(entry.name)) or ["", ""])[1] == str(pid)
    ]
    return [pid, *children]


def pgbouncer_pid() -> int:
    return int((Path(STACK["SMSGW_STACK_DIR"]) / "pgbouncer" / "pgbouncer.pid").read_text())


async def _backends() -> list[int]:
    admin = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + STACK["SMSGW_DB_NAME"]
    connection = await asyncpg.connect(admin)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            STACK["SMSGW_DB_NAME"],
        )
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds spent during one measurement, by part."""

    service: float  # the receiver's processes, or the COPY clients
    pgbouncer: float
    postgres: float

    @property
    def total(self) -> float:
        return self.service + self.pgbouncer + self.postgres


class CpuMeter:
    """CPU time of the service's processes, pgbouncer and the database's backends between
    `start` and `stop` (backends as they are at `start`: pgbouncer keeps its server
    connections, so a warmed-up load uses the same ones throughout)."""

    def __init__(self, service: Callable[[], float]) -> None:
        self._service = service
        self._pids: dict[str, list[int]] = {}
        self._before: dict[str, float] = {}

    def start(self, backends: list[int]) -> None:
        self._pids = {"pgbouncer": [pgbouncer_pid()], "postgres": backends}
        self._before = self._read()

    def _read(self) -> dict[str, float]:
        found = {name: cpu_seconds(pids) for name, pids in self._pids.items()}
        found["service"] = self._service()
        return found

    def stop(self) -> CpuUse:
        after = self._read()
        used = {name: after[name] - self._before[name] for name in after}
        return CpuUse(used["service"], used["pgbouncer"], used["postgres"])


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stack(command: str) -> None:
    subprocess.run(
        [str(BIN / "sms-stack"), *command.split()],
        check=True,
        cwd=ROOT,
        env={**os.environ, **STACK},
        stdout=subprocess.DEVNULL,
    )


def _service_environment() -> dict[str, str]:
    output = subprocess.run(
        [str(BIN / "sms-stack"), "env"],
        check=True,
        cwd=ROOT,
        env={**os.environ, **STACK},
        capture_output=True,
        text=True,
    ).stdout
    found = dict(re.findall(r"^export RECEIVER_(SMSGW_\w+)=(.*)$", output, re.MULTILINE))
    return {name: value.strip("'") for name, value in found.items()}


def _wait_up(port: int, path: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"server on {port} did not come up")


def wrk(port: int, duration: int, connections: int, script: str = "receiver_post.lua") -> Result:
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(ROOT / "bench" / script),
            f"http://127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return Result(
        rps,
        percentile(output, "50%"),
        percentile(output, "99%"),
        int(errors.group(1)) if errors else 0,
    )


def percentile(output: str, label: str) -> float:
    match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    assert match is not None, output
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def start_server(
    endpoint: Endpoint, port: int, environment: dict[str, str]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        endpoint.command(port),
        cwd=ROOT,
        env={
            **os.environ,
            **environment,
            **endpoint.environment,
            "SMSGW_HTTP_PORT": str(port),
            "SMSGW_LOG_FORMAT": "text",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_up(port, endpoint.probe, process)
    return process


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=40)


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    time.sleep(1)
    return sink


def stop_sink(sink: subprocess.Popen[bytes]) -> str:
    sink.send_signal(signal.SIGTERM)
    output, _ = sink.communicate(timeout=10)
    return output.decode().strip()


def _measure(
    endpoint: Endpoint,
    port: int,
    environment: dict[str, str],
    *,
    duration: int,
    connections: list[int],
    script: str = "receiver_post.lua",
) -> dict[int, Result]:
    results, _ = _measure_with_cpu(
        endpoint,
        port,
        environment,
        duration=duration,
        connections=connections,
        script=script,
        count_cpu=False,
    )
    return results


def _measure_with_cpu(
    endpoint: Endpoint,
    port: int,
    environment: dict[str, str],
    *,
    duration: int,
    connections: list[int],
    script: str,
    count_cpu: bool = True,
) -> tuple[dict[int, Result], dict[int, CpuUse]]:
    process = start_server(endpoint, port, environment)
    try:
        wrk(port, 2, connections[0], script)  # warm-up: pools, caches
        results: dict[int, Result] = {}
        used: dict[int, CpuUse] = {}
        for count in connections:
            meter = CpuMeter(functools.partial(cpu_seconds, process_tree(process.pid)))
            if count_cpu:
                meter.start(asyncio.run(_backends()))
            results[count] = wrk(port, duration, count, script)
            if count_cpu:
                used[count] = meter.stop()
        return results, used
    finally:
        stop_server(process)


async def copy_rows_per_second(
    url: str, *, duration: int, connections: int
) -> tuple[float, CpuUse]:
    """COPY 1000-row chunks into input_sms from `connections` concurrent clients for
    `duration` seconds (the same rows the batch script sends), after a 2 s warm-up; rows
    committed per second, and the CPU it took (the clients are this process)."""
    moment = datetime(2024, 6, 22, 13, 46, 11, tzinfo=UTC)
    rows = [
        (f"1555{i:07d}", f"ACME {i:016x} +1555{i:07d}", moment, "api-batch")
        for i in range(1, BATCH_ITEMS + 1)
    ]
    columns = ["sender_number", "sms_message", "received_timestamp", "source"]
    copied = 0

    async def client(connection: asyncpg.Connection, deadline: float) -> None:
        nonlocal copied
        while time.monotonic() < deadline:
            await connection.copy_records_to_table("input_sms", records=rows, columns=columns)
            copied += len(rows)

    clients = [await asyncpg.connect(url, statement_cache_size=0) for _ in range(connections)]
    try:
        warm_up = time.monotonic() + 2
        await asyncio.gather(*(client(connection, warm_up) for connection in clients))
        meter = CpuMeter(_own_cpu_seconds)
        meter.start(await _backends())
        copied = 0
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(*(client(connection, deadline) for connection in clients))
        elapsed = time.monotonic() - started
        used = meter.stop()
    finally:
        for connection in clients:
            await connection.close()
    return copied / elapsed, used


def _per_1000(used: CpuUse, sms: float) -> CpuUse:
    """CPU milliseconds per 1000 SMS."""
    scale = 1_000_000 / sms if sms else 0.0
    return CpuUse(used.service * scale, used.pgbouncer * scale, used.postgres * scale)


def _cpu_text(per_1000: CpuUse) -> str:
    return (
        f"CPU ms/1000: service {per_1000.service:.2f} pgbouncer {per_1000.pgbouncer:.2f} "
        f"postgres {per_1000.postgres:.2f} total {per_1000.total:.2f}"
    )


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _row(name: str, results: list[Result], per: int = 1) -> str:
    return (
        f"| {name} | {statistics.median(r.requests_per_second for r in results) * per:,.0f} | "
        f"{statistics.median(r.p50_ms for r in results):.2f} | "
        f"{statistics.median(r.p99_ms for r in results):.2f} | {sum(r.errors for r in results)} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", default="32,128", help="comma-separated counts")
    parser.add_argument(
        "--batch-connections", type=int, default=8, help="batch requests (and COPYs) in flight"
    )
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--only-batch", action="store_true", help="the batch and COPY only")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]

    _stack("up --infra-only")
    sink = start_sink(SINK_PORT)
    best: dict[str, list[Result]] = {e.name: [] for e in ENDPOINTS}
    batch: dict[str, list[Result]] = {BATCH_TRACED: [], BATCH_UNTRACED: []}
    copies: list[float] = []
    cpu_per_1000: dict[str, list[CpuUse]] = {BATCH_TRACED: [], BATCH_UNTRACED: [], COPY: []}
    print(f"load average at the start: {_load_average()}", flush=True)
    try:
        environment = _service_environment()
        for round_number in range(1, args.rounds + 1):
            for offset, endpoint in enumerate([] if args.only_batch else ENDPOINTS):
                results = _measure(
                    endpoint,
                    PORT + offset % 3,
                    environment,
                    duration=args.duration,
                    connections=connections,
                )
                for count, result in results.items():
                    print(
                        f"round {round_number} {endpoint.name:40} c{count:<4} "
                        f"{result.requests_per_second:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                        f"p99 {result.p99_ms:7.2f} ms  non-2xx {result.errors}",
                        flush=True,
                    )
                best[endpoint.name].append(
                    max(results.values(), key=lambda r: r.requests_per_second)
                )
            if args.skip_batch:
                continue
            for name, base in ((BATCH_TRACED, ENDPOINTS[2]), (BATCH_UNTRACED, ENDPOINTS[3])):
                results, used = _measure_with_cpu(
                    base,
                    PORT,
                    environment,
                    duration=args.duration,
                    connections=[args.batch_connections],
                    script="receiver_batch.lua",
                )
                (result,) = results.values()
                (cpu,) = used.values()
                batch[name].append(result)
                sms = result.requests_per_second * BATCH_ITEMS * args.duration
                cpu_per_1000[name].append(_per_1000(cpu, sms))
                print(
                    f"round {round_number} {name:40} c{args.batch_connections:<4} "
                    f"{result.requests_per_second * BATCH_ITEMS:9.0f} SMS/s  "
                    f"p99 {result.p99_ms:7.2f} ms  non-2xx {result.errors}  "
                    f"{_cpu_text(cpu_per_1000[name][-1])}",
                    flush=True,
                )
            rate, cpu = asyncio.run(
                copy_rows_per_second(
                    environment["SMSGW_DATABASE_URL"],
                    duration=args.duration,
                    connections=args.batch_connections,
                )
            )
            copies.append(rate)
            cpu_per_1000[COPY].append(_per_1000(cpu, rate * args.duration))
            print(
                f"round {round_number} {COPY:40} c{args.batch_connections:<4} {rate:9.0f} rows/s  "
                f"{_cpu_text(cpu_per_1000[COPY][-1])}",
                flush=True,
            )
    finally:
        print(stop_sink(sink))
        _stack("down")

    medians: dict[str, float] = {}
    if not args.only_batch:
        print(
            f"\nmedian of {args.rounds} rounds, each the best of wrk -t2 -c{args.connections} "
            f"-d{args.duration}s:"
        )
        print("| server | requests/s | p50 ms | p99 ms | non-2xx |\n|---|---:|---:|---:|---:|")
        for name, runs in best.items():
            medians[name] = statistics.median(r.requests_per_second for r in runs)
            print(_row(name, runs))
        print()
        for ours, other in (
            (RECEIVER_TRACED, NAIVE),
            (RECEIVER_TRACED, NO_DATABASE),
            (RECEIVER_TRACED, RECEIVER_UNTRACED),
            (RECEIVER_UNTRACED, NAIVE),
        ):
            print(f"{ours} / {other}: {medians[ours] / medians[other]:.2f}x")
    if not args.skip_batch:
        print(f"\nbatch of {BATCH_ITEMS}, {args.batch_connections} in flight (SMS/s):")
        print("| load | SMS/s | p50 ms | p99 ms | non-2xx |\n|---|---:|---:|---:|---:|")
        for name, runs in batch.items():
            medians[name] = statistics.median(r.requests_per_second for r in runs) * BATCH_ITEMS
            print(_row(name, runs, BATCH_ITEMS))
        medians[COPY] = statistics.median(copies)
        print(f"| {COPY} | {medians[COPY]:,.0f} | | | |\n")
        for ours, other in ((BATCH_TRACED, COPY), (BATCH_UNTRACED, COPY)):
            # Also each round's own ratio: its batch and COPY ran within a minute of each other.
            per_round = [
                r.requests_per_second * BATCH_ITEMS / copy
                for r, copy in zip(batch[ours], copies, strict=True)
            ]
            print(
                f"{ours} / {other}: {medians[ours] / medians[other]:.2f}x (medians); "
                f"rounds {' '.join(f'{ratio:.2f}' for ratio in per_round)}, "
                f"median {statistics.median(per_round):.2f}x"
            )
        print(
            "\nCPU ms per 1000 SMS, median of rounds (service = receiver or COPY clients):\n"
            "| load | service | pgbouncer | postgres | total |\n|---|---:|---:|---:|---:|"
        )
        totals: dict[str, float] = {}
        for name, uses in cpu_per_1000.items():
            median = CpuUse(
                statistics.median(u.service for u in uses),
                statistics.median(u.pgbouncer for u in uses),
                statistics.median(u.postgres for u in uses),
            )
            totals[name] = statistics.median(u.total for u in uses)
            print(
                f"| {name} | {median.service:.2f} | {median.pgbouncer:.2f} | "
                f"{median.postgres:.2f} | {totals[name]:.2f} |"
            )
        for ours in (BATCH_TRACED, BATCH_UNTRACED):
            print(f"COPY's CPU / {ours}'s CPU: {totals[COPY] / totals[ours]:.2f}x")
    print(f"\nload average at the end: {_load_average()}")
    refused = {
        name: sum(r.errors for r in runs)
        for name, runs in [*best.items(), *batch.items()]
        if any(r.errors for r in runs)
    }
    if refused:
        # A refused request is answered fast: a rate that counts them measures nothing.
        print(f"\nINVALID: non-2xx answers were counted as served: {refused}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
