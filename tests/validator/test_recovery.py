"""The Redis index recovers from any state, at production lags, with the real `sms-validator`
(SPEC §5.4): behind by ten thousand senders (a Redis restored from an older snapshot), empty,
of another database, of the wrong type, and ahead of the database (a database restored under a
newer Redis, holding senders that were never forwarded). After each, the next SMS are judged
from a complete set: a sender whose membership was lost is still a duplicate, a sender the
database never forwarded is not. Each repair shows in the metrics and the log.

Then the rebuild's parts on their own: every sender arrives through COPY whatever it holds and
wherever COPY's buffers split it, and a scratch set that lost members is never swapped in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from services.validator import index, sql
from services.validator.index import MARKS_KEY, SET_KEY, IndexContext, write_through
from sms_gateway import db
from sms_gateway.redis import TRANSIENT_REDIS_ERRORS, RedisLink
from tests.conftest import TEST_REDIS_DB, FreshDatabase, Infra
from tests.validator.conftest import (
    NewSms,
    all_judged,
    forwarded_senders,
    forwarded_seqs,
    insert_sms,
    redis_marks,
    redis_senders,
    set_settings,
    valid_message,
    wait_for,
)

FORWARDED = 30_000
LAG = 10_000
# Senders that COPY's text format escapes (a backslash, control characters), and a long one.
ODD_SENDERS = [
    "Back\\slash",
    "Tab\tbed",
    "New\nline",
    "Car\rriage",
    "V\vF\fB\b",
    "Zürich",
    "123456789012345",
]


def sender(number: int) -> str:
    return f"4474{number:08d}"


@contextlib.asynccontextmanager
async def validator(
    database: FreshDatabase, infra: Infra, log: Path
) -> AsyncIterator[httpx.AsyncClient]:
    port = 8130 + os.getpid() % 10
    environment = {
        **os.environ,
        "SMSGW_ENVIRONMENT": "development",
        "SMSGW_DATABASE_URL": database.url("sms_validator"),
        "SMSGW_REDIS_PASSWORD": infra.redis_password,
        "SMSGW_REDIS_DB": str(TEST_REDIS_DB),
        "SMSGW_LOG_FORMAT": "text",
        "SMSGW_HTTP_PORT": str(port),
    }
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: ASYNC220 (once, before the test)
            [str(Path(sys.executable).with_name("sms-validator"))],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            yield client
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(35)


async def judge(
    pool: asyncpg.Pool, receiver_pool: asyncpg.Pool, senders: list[str]
) -> dict[str, str]:
    """Send one valid SMS per sender; return each sender's verdict (status or failed check)."""
    uuids = await insert_sms(receiver_pool, [NewSms(s, valid_message(s)) for s in senders])
    await wait_for(lambda: all_judged(pool), within=60, what="the new SMS judged")
    async with db.transaction(pool, readonly=True) as connection:
        rows = await connection.fetch(
            "SELECT i.sender_number, coalesce(m.failed_at_check, m.overall_status) AS verdict "
            "FROM input_sms i JOIN sms_monitor m USING (uuid) WHERE i.uuid = ANY($1::uuid[])",
            uuids,
        )
    return {row["sender_number"]: row["verdict"] for row in rows}


async def repairs(client: httpx.AsyncClient, kind: str) -> float:
    pattern = re.compile(
        rf'^sms_validator_redis_index_repairs_total\{{kind="{kind}"\}} (\S+)$', re.MULTILINE
    )
    found = pattern.search((await client.get("/metrics")).text)
    return float(found.group(1)) if found else 0.0


async def index_matches_database(client: aioredis.Redis, pool: asyncpg.Pool) -> bool:
    return await redis_senders(client) == await forwarded_senders(pool) and (
        await redis_marks(client) == await forwarded_seqs(pool)
    )


