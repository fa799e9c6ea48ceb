"""Fixtures of the validator's tests: the service roles' pools through pgbouncer, an engine on
the test's database and Redis, and helpers to make SMS and read back every table."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import redis.asyncio as aioredis

import checks
from checks.base import Check, CheckSecrets, SmsToJudge
from services.validator.batch import BatchOutcome, BatchRunner
from services.validator.engine import Engine
from services.validator.index import MARKS_KEY, SET_KEY
from sms_gateway import db
from sms_gateway.redis import RedisLink
from sms_gateway.settings import RuntimeSettings, SettingsStore
from tests.conftest import TEST_REDIS_DB, FreshDatabase, Infra
from tests.validator.model import model_of

# Senders whose numbers libphonenumber judges valid (UK mobile range 07911).
SENDERS = tuple(f"447911123{n:03d}" for n in range(400))


def valid_message(sender: str) -> str:
    """A message that passes every check with the default settings and no secrets."""
    return f"ABC 0123456789abcdef +{sender}"


def invalid_message(sender: str) -> str:
    return f"abc 0123456789abcdef +{sender}"  # lower-case header: fails `header`


@dataclass(frozen=True)
class NewSms:
    sender_number: str
    sms_message: str
    received_timestamp: datetime | None = None


@pytest.fixture
async def validator_pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async with database.pool("sms_validator", max_size=8) as pool:
        yield pool


@pytest.fixture
async def receiver_pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async with database.pool("sms_receiver") as pool:
        yield pool


@pytest.fixture
async def redis_link(infra: Infra) -> AsyncIterator[RedisLink]:
    link = RedisLink(password=infra.redis_password, db=TEST_REDIS_DB)
    try:
        yield link
    finally:
        await link.close()


async def insert_sms(pool: asyncpg.Pool, sms: Sequence[NewSms]) -> list[UUID]:
    """Store SMS as the receiver does (one transaction; uuids from the database)."""
    now = datetime.now(UTC)
    async with db.transaction(pool) as connection:
        rows = await connection.fetch(
            "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) RETURNING uuid",
            [s.sender_number for s in sms],
            [s.sms_message for s in sms],
            [s.received_timestamp or now for s in sms],
        )
    return sorted(row["uuid"] for row in rows)


async def set_settings(pool: asyncpg.Pool, values: Mapping[str, str]) -> None:
    async with db.transaction(pool) as connection:
        await connection.executemany(
            "UPDATE system_settings SET setting_value = $2, updated_at = now() "
            "WHERE setting_key = $1",
            list(values.items()),
        )


def make_runner(
    pool: asyncpg.Pool,
    link: RedisLink,
    checks_by_name: Mapping[str, Check] | None = None,
    *,
    secrets: CheckSecrets | None = None,
) -> BatchRunner:
    registry = checks.REGISTRY if checks_by_name is None else checks_by_name
    return BatchRunner(
        pool,
        link,
        registry,
        secrets or CheckSecrets(),
        SettingsStore(known_checks=registry),
        settle_margin=0.01,
    )


def make_engine(
    pool: asyncpg.Pool,
    link: RedisLink,
    checks_by_name: Mapping[str, Check] | None = None,
) -> Engine:
    """An engine with the test's tempo: leases of a second, renewed every 0.2 s, so that
    partitions move between engines within a test."""
    registry = checks.REGISTRY if checks_by_name is None else checks_by_name
    return Engine(
        pool,
        link,
        registry,
        CheckSecrets(),
        poll_interval=0.02,
        sweep_interval=0.3,
        settle_margin=0.01,
        lease_seconds=1.0,
        heartbeat_seconds=0.2,
    )


async def drain(runner: BatchRunner, *, kind: str = "batch") -> list[BatchOutcome]:
    """Run batches until one finds nothing (the settle margin is tiny in tests)."""
    outcomes: list[BatchOutcome] = []
    await asyncio.sleep(0.02)
    while True:
        outcome = await runner.run("batch" if kind == "batch" else "sweep")
        if outcome.size == 0:
            return outcomes
        outcomes.append(outcome)


@contextlib.asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(engine.run())
    try:
        yield task
    finally:
        await engine.stop()
        await asyncio.wait_for(task, 30)


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, within: float = 60.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def all_judged(pool: asyncpg.Pool) -> bool:
    async with db.transaction(pool, readonly=True) as connection:
        missing = await connection.fetchval(
            "SELECT count(*) FROM input_sms i WHERE NOT EXISTS (SELECT FROM sms_monitor m "
            "WHERE m.uuid = i.uuid AND m.overall_status <> 'pending')"
        )
    return int(missing) == 0


CHECK_COLUMNS = ", ".join(f"{name}_check" for name in checks.REGISTRY)


async def final_state(pool: asyncpg.Pool) -> dict[str, Any]:
    """Every table the engine writes, minus batch ids and times (owner pool)."""
    async with db.transaction(pool, readonly=True) as connection:
        monitor = await connection.fetch(
            f"SELECT uuid, {CHECK_COLUMNS}, overall_status, failed_at_check, retry_count "
            "FROM sms_monitor ORDER BY uuid"
        )
        out = await connection.fetch(
            "SELECT uuid, sender_number, sms_message FROM out_sms ORDER BY uuid"
        )
        counts = await connection.fetch(
            "SELECT sender_number, message_count FROM count_sms ORDER BY sender_number"
        )
        blacklist = await connection.fetch(
            "SELECT sender_number, reason, message_count FROM blacklist_sms ORDER BY sender_number"
        )
    return {
        "sms_monitor": [tuple(r) for r in monitor],
        "out_sms": [tuple(r) for r in out],
        "count_sms": [tuple(r) for r in counts],
        "blacklist_sms": [tuple(r) for r in blacklist],
    }


async def reset_results(
    owner_pool: asyncpg.Pool, client: aioredis.Redis, *, inputs: bool = False
) -> None:
    """Forget every judgement (and with `inputs` every SMS): checkpoint at zero, Redis empty."""
    tables = "sms_monitor, out_sms, forwarded_senders, count_sms, blacklist_sms, " + (
        "validator_workers" + (", input_sms" if inputs else "")
    )
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            f"TRUNCATE {tables}; "
            "UPDATE system_settings SET setting_value = '00000000-0000-0000-0000-000000000000' "
            "WHERE setting_key = 'last_processed_uuid'; "
            "UPDATE validator_partitions SET checkpoint = '00000000-0000-0000-0000-000000000000', "
            "forwarded_seq = 0, owner = NULL, lease_expires_at = '-infinity'"
        )
    await client.flushdb()


async def sequential_state(
    validator_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    client: aioredis.Redis,
    *,
    batch_size: int = 1,
) -> dict[str, Any]:
    """The reference of SPEC §6.1: the same input judged again from scratch, uninterrupted, by
    one worker (by default one SMS a batch)."""
    await reset_results(owner_pool, client)
    await set_settings(owner_pool, {"batch_size": str(batch_size), "parallel_workers": "1"})
    await drain(make_runner(validator_pool, redis_link))
    return await final_state(owner_pool)


async def redis_senders(client: aioredis.Redis) -> set[str]:
    members = await client.smembers(SET_KEY)
    return {m if isinstance(m, str) else m.decode() for m in members}


async def out_sms_senders(pool: asyncpg.Pool) -> set[str]:
    async with db.transaction(pool, readonly=True) as connection:
        rows = await connection.fetch("SELECT DISTINCT sender_number FROM out_sms")
    return {row["sender_number"] for row in rows}


async def redis_marks(client: aioredis.Redis) -> dict[int, int]:
    """partition -> the seq up to which the set claims that partition complete."""
    fields = await client.hgetall(MARKS_KEY)
    return {int(name[1:]): int(value) for name, value in fields.items() if name[:1] == "p"}


async def forwarded_seqs(pool: asyncpg.Pool) -> dict[int, int]:
    async with db.transaction(pool, readonly=True) as connection:
        rows = await connection.fetch(
            "SELECT partition_no, forwarded_seq FROM validator_partitions"
        )
    return {row["partition_no"]: row["forwarded_seq"] for row in rows}


def stream(pairs: Iterable[tuple[str, bool]]) -> list[NewSms]:
    return [NewSms(s, valid_message(s) if ok else invalid_message(s)) for s, ok in pairs]


def late(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def stored_sms(pool: asyncpg.Pool) -> list[SmsToJudge]:
    """Every input_sms row, as the checks see it (owner pool)."""
    async with db.transaction(pool, readonly=True) as connection:
        rows = await connection.fetch(
            "SELECT uuid, sender_number, sms_message, received_timestamp, created_at "
            "FROM input_sms ORDER BY uuid"
        )
    return [SmsToJudge(*row) for row in rows]


async def stored_settings(pool: asyncpg.Pool) -> RuntimeSettings:
    async with db.transaction(pool, readonly=True) as connection:
        return await SettingsStore(known_checks=checks.REGISTRY).reload(connection)


async def model_state(pool: asyncpg.Pool, **options: Any) -> dict[str, Any]:
    """What the reference model (tests/validator/model.py) says the tables must hold for the
    SMS and settings in the database now."""
    model = model_of(
        await stored_sms(pool), await stored_settings(pool), now=datetime.now(UTC), **options
    )
    return model.state()


async def forwarded_senders(pool: asyncpg.Pool) -> set[str]:
    async with db.transaction(pool, readonly=True) as connection:
        rows = await connection.fetch("SELECT sender_number FROM forwarded_senders")
    return {row["sender_number"] for row in rows}
