"""The engine as it runs (SPEC §6): workers and processes at once, Redis lost mid-run, the
sweeper, and the real `sms-validator` process under SIGTERM and SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.validator import engine as engine_module
from sms_gateway import db
from sms_gateway.redis import RedisLink
from tests.conftest import TEST_REDIS_DB, FreshDatabase, Infra
from tests.validator.conftest import (
    SENDERS,
    NewSms,
    all_judged,
    final_state,
    forwarded_senders,
    insert_sms,
    make_engine,
    make_runner,
    model_state,
    out_sms_senders,
    redis_senders,
    running,
    sequential_state,
    set_settings,
    valid_message,
    wait_for,
)


def mixed_stream(rng: random.Random, count: int, senders: int) -> list[NewSms]:
    pool = SENDERS[:senders]
    return [
        NewSms(s, valid_message(s) if rng.random() < 0.7 else f"BAD {s}")
        for s in (rng.choice(pool) for _ in range(count))
    ]


async def test_engines_with_workers_while_redis_is_flushed_equal_one_sequential_run(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
    database: FreshDatabase,
) -> None:
    rng = random.Random(7)
    await set_settings(
        owner_pool, {"batch_size": "13", "parallel_workers": "3", "blacklist_threshold": "6"}
    )
    second_pool = await db.create_pool(database.url("sms_validator"), min_size=0, max_size=6)
    try:
        engines = [make_engine(validator_pool, redis_link), make_engine(second_pool, redis_link)]
        async with running(engines[0]), running(engines[1]):
            for _ in range(12):  # SMS keep arriving while Redis is lost now and then
                await insert_sms(receiver_pool, mixed_stream(rng, 60, 80))
                await asyncio.sleep(rng.uniform(0.0, 0.15))
                if rng.random() < 0.4:
                    await redis_client.flushdb()
            await wait_for(lambda: all_judged(owner_pool), what="every SMS judged")
    finally:
        await db.close_pool(second_pool)
    concurrent = await final_state(owner_pool)
    forwarded = [row[1] for row in concurrent["out_sms"]]
    assert len(forwarded) == len(set(forwarded))  # no sender forwarded twice
    # A flush can refuse a batch's write-through after its commit; that partition's next batch,
    # or the sweeper's next tick, catches it up. The engines may have stopped before either:
    # repair as a validator started now would (warm-up, then each partition's tick).
    runner = make_runner(validator_pool, redis_link)
    await runner.warm_up()
    await runner.run("sweep")  # the lone worker now: it leases every partition
    await runner.keep_index()
    assert await redis_senders(redis_client) == set(forwarded)
    assert concurrent == await sequential_state(
        validator_pool, owner_pool, redis_link, redis_client
    )


async def test_sweeper_processes_a_requeued_sms(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    [uuid] = await insert_sms(receiver_pool, [NewSms(SENDERS[0], "BAD")])
    engine = make_engine(validator_pool, redis_link)
    async with running(engine):
        await wait_for(lambda: all_judged(owner_pool), what="the SMS judged")
        async with db.transaction(owner_pool) as connection:
            await connection.execute(
                "UPDATE sms_monitor SET overall_status = 'pending', header_check = 0, "
                "blacklist_check = 0, failed_at_check = NULL WHERE uuid = $1",
                uuid,
            )
        await wait_for(lambda: all_judged(owner_pool), what="the requeued SMS judged again")
    state = await final_state(owner_pool)
    assert state["count_sms"] == [(SENDERS[0], 2)]  # counted again: it was judged, not error
    assert [row[0] for row in state["sms_monitor"]] == [uuid]


async def test_the_backlog_gauges_count_waiting_sms_up_to_the_cap(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The upkeep counts the SMS after the checkpoint up to BACKLOG_CAP (a bounded scan, every
    few seconds in every process) and gives the oldest one's age; with none waiting, both are
    zero."""

    def gauge(name: str) -> float | None:
        return REGISTRY.get_sample_value(name)

    async def backlog_is(size: float) -> bool:
        return gauge("sms_validator_backlog_sms") == size

    monkeypatch.setattr(engine_module, "BACKLOG_CAP", 4)
    await set_settings(owner_pool, {"maintenance_mode": "true"})  # nothing is judged
    await insert_sms(receiver_pool, [NewSms(s, valid_message(s)) for s in SENDERS[:6]])
    engine = make_engine(validator_pool, redis_link)
    async with running(engine):
        await wait_for(lambda: backlog_is(4), what="the backlog counted up to the cap")
        assert (gauge("sms_validator_backlog_age_seconds") or 0.0) > 0.0
        monkeypatch.setattr(engine_module, "BACKLOG_CAP", 100)
        await wait_for(lambda: backlog_is(6), what="every waiting SMS counted")
        await set_settings(owner_pool, {"maintenance_mode": "false"})
        await wait_for(lambda: all_judged(owner_pool), what="the SMS judged")
        await wait_for(lambda: backlog_is(0), what="an empty backlog")
        assert gauge("sms_validator_backlog_age_seconds") == 0.0


