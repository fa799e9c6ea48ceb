"""SPEC §6.2: a row whose transaction commits after later rows' is still processed, exactly
once and in uuid order: the settle horizon keeps the checkpoint below every open insert."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from sms_gateway import db
from sms_gateway.redis import RedisLink
from tests.validator.conftest import (
    SENDERS,
    all_judged,
    drain,
    insert_sms,
    make_runner,
    stream,
    valid_message,
)


async def test_a_row_committed_late_is_processed_once_and_in_order(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    runner = make_runner(validator_pool, redis_link)
    early = await insert_sms(receiver_pool, stream([(SENDERS[0], True)]))
    async with receiver_pool.acquire() as held, held.transaction():
        # Inserted first, so its uuid is smaller than every row below, but not yet committed.
        late_uuid = await held.fetchval(
            "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
            "VALUES ($1, $2, $3) RETURNING uuid",
            SENDERS[1],
            valid_message(SENDERS[1]),
            datetime.now(UTC),
        )
        later = await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[2:12]))
        assert late_uuid < min(later)  # a naive `uuid > checkpoint` reader would skip it
        assert [o.size for o in await drain(runner)] == [1]  # only the row before the open one
        assert [o.size for o in await drain(runner)] == []
    # Committed now, after the later rows: they are processed after it, it exactly once.
    outcomes = await drain(runner)
    judged = [v.sms.uuid for o in outcomes for v in o.verdicts]
    assert judged == sorted([late_uuid, *later])
    assert await all_judged(owner_pool)
    async with db.transaction(owner_pool, readonly=True) as connection:
        rows = await connection.fetchval("SELECT count(*) FROM sms_monitor")
        forwarded = await connection.fetchval("SELECT count(*) FROM out_sms")
    assert rows == forwarded == 1 + 1 + 10
    assert early[0] < late_uuid
