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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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
    process = start_server(endpoint, port, environment)
    try:
        wrk(port, 2, connections[0], script)  # warm-up: pools, caches
        return {c: wrk(port, duration, c, script) for c in connections}
    finally:
        stop_server(process)


async def copy_rows_per_second(url: str, *, duration: int, connections: int) -> float:
    """COPY 1000-row chunks into input_sms from `connections` concurrent clients for
    `duration` seconds (the same rows the batch script sends); rows committed per second."""
    moment = datetime(2024, 6, 22, 13, 46, 11, tzinfo=UTC)
    rows = [
        (f"1555{i:07d}", f"ACME {i:016x} +1555{i:07d}", moment, "api-batch")
        for i in range(1, BATCH_ITEMS + 1)
    ]
    columns = ["sender_number", "sms_message", "received_timestamp", "source"]
    deadline = time.monotonic() + duration
    copied = 0

    async def client() -> None:
        nonlocal copied
        connection = await asyncpg.connect(url, statement_cache_size=0)
        try:
            while time.monotonic() < deadline:
                await connection.copy_records_to_table("input_sms", records=rows, columns=columns)
                copied += len(rows)
        finally:
            await connection.close()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(connections)))
    return copied / (time.monotonic() - started)


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
                (result,) = _measure(
                    base,
                    PORT,
                    environment,
                    duration=args.duration,
                    connections=[args.batch_connections],
                    script="receiver_batch.lua",
                ).values()
                batch[name].append(result)
                print(
                    f"round {round_number} {name:40} c{args.batch_connections:<4} "
                    f"{result.requests_per_second * BATCH_ITEMS:9.0f} SMS/s  "
                    f"p99 {result.p99_ms:7.2f} ms  non-2xx {result.errors}",
                    flush=True,
                )
            rate = asyncio.run(
                copy_rows_per_second(
                    environment["SMSGW_DATABASE_URL"],
                    duration=args.duration,
                    connections=args.batch_connections,
                )
            )
            copies.append(rate)
            print(f"round {round_number} {COPY:40} c{args.batch_connections:<4} {rate:9.0f} rows/s")
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
            print(f"{ours} / {other}: {medians[ours] / medians[other]:.2f}x")
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
