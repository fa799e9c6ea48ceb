"""End-to-end capacity at the shipped defaults: the highest ingest rate this machine sustains
for 60 s with the validator keeping up, tracing every SMS.

    .venv/bin/python -m bench.e2e_capacity [--rates 500,1000,1500,2000] [--duration 60]

Brings up the whole gateway with `sms-stack up` (receiver with one process per core, validator
and admin with their default settings: batch_size 20, parallel_workers 1), every service
exporting to an OTLP/HTTP collector stand-in (bench/otlp_sink.py). For each offered rate, wrk
holds rate/10 connections (at least 64), each pausing connections/rate s before its next
request (bench/e2e_post.lua: well-formed verification SMS from UK mobile senders, so most are
forwarded; a closed loop, so the achieved rate is below the offered one by the latency), for
`--duration` seconds, while the backlog (rows of input_sms without an sms_monitor row) is read
every 5 s. A rate is sustained when the backlog stays under 5 s of arrivals through the second
half of the run. Reports the achieved request rate, p50/p99 latency, the backlog samples and
the validator's rate; stops at the first rate not sustained (or after the last), lets the
backlog drain between rates, and takes the stack down. Uses the stack variables of the
environment (SMSGW_STACK_DIR, SMSGW_DB_NAME, SMSGW_*_PORT, SMSGW_OTLP_ENDPOINT's port is
SMSGW_ADMIN_PORT + 1). The database, SMSGW_DB_NAME, must be named smsgw_bench_*: it is dropped
and made anew at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.receiver_bench import percentile, start_sink, stop_sink

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Each connection pauses PAUSE_SECONDS between requests (closed loop: the pause plus the
# latency make its period), so a rate needs rate * PAUSE_SECONDS connections, at least 64.
PAUSE_SECONDS = 0.1
BENCH_DB_PREFIX = "smsgw_bench_"


@dataclass(frozen=True)
class Step:
    offered: int
    achieved: float
    p50_ms: float
    p99_ms: float
    errors: int
    backlog: list[int]
    judged_per_second: float

    @property
    def sustained(self) -> bool:
        """No error, and the backlog stayed under 5 s of arrivals through the second half (a
        validator that falls behind by more than ~10 % crosses that within the minute)."""
        second_half = self.backlog[len(self.backlog) // 2 :]
        return self.errors == 0 and max(second_half) < 5 * self.achieved


def _stack(command: str, environment: dict[str, str]) -> str:
    return subprocess.run(
        [str(BIN / "sms-stack"), *command.split()],
        check=True,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    ).stdout


async def _counts(url: str) -> tuple[int, int]:
    connection = await asyncpg.connect(url)
    try:
        stored = await connection.fetchval("SELECT count(*) FROM input_sms")
        judged = await connection.fetchval(
            "SELECT count(*) FROM sms_monitor WHERE overall_status <> 'pending'"
        )
        return int(stored), int(judged)
    finally:
        await connection.close()


def _step(rate: int, duration: int, receiver: str, owner_url: str) -> Step:
    connections = max(64, round(rate * PAUSE_SECONDS))
    environment = {**os.environ, "E2E_DELAY_MS": str(round(connections * 1000 / rate))}
    _, judged_before = asyncio.run(_counts(owner_url))
    started = time.monotonic()
    wrk = subprocess.Popen(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "e2e_post.lua"),
            receiver,
        ],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    backlog: list[int] = []
    while wrk.poll() is None:
        time.sleep(5)
        stored, judged = asyncio.run(_counts(owner_url))
        backlog.append(stored - judged)
    output = wrk.communicate()[0]
    elapsed = time.monotonic() - started
    _, judged_after = asyncio.run(_counts(owner_url))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return Step(
        rate,
        float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        percentile(output, "50%"),
        percentile(output, "99%"),
        int(errors.group(1)) if errors else 0,
        backlog,
        (judged_after - judged_before) / elapsed,
    )


async def _fresh_database(environment: dict[str, str]) -> None:
    """Start from an empty database of the bench's own (a backlog left by another run would be
    judged first)."""
    name = environment.get("SMSGW_DB_NAME", "")
    if not name.startswith(BENCH_DB_PREFIX):
        raise SystemExit(f"SMSGW_DB_NAME must start with {BENCH_DB_PREFIX!r}: it is dropped")
    admin = environment.get("SMSGW_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _set_batch_size(url: str, size: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "UPDATE system_settings SET setting_value = $1, updated_at = now() "
            "WHERE setting_key = 'batch_size'",
            str(size),
        )
    finally:
        await connection.close()
    await asyncio.sleep(3)  # the validator reads its settings at each batch


def _drain(owner_url: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        stored, judged = asyncio.run(_counts(owner_url))
        if stored == judged or time.monotonic() > deadline:
            return stored - judged
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,1500,2000,2500,3000")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument(
        "--batch-size", type=int, help="set the batch_size setting (default: leave the default)"
    )
    args = parser.parse_args()
    sink_port = int(os.environ.get("SMSGW_ADMIN_PORT", "8082")) + 1
    environment = {**os.environ, "SMSGW_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
    sink = start_sink(sink_port)
    steps: list[Step] = []
    try:
        asyncio.run(_fresh_database(environment))
        _stack("up", environment)
        variables = dict(
            re.findall(r"^export (\w+)=(.*)$", _stack("env", environment), re.MULTILINE)
        )
        # Counted over a direct superuser connection, beside pgbouncer's pool.
        admin_url = variables["SMSGW_TEST_PG_ADMIN_URL"].strip("'")
        owner_url = (
            admin_url.rsplit("/", 1)[0] + "/" + os.environ.get("SMSGW_DB_NAME", "sms_gateway")
        )
        receiver = f"http://127.0.0.1:{os.environ.get('SMSGW_RECEIVER_PORT', '8080')}"
        if args.batch_size is not None:
            asyncio.run(_set_batch_size(owner_url, args.batch_size))
        for rate in (int(r) for r in args.rates.split(",")):
            step = _step(rate, args.duration, receiver, owner_url)
            steps.append(step)
            print(
                f"offered {rate:5}/s  achieved {step.achieved:7.0f}/s  p50 {step.p50_ms:6.1f} ms  "
                f"p99 {step.p99_ms:7.1f} ms  non-2xx {step.errors}  judged "
                f"{step.judged_per_second:6.0f}/s  backlog every 5 s {step.backlog}  "
                f"{'sustained' if step.sustained else 'NOT sustained'}",
                flush=True,
            )
            left = _drain(owner_url)
            if not step.sustained:
                print(f"backlog left after draining up to 120 s: {left}")
                break
    finally:
        _stack("down", environment)
        print(stop_sink(sink))
    sustained = [step for step in steps if step.sustained]
    if sustained:
        best = max(sustained, key=lambda step: step.achieved)
        print(
            f"\nhighest sustained: {best.achieved:.0f} SMS/s for {args.duration} s "
            f"(p50 {best.p50_ms:.1f} ms, p99 {best.p99_ms:.1f} ms, validator "
            f"{best.judged_per_second:.0f} SMS/s)"
        )
    else:
        print("\nno rate was sustained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