@pytest.mark.slow
@pytest.mark.fault
async def test_the_index_recovers_from_any_state_and_judges_on(
    database: FreshDatabase,
    infra: Infra,
    tmp_path: Path,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
) -> None:
    await set_settings(owner_pool, {"batch_size": "1000"})
    await insert_sms(
        receiver_pool, [NewSms(sender(n), valid_message(sender(n))) for n in range(FORWARDED)]
    )
    log = tmp_path / "validator.log"
    async with validator(database, infra, log) as client:

        async def ready() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return (await client.get("/ready")).status_code == 200
            return False

        await wait_for(ready, within=60, what="/ready")
        await wait_for(lambda: all_judged(owner_pool), within=300, what="30,000 SMS judged")
        await wait_for(
            lambda: index_matches_database(redis_client, owner_pool), within=30, what="index"
        )
        seqs = await forwarded_seqs(owner_pool)
        assert sum(seqs.values()) == FORWARDED

        # 1. A Redis restored from an older snapshot: every partition's mark behind, its latest
        # senders gone, LAG of them in all. The lost senders are still duplicates.
        async with db.transaction(owner_pool, readonly=True) as connection:
            lost = await connection.fetch(
                "SELECT f.sender_number, f.partition_no, f.seq FROM forwarded_senders f "
                "JOIN validator_partitions p USING (partition_no) "
                "WHERE f.seq > p.forwarded_seq - $1",
                LAG // len(seqs) + 1,
            )
        assert len(lost) >= LAG
        older = {p: seq - (LAG // len(seqs) + 1) for p, seq in seqs.items()}
        await redis_client.srem(SET_KEY, *(row["sender_number"] for row in lost))
        await redis_client.hset(MARKS_KEY, mapping={f"p{p}": seq for p, seq in older.items()})
        caught_up = await repairs(client, "catch_up")
        probes = [lost[0]["sender_number"], lost[-1]["sender_number"], sender(FORWARDED)]
        assert await judge(owner_pool, receiver_pool, probes) == {
            probes[0]: "duplicate",
            probes[1]: "duplicate",
            probes[2]: "valid",
        }
        await wait_for(
            lambda: index_matches_database(redis_client, owner_pool), within=60, what="caught up"
        )
        assert await repairs(client, "catch_up") > caught_up

        # 2.-4. Empty; another database's marks; keys of the wrong type: rebuilt whole.
        async def flushed() -> None:
            await redis_client.flushdb()

        async def foreign() -> None:
            await redis_client.hset(MARKS_KEY, "db", str(UUID(int=7)))

        async def wrong_type() -> None:
            await redis_client.delete(SET_KEY)
            await redis_client.set(SET_KEY, "not a set")

        for number, damage in enumerate((flushed, foreign, wrong_type), start=1):
            rebuilt = await repairs(client, "rebuild")
            await damage()
            probes = [sender(number * 100), sender(FORWARDED + number)]
            assert await judge(owner_pool, receiver_pool, probes) == {
                probes[0]: "duplicate",
                probes[1]: "valid",
            }, damage.__name__
            assert await repairs(client, "rebuild") > rebuilt, damage.__name__
            assert await index_matches_database(redis_client, owner_pool), damage.__name__

        # 5. The database restored under a newer Redis: marks ahead, and the set holds a sender
        # the database never forwarded. That sender is not a duplicate.
        never = sender(FORWARDED + 50)
        marks = await redis_marks(redis_client)
        await redis_client.sadd(SET_KEY, never)
        await redis_client.hset(MARKS_KEY, mapping={f"p{p}": m + 100 for p, m in marks.items()})
        assert await judge(owner_pool, receiver_pool, [never]) == {never: "valid"}
        assert await index_matches_database(redis_client, owner_pool)
        assert await ready()
        await asyncio.sleep(0)
    text = log.read_text(errors="replace")
    assert "redis index was behind forwarded_senders, caught up" in text
    assert "redis index rebuilt from forwarded_senders" in text


async def test_a_write_through_of_more_members_than_lua_can_unpack(
    redis_client: aioredis.Redis,
) -> None:
    """Lua's unpack stops at ~8,000 values: a batch of 10,000 new senders (batch_size's
    bound) must still reach the set in one write-through."""
    context = IndexContext(pool=None, token="t", partitions=2, ttl=600)
    await redis_client.hset(MARKS_KEY, mapping={"db": "t", "n": 2, "p0": 0, "p1": 0})
    members = [sender(n) for n in range(20_000)]
    size = await write_through(redis_client, context, members, {0: (0, 20_000)})
    assert size == 20_000
    assert await redis_marks(redis_client) == {0: 20_000, 1: 0}


FILL_FORWARDED = """
INSERT INTO forwarded_senders (sender_number, partition_no, seq, first_uuid)
SELECT sender_number, p, row_number() OVER (PARTITION BY p ORDER BY sender_number),
       gen_random_uuid()
FROM (SELECT s AS sender_number, sms_sender_partition(s, $2) AS p FROM unnest($1::text[]) s) f
"""
SET_SEQS = """
UPDATE validator_partitions p SET forwarded_seq = f.last
FROM (SELECT partition_no, max(seq) AS last FROM forwarded_senders GROUP BY 1) f
WHERE f.partition_no = p.partition_no
"""


async def forward(owner_pool: asyncpg.Pool, senders: list[str]) -> None:
    """Record `senders` as forwarded, numbered per partition as batches would have."""
    async with db.transaction(owner_pool) as connection:
        partitions = await connection.fetchval(sql.PARTITION_COUNT)
        await connection.execute(FILL_FORWARDED, senders, partitions)
        await connection.execute(SET_SEQS)


@pytest.fixture
async def services_redis(
    infra: Infra, redis_client: aioredis.Redis
) -> AsyncIterator[aioredis.Redis]:
    """The services' own client (RedisLink) on the tests' emptied Redis database."""
    link = RedisLink(password=infra.redis_password, db=TEST_REDIS_DB)
    try:
        yield await link.for_target("127.0.0.1", infra.redis_port)
    finally:
        await link.close()


async def index_context(pool: asyncpg.Pool) -> IndexContext:
    async with db.transaction(pool, readonly=True) as connection:
        token = await connection.fetchval(sql.DATABASE_TOKEN)
        partitions = await connection.fetchval(sql.PARTITION_COUNT)
    return IndexContext(pool=pool, token=token, partitions=partitions, ttl=600)


async def test_a_rebuild_holds_every_forwarded_sender_and_marks_its_snapshot(
    owner_pool: asyncpg.Pool,
    validator_pool: asyncpg.Pool,
    services_redis: aioredis.Redis,
    redis_client: aioredis.Redis,
) -> None:
    """Many COPY buffers and SADD chunks, senders that COPY escapes; another database's set of
    the same size is replaced, and nothing is left behind."""
    senders = [sender(n) for n in range(12 * index.CHUNK)] + ODD_SENDERS
    await forward(owner_pool, senders)
    await redis_client.sadd(SET_KEY, *(f"old{n}" for n in range(len(senders))))
    await redis_client.hset(MARKS_KEY, mapping={"db": str(UUID(int=7)), "n": 32})
    context = await index_context(validator_pool)

    assert await index.rebuild(services_redis, context, reason="test") == len(senders)

    assert await redis_senders(redis_client) == set(senders)
    assert await redis_marks(redis_client) == await forwarded_seqs(owner_pool)
    fields = await redis_client.hgetall(MARKS_KEY)
    assert (fields["db"], int(fields["n"])) == (context.token, context.partitions)
    assert set(await redis_client.keys("*")) == {SET_KEY, MARKS_KEY}  # no scratch, no lock


async def test_copy_output_split_anywhere_reaches_the_scratch_set_whole(
    owner_pool: asyncpg.Pool, validator_pool: asyncpg.Pool, services_redis: aioredis.Redis
) -> None:
    """COPY's buffers need not end at a line's end, nor outside an escape: the writer joins
    what straddles two of them."""
    senders = [sender(n) for n in range(3_000)] + ODD_SENDERS
    await forward(owner_pool, senders)
    copied = bytearray()

    async def collect(data: bytes) -> None:
        copied.extend(data)

    async with db.transaction(validator_pool, readonly=True) as connection:
        await connection.copy_from_query(sql.EVERY_FORWARDED_SENDER, output=collect)
    backslash = copied.index(b"\\")
    cuts = sorted({*range(0, len(copied), 997), backslash + 1, copied.index(b"\n") + 1})
    async with index._ScratchWriter(services_redis, "scratch", lock="test") as writer:
        for start, end in zip(cuts, [*cuts[1:], len(copied)], strict=True):
            await writer.write(bytes(copied[start:end]))
    assert writer.written == len(senders)
    members = await services_redis.smembers("scratch")
    assert members == set(senders)


async def test_a_scratch_set_that_lost_members_is_not_swapped_in(
    owner_pool: asyncpg.Pool, validator_pool: asyncpg.Pool, services_redis: aioredis.Redis
) -> None:
    """A flush between two chunks of a rebuild (an operator's FLUSHDB, Redis restarted empty):
    the swap-in refuses, and the set and marks it would have replaced stay as they were."""
    senders = [sender(n) for n in range(4 * index.CHUNK)]
    await forward(owner_pool, senders)
    context = await index_context(validator_pool)
    seqs = await forwarded_seqs(owner_pool)
    lines = [f"{s}\n".encode() for s in senders]
    half = len(lines) // 2

    async with index._ScratchWriter(services_redis, "scratch", lock="test") as first:
        await first.write(b"".join(lines[:half]))
    await services_redis.flushdb()
    await services_redis.sadd(SET_KEY, "447400000001")
    await services_redis.hset(MARKS_KEY, mapping={"db": context.token, "n": 1, "p0": 1})
    async with index._ScratchWriter(services_redis, "scratch", lock="test") as second:
        await second.write(b"".join(lines[half:]))
    written = first.written + second.written
    assert written == len(senders)

    assert not await index._swap_in(services_redis, context, "scratch", written, seqs)
    assert await redis_senders(services_redis) == {"447400000001"}
    assert await services_redis.hgetall(MARKS_KEY) == {"db": context.token, "n": "1", "p0": "1"}
    assert await services_redis.scard("scratch") == len(senders) - half

    # Given every member again, the same scratch set is swapped in.
    async with index._ScratchWriter(services_redis, "scratch", lock="test") as again:
        await again.write(b"".join(lines[:half]))
    assert await index._swap_in(services_redis, context, "scratch", written, seqs)
    assert await redis_senders(services_redis) == set(senders)
    assert await redis_marks(services_redis) == seqs


async def test_the_rebuild_lock_is_renewed_and_released_by_its_holder_only(
    services_redis: aioredis.Redis, redis_client: aioredis.Redis
) -> None:
    """A rebuild that stalled past its lock's expiry, after another worker took the lock: its
    next SADD must not extend the other's lock, nor its end delete it."""
    key = index.REBUILD_LOCK_KEY
    async with index._rebuild_lock(services_redis) as mine:
        async with index._ScratchWriter(services_redis, "scratch", lock=mine) as writer:
            await redis_client.expire(key, 5)
            await writer.write(b"447911123000\n")
        assert 5 < await redis_client.ttl(key) <= index.REBUILD_LOCK_SECONDS  # its own: renewed

        await redis_client.set(key, "another worker's", ex=5)
        async with index._ScratchWriter(services_redis, "scratch", lock=mine) as writer:
            await writer.write(b"447911123001\n")
        assert await redis_client.ttl(key) <= 5  # not renewed
    assert await redis_client.get(key) in ("another worker's", b"another worker's")  # kept
    assert await services_redis.scard("scratch") == 2


async def test_a_redis_refusal_mid_rebuild_stops_the_copy_and_the_next_rebuild_completes(
    owner_pool: asyncpg.Pool,
    validator_pool: asyncpg.Pool,
    services_redis: aioredis.Redis,
    redis_client: aioredis.Redis,
) -> None:
    """Redis at maxmemory (noeviction) refuses a SADD while COPY streams: the error leaves the
    rebuild as the transient fault it is, the COPY is cancelled, the connection goes back to the
    pool usable, nothing is swapped in, and the lock is released for the next attempt."""
    senders = [sender(n) for n in range(8 * index.CHUNK)]
    await forward(owner_pool, senders)
    context = await index_context(validator_pool)
    used = int((await redis_client.info("memory"))["used_memory"])
    before = str((await redis_client.config_get("maxmemory"))["maxmemory"])
    await redis_client.config_set("maxmemory", str(used + 200_000))
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            await index.rebuild(services_redis, context, reason="test")
    finally:
        await redis_client.config_set("maxmemory", before)
    assert isinstance(redis.exceptions.OutOfMemoryError(), TRANSIENT_REDIS_ERRORS)
    assert not await redis_client.exists(SET_KEY, MARKS_KEY, index.REBUILD_LOCK_KEY)

    assert await index.rebuild(services_redis, context, reason="test") == len(senders)
    assert await redis_senders(redis_client) == set(senders)
    assert await redis_marks(redis_client) == await forwarded_seqs(owner_pool)