# ---------------------------------------------------------------- the real process

# After a graceful shutdown uvicorn re-raises the signal it caught, so the conventional status
# of a process stopped by SIGTERM (-15 from Popen) is as clean as 0.
EXIT_AFTER_SIGTERM = (0, -signal.SIGTERM)


class ValidatorProcess:
    """The real `sms-validator` entry point on this test's database and Redis."""

    def __init__(self, environment: dict[str, str], log: Path) -> None:
        self.log = log
        self.port = int(environment["SMSGW_HTTP_PORT"])
        executable = Path(sys.executable).with_name("sms-validator")
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [str(executable)],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: kill() takes its workers too
            )

    async def wait_ready(self) -> None:
        """Until /ready answers 200: the engine has warmed up and is claiming batches."""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise AssertionError(f"the validator exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/ready", timeout=1)).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the validator never became ready:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a container runtime or the OOM killer
        ending a cgroup does."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(35)
        return code, time.monotonic() - started

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def start_validator(
    database: FreshDatabase,
    infra: Infra,
    tmp_path: Path,
) -> Iterator[Callable[[], ValidatorProcess]]:
    environment = {
        **os.environ,
        "SMSGW_ENVIRONMENT": "development",
        "SMSGW_DATABASE_URL": database.url("sms_validator"),
        "SMSGW_REDIS_PASSWORD": infra.redis_password,
        "SMSGW_REDIS_DB": str(TEST_REDIS_DB),
        "SMSGW_LOG_FORMAT": "text",
        "SMSGW_HTTP_PORT": str(8120 + os.getpid() % 10),  # the validator's test ports
    }
    started: list[ValidatorProcess] = []

    def start() -> ValidatorProcess:
        # Each live validator its own port (several run at once); one log for all.
        busy = {p.port for p in started if p.process.poll() is None}
        port = next(
            port
            for k in range(10)
            if (port := 8120 + (os.getpid() + len(started) + k) % 10) not in busy
        )
        started.append(
            ValidatorProcess(
                {**environment, "SMSGW_HTTP_PORT": str(port)}, tmp_path / "validator.log"
            )
        )
        return started[-1]

    yield start
    for process in started:
        if process.process.poll() is None:
            process.kill()


async def judged_count(pool: asyncpg.Pool) -> int:
    async with db.transaction(pool, readonly=True) as connection:
        return int(await connection.fetchval("SELECT count(*) FROM sms_monitor"))


