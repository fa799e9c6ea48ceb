"""Leases on partitions (services/validator/partitions.py): every partition held by exactly one
live worker, a fair share each, and a hand-over that takes a batch, not a heartbeat."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

from services.validator.partitions import CLAIM_RETRY_SECONDS, Leases, fair_share
from sms_gateway import db
from sms_gateway.redis import RedisLink
from tests.validator.conftest import SENDERS, NewSms, insert_sms, make_runner, valid_message

# Heartbeats an hour apart: whatever moves within a test was moved by a batch or a retry.
SLOW = {"lease_seconds": 3600.0, "heartbeat_seconds": 3600.0}


def test_fair_shares_add_up_to_the_partitions_and_differ_by_one_at_most() -> None:
    for partitions in range(0, 70):
        for workers in range(1, 40):
            shares = [fair_share(partitions, workers, rank) for rank in range(workers)]
            assert sum(shares) == partitions
            assert max(shares) - min(shares) <= 1
            assert shares == sorted(shares, reverse=True)


async def partition_count(pool: asyncpg.Pool) -> int:
    async with db.transaction(pool, readonly=True) as connection:
        return int(await connection.fetchval("SELECT count(*) FROM validator_partitions"))


async def owners(pool: asyncpg.Pool) -> dict[int, str | None]:
    async with db.transaction(pool, readonly=True) as connection:
        rows = await connection.fetch("SELECT partition_no, owner FROM validator_partitions")
    return {row["partition_no"]: row["owner"] for row in rows}


async def heartbeat_when_due(leases: Leases, *, within: float) -> frozenset[int]:
    deadline = asyncio.get_running_loop().time() + within
    while not leases.due:
        assert asyncio.get_running_loop().time() < deadline, f"{leases.worker_id} never due"
        await asyncio.sleep(0.01)
    return await leases.heartbeat()


async def test_a_joining_worker_gets_its_share_after_one_batch_of_the_holder(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    """A worker alone holds every partition; a second joins and finds none free. The first's
    next batch sees two live workers and makes it give half back at once; the second asks
    again within CLAIM_RETRY_SECONDS and takes them. No heartbeat interval passes."""
    total = await partition_count(owner_pool)
    first = Leases(validator_pool, "host/1/0/aaaaaa", **SLOW)
    second = Leases(validator_pool, "host/2/0/bbbbbb", **SLOW)
    assert len(await first.heartbeat()) == total
    assert await second.heartbeat() == frozenset()
    due_before_the_batch = first.due  # nothing but a batch can tell it yet
    assert not due_before_the_batch

    await insert_sms(receiver_pool, [NewSms(s, valid_message(s)) for s in SENDERS[:20]])
    await asyncio.sleep(0.05)
    outcome = await make_runner(validator_pool, redis_link).run("batch", first)
    assert outcome.size == 20  # it judged, then learnt it holds too much
    assert first.due
    kept = await first.heartbeat()
    assert len(kept) == total // 2

    taken = await heartbeat_when_due(second, within=CLAIM_RETRY_SECONDS + 1.0)
    assert len(taken) == total - total // 2
    assert kept.isdisjoint(taken)
    held_by = await owners(owner_pool)
    assert {p for p, o in held_by.items() if o == first.worker_id} == kept
    assert {p for p, o in held_by.items() if o == second.worker_id} == taken
    # At its share, the second worker goes back to its slow heartbeat.
    await asyncio.sleep(CLAIM_RETRY_SECONDS * 2)
    assert not second.due


async def test_three_workers_split_the_partitions_and_none_keeps_asking(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    """Shares follow the workers' ids and add up to the partitions: 32 over three is 11, 11
    and 10, every partition is held once, and no worker keeps asking for more."""
    total = await partition_count(owner_pool)
    workers = [Leases(validator_pool, f"host/{n}/0/cccccc", **SLOW) for n in range(3)]
    assert len(await workers[0].heartbeat()) == total
    for joining in workers[1:]:
        assert await joining.heartbeat() == frozenset()
    await insert_sms(receiver_pool, [NewSms(s, valid_message(s)) for s in SENDERS[:10]])
    await asyncio.sleep(0.05)
    await make_runner(validator_pool, redis_link).run("batch", workers[0])
    assert workers[0].due
    await workers[0].heartbeat()
    for joining in workers[1:]:
        await heartbeat_when_due(joining, within=CLAIM_RETRY_SECONDS + 1.0)

    assert [len(w.held) for w in workers] == [fair_share(total, 3, rank) for rank in range(3)]
    assert sum(len(w.held) for w in workers) == total
    held_by = await owners(owner_pool)
    assert all(held_by[p] == w.worker_id for w in workers for p in w.held)
    await asyncio.sleep(CLAIM_RETRY_SECONDS * 2)
    assert not any(w.due for w in workers)
