"""SPEC §6.1, sequential equivalence, as a property: for random streams with repeated senders,
random settings, batch sizes, worker counts and one or two engines (two processes' worth of
workers, the second joining mid-run so that partitions move), the engine leaves exactly the
tables and Redis set that the reference model (tests/validator/model.py: one SMS at a time in
uuid order over plain dicts) says."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checks
from sms_gateway import db
from sms_gateway.redis import RedisLink
from tests.conftest import FreshDatabase
from tests.validator.conftest import (
    SENDERS,
    NewSms,
    all_judged,
    final_state,
    forwarded_senders,
    insert_sms,
    make_engine,
    model_state,
    out_sms_senders,
    redis_senders,
    reset_results,
    running,
    set_settings,
    valid_message,
    wait_for,
)

CHECK_NAMES = tuple(checks.REGISTRY)


def message(kind: str, sender: str) -> NewSms:
    now = datetime.now(UTC)
    if kind == "valid":
        return NewSms(sender, valid_message(sender))
    if kind == "late":  # fails time_window by default
        return NewSms(sender, valid_message(sender), now - timedelta(hours=2))
    if kind == "other_mobile":  # fails mobile (does not match the sender)
        return NewSms(sender, valid_message(SENDERS[-1]))
    return NewSms(sender, f"hello {sender}")  # fails header, hash_length, mobile


streams = st.lists(
    st.tuples(
        st.integers(0, 7), st.sampled_from(["valid", "valid", "late", "other_mobile", "junk"])
    ),
    min_size=1,
    max_size=60,
)
sequences = st.lists(st.sampled_from(CHECK_NAMES), min_size=1, max_size=6, unique=True)
enabled = st.fixed_dictionaries({name: st.booleans() for name in CHECK_NAMES})


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stream=streams,
    sequence=sequences,
    enabled_checks=enabled,
    threshold=st.integers(1, 4),
    batch_size=st.integers(1, 12),
    workers=st.integers(1, 4),
    engines=st.integers(1, 2),
    arrivals=st.integers(1, 3),
)
async def test_any_batching_and_partitioning_equals_the_model(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
    database: FreshDatabase,
    stream: list[tuple[int, str]],
    sequence: list[str],
    enabled_checks: dict[str, bool],
    threshold: int,
    batch_size: int,
    workers: int,
    engines: int,
    arrivals: int,
) -> None:
    await reset_results(owner_pool, redis_client, inputs=True)
    await set_settings(
        owner_pool,
        {
            "check_sequence": json.dumps(sequence),
            "check_enabled": json.dumps(enabled_checks),
            "blacklist_threshold": str(threshold),
            "batch_size": str(batch_size),
            "parallel_workers": str(workers),
        },
    )
    sms = [message(kind, SENDERS[i]) for i, kind in stream]
    waves = [sms[i::arrivals] for i in range(arrivals)]  # SMS keep arriving while judging
    second_pool = await db.create_pool(database.url("sms_validator"), min_size=0, max_size=6)
    try:
        async with running(make_engine(validator_pool, redis_link)):
            await insert_sms(receiver_pool, waves[0])
            if engines == 2:
                # A second process joins mid-run: partitions move to it between batches.
                async with running(make_engine(second_pool, redis_link)):
                    await _arrive(receiver_pool, waves[1:])
                    await wait_for(lambda: all_judged(owner_pool), within=30, what="all judged")
            else:
                await _arrive(receiver_pool, waves[1:])
            await wait_for(lambda: all_judged(owner_pool), within=30, what="every SMS judged")
    finally:
        await db.close_pool(second_pool)
    judged: dict[str, Any] = await final_state(owner_pool)
    assert judged == await model_state(owner_pool)
    assert (
        await redis_senders(redis_client)
        == await out_sms_senders(owner_pool)
        == await forwarded_senders(owner_pool)
    )


async def _arrive(pool: asyncpg.Pool, waves: list[list[NewSms]]) -> None:
    for wave in waves:
        await asyncio.sleep(0.05)
        if wave:
            await insert_sms(pool, wave)