@pytest.mark.slow
@pytest.mark.fault
async def test_sigkill_of_either_process_at_any_progress_loses_and_duplicates_nothing(
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    start_validator: Callable[[], ValidatorProcess],
) -> None:
    """Two validators (each one process per core, two workers each) share the partitions; one
    of them, chosen at random, is SIGKILLed (its whole process group, leases held, batches in
    flight) every time another fifteenth of the SMS is judged, and started again. The kills
    follow progress, not the clock, so a faster machine sees as many. The result is the
    reference model's, Redis included."""
    rng = random.Random(11)
    await set_settings(
        owner_pool, {"batch_size": "4", "blacklist_threshold": "8", "parallel_workers": "2"}
    )
    total = 5000
    await insert_sms(receiver_pool, mixed_stream(rng, total, 400))
    validators = [start_validator(), start_validator()]
    kills = 0
    for step in range(1, 16):
        target = total * step // 16
        await wait_for(partial(_at_least, owner_pool, target), within=90, what=f"{target}")
        victim = rng.randrange(2)
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        validators[victim].kill()
        kills += 1
        validators[victim] = start_validator()
    try:
        await wait_for(lambda: all_judged(owner_pool), within=120, what="every SMS judged")
    finally:
        codes = [process.terminate()[0] for process in validators]
    assert all(code in EXIT_AFTER_SIGTERM for code in codes), validators[0].log_tail()
    assert kills == 15
    assert await final_state(owner_pool) == await model_state(owner_pool)
    assert (
        await redis_senders(redis_client)
        == await out_sms_senders(owner_pool)
        == await forwarded_senders(owner_pool)
    )


async def _at_least(pool: asyncpg.Pool, count: int) -> bool:
    return await judged_count(pool) >= count


@pytest.mark.slow
@pytest.mark.fault
async def test_sigterm_finishes_the_batch_in_flight_and_exits_in_time(
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    start_validator: Callable[[], ValidatorProcess],
) -> None:
    await set_settings(owner_pool, {"batch_size": "500"})
    await insert_sms(receiver_pool, mixed_stream(random.Random(3), 6000, 300))
    process = start_validator()

    async def some_judged() -> bool:
        async with db.transaction(owner_pool, readonly=True) as connection:
            return bool(await connection.fetchval("SELECT count(*) > 0 FROM sms_monitor"))

    await wait_for(some_judged, what="a first batch")
    code, seconds = process.terminate()
    assert code in EXIT_AFTER_SIGTERM, process.log_tail()
    assert seconds < 30
    async with db.transaction(owner_pool, readonly=True) as connection:
        judged_above, unjudged_below, judged = await connection.fetchrow(
            "WITH n AS (SELECT count(*)::int AS n FROM validator_partitions), "
            "sms AS (SELECT i.uuid > p.checkpoint AS above, "
            "  EXISTS (SELECT FROM sms_monitor m WHERE m.uuid = i.uuid) AS judged "
            "  FROM input_sms i CROSS JOIN n JOIN validator_partitions p "
            "  ON p.partition_no = sms_sender_partition(i.sender_number, n.n)) "
            "SELECT count(*) FILTER (WHERE above AND judged), "
            "count(*) FILTER (WHERE NOT above AND NOT judged), count(*) FILTER (WHERE judged) "
            "FROM sms"
        )
        counted = await connection.fetchval("SELECT coalesce(sum(message_count), 0) FROM count_sms")
    # Whole batches only: in every partition, everything up to its checkpoint is judged and
    # nothing above it, and every judged SMS was counted once.
    assert (judged_above, unjudged_below) == (0, 0)
    assert judged > 0
    assert counted == judged


async def test_a_bad_checkpoint_value_never_stops_the_engine(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    engine = make_engine(validator_pool, redis_link)
    async with running(engine) as task:
        await wait_for(lambda: asyncio.sleep(0, engine.started), what="the engine started")
        await set_settings(owner_pool, {"last_processed_uuid": "garbage"})
        await asyncio.sleep(engine.sweep_interval * 2)  # batches and sweeper ticks meanwhile
        await insert_sms(receiver_pool, [NewSms(SENDERS[0], valid_message(SENDERS[0]))])
        await wait_for(lambda: all_judged(owner_pool), what="the SMS judged")
        await asyncio.sleep(engine.sweep_interval * 2)
        assert not task.done()
