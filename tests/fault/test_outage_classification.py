"""Which faults are outages to wait out and which are bugs (SPEC §6.4), classified by class:
asyncpg's per-SQLSTATE exceptions and redis-py's per-reply-kind exceptions, against the real
PostgreSQL (through pgbouncer) and the real Redis of this test run.

An outage is retried and, if it lasts, ends as `RetriesExhaustedError`; a bug passes through
at once, so that it stops loudly instead of being retried for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from sms_gateway import db
from sms_gateway.errors import RetriesExhaustedError
from sms_gateway.redis import (
    TRANSIENT_REDIS_ERRORS,
    RedisBusyError,
    RedisLink,
    RedisMisconfiguredError,
    _GatewayParser,
)
from sms_gateway.retry import retry_transient
from tests.conftest import TEST_REDIS_DB, FreshDatabase, Infra
from tests.fault.support import read_only_database

pytestmark = pytest.mark.fault

OUTAGE_STATES = [
    "08006",  # connection failure
    "08P01",  # pgbouncer's own refusals (query_wait_timeout, no more connections)
    "25006",  # read-only transaction: a standby after a failover
    "40001",  # serialization failure
    "40P01",  # deadlock
    "53100",  # disk full
    "53200",  # out of memory
    "53300",  # too many connections
    "57014",  # query cancelled (statement_timeout)
    "57P01",  # admin shutdown
    "57P03",  # cannot connect now (starting up)
]
BUG_STATES = [
    "23505",  # unique violation
    "22P02",  # invalid text representation
    "22001",  # string too long
    "42501",  # insufficient privilege
    "42P01",  # undefined table
    "40003",  # statement completion unknown: retrying could apply it twice
    "57000",  # operator intervention, unspecified
    "P0001",  # a raised exception
]


async def _raise_sqlstate(pool: asyncpg.Pool, sqlstate: str) -> None:
    """The server raises an error with this SQLSTATE, as it would for the real condition."""
    async with db.transaction(pool) as connection:
        await connection.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'fault' USING ERRCODE = '{sqlstate}'; END $$"
        )


@pytest.mark.parametrize("sqlstate", OUTAGE_STATES)
async def test_database_outage_states_are_transient(
    owner_pool: asyncpg.Pool, sqlstate: str
) -> None:
    with pytest.raises(RetriesExhaustedError) as raised:
        await retry_transient(
            "fault",
            lambda: _raise_sqlstate(owner_pool, sqlstate),
            retries=1,
            transient=db.TRANSIENT_DB_ERRORS,
            base=0.001,
        )
    cause = raised.value.__cause__
    assert isinstance(cause, asyncpg.PostgresError)
    assert cause.sqlstate == sqlstate


@pytest.mark.parametrize("sqlstate", BUG_STATES)
async def test_database_bug_states_pass_through(owner_pool: asyncpg.Pool, sqlstate: str) -> None:
    with pytest.raises(asyncpg.PostgresError) as raised:
        await retry_transient(
            "fault",
            lambda: _raise_sqlstate(owner_pool, sqlstate),
            retries=3,
            transient=db.TRANSIENT_DB_ERRORS,
            base=0.001,
        )
    assert raised.value.sqlstate == sqlstate
    assert not isinstance(raised.value, db.TRANSIENT_DB_ERRORS)


async def _write_setting(pool: asyncpg.Pool) -> None:
    async with db.transaction(pool) as connection:
        await connection.execute(
            "UPDATE system_settings SET setting_value = '21' WHERE setting_key = 'batch_size'"
        )


async def test_a_read_only_database_is_transient(database: FreshDatabase) -> None:
    async with database.pool() as pool, read_only_database(database):
        errors: list[BaseException] = []
        # The first attempts may meet a server connection terminated under pgbouncer (08*):
        # an outage too. Within a few attempts every new session is read-only.
        for _ in range(10):
            try:
                await _write_setting(pool)
            except db.TRANSIENT_DB_ERRORS as exc:
                errors.append(exc)
                if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
                    break
            await asyncio.sleep(0.05)
        assert isinstance(errors[-1], asyncpg.ReadOnlySQLTransactionError), errors
    async with database.pool() as pool:
        for _ in range(20):  # back to read-write once the old sessions are gone
            try:
                await _write_setting(pool)
                break
            except db.TRANSIENT_DB_ERRORS:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the database stayed read-only")


async def test_a_cancelled_statement_is_transient(owner_pool: asyncpg.Pool) -> None:
    async def slow() -> None:
        async with db.transaction(owner_pool) as connection:
            await connection.execute("SET LOCAL statement_timeout = '50ms'")
            await connection.execute("SELECT pg_sleep(5)")

    with pytest.raises(asyncpg.QueryCanceledError) as raised:
        await slow()
    assert isinstance(raised.value, db.TRANSIENT_DB_ERRORS)


async def test_a_statement_cancelled_by_the_operator_is_transient(
    owner_pool: asyncpg.Pool, database: FreshDatabase
) -> None:
    async def slow() -> None:
        async with db.transaction(owner_pool) as connection:
            await connection.execute("SELECT pg_sleep(30)")

    running = asyncio.create_task(slow())
    admin = await asyncpg.connect(database.stack.pg_admin_url)
    try:
        for _ in range(100):
            cancelled = await admin.fetchval(
                "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND query = 'SELECT pg_sleep(30)' AND state = 'active'",
                database.name,
            )
            if cancelled:
                break
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    with pytest.raises(asyncpg.QueryCanceledError) as raised:
        await running
    assert isinstance(raised.value, db.TRANSIENT_DB_ERRORS)


# ------------------------------------------------------------------ Redis


@pytest.fixture
async def link(infra: Infra) -> AsyncIterator[aioredis.Redis]:
    """The services' own client (RedisLink), on the tests' Redis."""
    redis_link = RedisLink(password=infra.redis_password, db=TEST_REDIS_DB, timeout=2.0)
    try:
        yield await redis_link.for_target("127.0.0.1", infra.redis_port)
    finally:
        await redis_link.close()


@contextlib.asynccontextmanager
async def redis_config(client: aioredis.Redis, **values: str) -> AsyncIterator[None]:
    """Redis configured with `values`, restored afterwards."""
    before = {name: str((await client.config_get(name))[name]) for name in values}
    try:
        for name, value in values.items():
            await client.config_set(name, value)
        yield
    finally:
        for name, old in before.items():
            await client.config_set(name, old)


async def test_redis_at_maxmemory_is_transient(
    link: aioredis.Redis, redis_client: aioredis.Redis
) -> None:
    async with redis_config(redis_client, maxmemory="1", **{"maxmemory-policy": "noeviction"}):
        with pytest.raises(redis.exceptions.OutOfMemoryError) as raised:
            await link.sadd("out_sms_numbers", "447700900123")
    assert isinstance(raised.value, TRANSIENT_REDIS_ERRORS)
    assert await link.sadd("out_sms_numbers", "447700900123") == 1  # and it recovers


async def test_a_read_only_replica_is_transient(
    link: aioredis.Redis, redis_client: aioredis.Redis
) -> None:
    await redis_client.execute_command(  # type: ignore[no-untyped-call]
        "REPLICAOF", "127.0.0.1", "1"
    )  # a master that is not
    try:
        with pytest.raises(redis.exceptions.ReadOnlyError) as raised:
            await link.sadd("out_sms_numbers", "447700900123")
    finally:
        await redis_client.execute_command("REPLICAOF", "NO", "ONE")  # type: ignore[no-untyped-call]
    assert isinstance(raised.value, TRANSIENT_REDIS_ERRORS)


async def test_a_busy_script_is_transient(
    link: aioredis.Redis, redis_client: aioredis.Redis, infra: Infra
) -> None:
    blocker = aioredis.Redis(
        host="127.0.0.1", port=infra.redis_port, password=infra.redis_password, db=TEST_REDIS_DB
    )
    await link.ping()  # connected (AUTH, SELECT) before Redis turns busy
    async with redis_config(redis_client, **{"busy-reply-threshold": "50"}):
        looping = asyncio.ensure_future(blocker.eval("while true do end", 0))
        try:
            raised: BaseException | None = None
            for _ in range(100):
                await asyncio.sleep(0.05)
                try:
                    await link.ping()
                except RedisBusyError as exc:
                    raised = exc
                    break
            assert raised is not None
            assert isinstance(raised, TRANSIENT_REDIS_ERRORS)
        finally:
            await redis_client.script_kill()  # an open connection: a new one would be BUSY too
            with contextlib.suppress(redis.exceptions.ResponseError):
                await looping
            await blocker.aclose()


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("OOM command not allowed when used memory > 'maxmemory'.", "OutOfMemoryError"),
        ("READONLY You can't write against a read only replica.", "ReadOnlyError"),
        ("LOADING Redis is loading the dataset in memory", "BusyLoadingError"),
        ("MISCONF Redis is configured to save RDB snapshots, but ...", "RedisMisconfiguredError"),
        ("BUSY Redis is busy running a script.", "RedisBusyError"),
    ],
)
def test_every_refusal_kind_has_a_transient_class(reply: str, kind: str) -> None:
    """The kinds a real server is hard to drive into here (LOADING, MISCONF) are checked on the
    reply the server sends; the parser is the one the services' client uses."""
    error = _GatewayParser.parse_error(reply)  # type: ignore[no-untyped-call]
    assert type(error).__name__ == kind
    assert isinstance(error, TRANSIENT_REDIS_ERRORS)
    other = _GatewayParser.parse_error("WRONGTYPE Operation")  # type: ignore[no-untyped-call]
    assert not isinstance(other, TRANSIENT_REDIS_ERRORS)


def test_misconf_and_busy_are_response_errors() -> None:
    assert issubclass(RedisMisconfiguredError, redis.exceptions.ResponseError)
    assert issubclass(RedisBusyError, redis.exceptions.ResponseError)
