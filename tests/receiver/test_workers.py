"""The real `sms-receiver` entry point with two worker processes (SMSGW_HTTP_WORKERS=2):
gunicorn's master and two uvicorn workers on one port, each with its own pool and group commit.

Every acknowledged SMS is a stored row, /metrics merges both workers' samples, and SIGTERM
drains requests in flight, commits what was taken and exits cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import services.receiver.api  # noqa: F401  (every module the workers run)
from tests.conftest import FreshDatabase
from tests.receiver.conftest import stored_rows

# The receiver's HTTP test ports are 8130-8139; the benchmark starts at the bottom.
PORTS = range(8139, 8129, -1)
STORED = "sms_receiver_stored_total"


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


@contextlib.contextmanager
def _running_receiver(
    database: FreshDatabase, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = _free_port()
    # TMPDIR: the metrics directory the master makes is then where this test can look into it.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    log_path = tmp_path / "receiver.log"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(temporary),
        "SMSGW_ENVIRONMENT": "development",
        "SMSGW_DATABASE_URL": database.url("sms_receiver"),
        "SMSGW_DB_POOL_MAX_SIZE": "4",
        "SMSGW_HTTP_PORT": str(port),
        "SMSGW_HTTP_WORKERS": "2",
        "SMSGW_LOG_FORMAT": "text",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "sms-receiver")],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, f"http://127.0.0.1:{port}", temporary
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])  # shown on failure


async def _wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    while process.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/ready")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"sms-receiver exited with {process.returncode} before it was ready")


Answers = dict[int, httpx.Response | httpx.TransportError]


async def _post_many(
    base_url: str,
    numbers: range,
    answers: Answers,
    answered: tuple[int, asyncio.Event] | None = None,
) -> None:
    """POST one SMS per number into `answers`, 16 at a time, each on a fresh connection (so
    that both workers accept some); `answered` = (n, event): set the event after n answers."""
    slots = asyncio.Semaphore(16)

    async def post(i: int) -> None:
        async with slots, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            try:
                answers[i] = await client.post(
                    "/sms/receive",
                    json={
                        "sender_number": f"+1 555 {i:07d}",
                        "sms_message": f"message number {i}",
                        "received_timestamp": "2024-06-22T10:00:00+02:00",
                    },
                )
            except httpx.TransportError as exc:  # refused once the receiver stops listening
                answers[i] = exc
        if answered is not None and len(answers) >= answered[0]:
            answered[1].set()

    await asyncio.gather(*(post(i) for i in numbers))


def _acknowledged(answers: Answers) -> dict[int, UUID]:
    return {
        i: UUID(answer.json()["uuid"])
        for i, answer in answers.items()
        if isinstance(answer, httpx.Response) and answer.status_code == 202
    }


def _stored_total(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == STORED
    )


def _stored_per_worker(metrics_dir: Path, tmp_path: Path) -> dict[str, float]:
    """Each worker's own count, read from its own sample file alone."""
    counts: dict[str, float] = {}
    for sample_file in metrics_dir.glob("counter_*.db"):
        alone = tmp_path / f"alone-{sample_file.stem}"
        alone.mkdir()
        shutil.copy(sample_file, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        counts[sample_file.stem.removeprefix("counter_")] = sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == STORED
        )
    return counts


@pytest.mark.slow
async def test_two_workers_store_every_acknowledged_sms_merge_metrics_and_stop_on_sigterm(
    database: FreshDatabase, owner_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    with _running_receiver(database, tmp_path) as (process, base_url, temporary):
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            await _wait_ready(client, process)
            first: Answers = {}
            await _post_many(base_url, range(400), first)
            assert all(
                isinstance(a, httpx.Response) and a.status_code == 202 for a in first.values()
            ), first
            exposition = (await client.get("/metrics")).text

        assert _stored_total(exposition) == 400
        (metrics_dir,) = temporary.glob("sms-receiver-metrics-*")
        per_worker = _stored_per_worker(metrics_dir, tmp_path)
        # Only the workers store; the load reached both, and /metrics showed their sum.
        assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker
        assert sum(per_worker.values()) == 400

        # SIGTERM while a second wave is in flight: whatever was acknowledged is stored.
        second: Answers = {}
        under_way = asyncio.Event()
        second_wave = asyncio.create_task(
            _post_many(base_url, range(1000, 1400), second, answered=(50, under_way))
        )
        await under_way.wait()
        process.send_signal(signal.SIGTERM)
        await second_wave
        # TimeoutExpired fails the test: SIGTERM must end it within 30 s.
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert not metrics_dir.exists(), "the master removes its metrics directory"

    rows = {row["uuid"]: row for row in await stored_rows(owner_pool)}
    acknowledged = _acknowledged(first) | _acknowledged(second)
    assert len(_acknowledged(second)) >= 50
    for i, uuid in acknowledged.items():
        assert rows[uuid]["sms_message"] == f"message number {i}"


# With several workers a gauge's samples are per process; a mode that keeps a dead worker's
# value ("all", the default, and the non-live aggregates) would report stale numbers.
LIVE_GAUGE_MODES = frozenset({"liveall", "livesum", "livemax", "livemin", "livemostrecent"})


def test_every_gauge_the_receiver_imports_has_a_live_multiprocess_mode() -> None:
    modules = [
        module
        for name, module in sorted(sys.modules.items())
        if name.startswith(("services.receiver", "sms_gateway"))
    ]
    assert "services.receiver.metrics" in {module.__name__ for module in modules}
    gauges = {
        f"{module.__name__}.{name}": value
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, Gauge)
    }
    wrong = {
        name: gauge._multiprocess_mode
        for name, gauge in gauges.items()
        if gauge._multiprocess_mode not in LIVE_GAUGE_MODES
    }
    assert not wrong, f"set multiprocess_mode on these gauges: {wrong}"
