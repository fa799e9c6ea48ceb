"""Receiver throughput: group commit against one INSERT per request and against no database,
one and two worker processes.

    .venv/bin/python -m bench.receiver_bench [--duration 10] [--rounds 2] [--connections 32]

Starts a stack of its own (`sms-stack up --infra-only`: its own state directory, database,
pgbouncer and Redis), then serves, one after the other and each for every round:

* the two baselines of bench/receiver_baselines.py (no database; one INSERT and one commit per
  request), each under gunicorn with 2 uvicorn workers, as the issue measured them;
* `sms-receiver` as deployed with SMSGW_HTTP_WORKERS=1 (one uvicorn process) and =2 (gunicorn
  with 2 uvicorn workers, each with its own pool and group commit),

and loads each with the same wrk script (bench/receiver_post.lua). Reports requests/s, p50 and
p99 per endpoint and round, the median of each, and the ratios; stops everything it started.
Other work on the machine makes single numbers noisy: compare the ratios, which are measured
in the same run.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STACK = {
    "SMSGW_STACK_DIR": str(ROOT / ".stack-bench-receiver"),
    "SMSGW_DB_NAME": "smsgw_bench_receiver",
    "SMSGW_PGBOUNCER_PORT": "6503",
    "SMSGW_REDIS_PORT": "6513",
}
PORT = 8130


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


ENDPOINTS = [
    Endpoint("no database, 2 workers", _gunicorn("no_database_app"), "/docs"),
    Endpoint("one INSERT per request, 2 workers", _gunicorn("naive_app"), "/docs"),
    Endpoint("receiver, 1 worker", _receiver, "/ready", {"SMSGW_HTTP_WORKERS": "1"}),
    Endpoint("receiver, 2 workers", _receiver, "/ready", {"SMSGW_HTTP_WORKERS": "2"}),
]
NO_DATABASE, NAIVE, RECEIVER_1, RECEIVER_2 = (endpoint.name for endpoint in ENDPOINTS)


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


def _wrk(port: int, duration: int, connections: int) -> Result:
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "receiver_post.lua"),
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
        _percentile(output, "50%"),
        _percentile(output, "99%"),
        int(errors.group(1)) if errors else 0,
    )


def _percentile(output: str, label: str) -> float:
    match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    assert match is not None, output
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _measure(
    endpoint: Endpoint, port: int, environment: dict[str, str], *, duration: int, connections: int
) -> Result:
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
    try:
        _wait_up(port, endpoint.probe, process)
        _wrk(port, 2, connections)  # warm-up: pools, caches
        return _wrk(port, duration, connections)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    _stack("up --infra-only")
    try:
        environment = _service_environment()
        results: dict[str, list[Result]] = {e.name: [] for e in ENDPOINTS}
        for round_number in range(args.rounds):
            for offset, endpoint in enumerate(ENDPOINTS):
                result = _measure(
                    endpoint,
                    PORT + offset,
                    environment,
                    duration=args.duration,
                    connections=args.connections,
                )
                results[endpoint.name].append(result)
                print(
                    f"round {round_number + 1} {endpoint.name:34} "
                    f"{result.requests_per_second:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                    f"p99 {result.p99_ms:7.2f} ms  non-2xx {result.errors}",
                    flush=True,
                )
    finally:
        _stack("down")

    print(f"\nmedian of {args.rounds} rounds, wrk -t2 -c{args.connections} -d{args.duration}s:")
    print("| endpoint | requests/s | p50 ms | p99 ms | non-2xx |\n|---|---:|---:|---:|---:|")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(r.requests_per_second for r in runs)
        print(
            f"| {name} | {medians[name]:.0f} | "
            f"{statistics.median(r.p50_ms for r in runs):.2f} | "
            f"{statistics.median(r.p99_ms for r in runs):.2f} | "
            f"{sum(r.errors for r in runs)} |"
        )
    print()
    for ours, other in (
        (RECEIVER_2, NAIVE),
        (RECEIVER_2, NO_DATABASE),
        (RECEIVER_2, RECEIVER_1),
        (RECEIVER_1, NAIVE),
    ):
        print(f"{ours} / {other}: {medians[ours] / medians[other]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
