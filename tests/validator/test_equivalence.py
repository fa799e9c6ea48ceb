"""SPEC §6.1, sequential equivalence, as a property: for random streams with repeated senders,
random settings, batch sizes and worker counts, the engine leaves exactly the tables and Redis
set that processing one SMS at a time in uuid order leaves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checks
from sms_gateway.redis import RedisLink
from tests.validator.conftest import (
    SENDERS,
    NewSms,
    all_judged,
    final_state,
    insert_sms,
    make_engine,
    out_sms_senders,
    redis_senders,
    reset_results,
    running,
    sequential_state,
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
        st.integers(0, 5), st.sampled_from(["valid", "valid", "late", "other_mobile", "junk"])
    ),
    min_size=1,
    max_size=40,
)
sequences = st.lists(st.sampled_from(CHECK_NAMES), min_size=1, max_size=6, unique=True)
enabled = st.fixed_dictionaries({name: st.booleans() for name in CHECK_NAMES})


@pytest.mark.slow
@settings(
    max_examples=18,
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
)
async def test_any_batching_equals_one_sms_at_a_time(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
    stream: list[tuple[int, str]],
    sequence: list[str],
    enabled_checks: dict[str, bool],
    threshold: int,
    batch_size: int,
    workers: int,
) -> None:
    await reset_results(owner_pool, redis_client, inputs=True)
    common = {
        "check_sequence": json.dumps(sequence),
        "check_enabled": json.dumps(enabled_checks),
        "blacklist_threshold": str(threshold),
    }
    await set_settings(
        owner_pool, common | {"batch_size": str(batch_size), "parallel_workers": str(workers)}
    )
    await insert_sms(receiver_pool, [message(kind, SENDERS[i]) for i, kind in stream])

    async with running(make_engine(validator_pool, redis_link)):
        await wait_for(lambda: all_judged(owner_pool), within=30, what="every SMS judged")
    batched: dict[str, Any] = await final_state(owner_pool)
    batched_set = await redis_senders(redis_client)

    assert batched == await sequential_state(validator_pool, owner_pool, redis_link, redis_client)
    assert batched_set == await redis_senders(redis_client) == await out_sms_senders(owner_pool)
