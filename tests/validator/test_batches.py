"""The pipeline and the batch transaction (SPEC §5.2, §5.3 state, §6.3, §6.4) against real
PostgreSQL through pgbouncer and real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Final
from uuid import UUID

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

import checks
from checks.base import CheckContext, CheckResult, SmsToJudge
from services.validator import sql
from sms_gateway import db
from sms_gateway.redis import RedisLink
from tests.validator.conftest import (
    SENDERS,
    NewSms,
    drain,
    final_state,
    forwarded_seqs,
    insert_sms,
    make_runner,
    model_state,
    out_sms_senders,
    redis_marks,
    redis_senders,
    sequential_state,
    set_settings,
    stream,
    valid_message,
)

ALL_PASS: Final = (1, 1, 1, 1, 1, 1)


async def monitor_row(pool: asyncpg.Pool, uuid: UUID) -> asyncpg.Record:
    async with db.transaction(pool, readonly=True) as connection:
        row = await connection.fetchrow("SELECT * FROM sms_monitor WHERE uuid = $1", uuid)
    assert row is not None
    return row


async def checkpoint(pool: asyncpg.Pool) -> UUID:
    """The point before which every SMS is judged: the smallest partition checkpoint (SPEC
    §6.3; the engine publishes it as last_processed_uuid)."""
    async with db.transaction(pool, readonly=True) as connection:
        lowest: UUID = await connection.fetchval(
            "SELECT checkpoint FROM validator_partitions ORDER BY checkpoint LIMIT 1"
        )
    return lowest


async def set_checkpoint(pool: asyncpg.Pool, value: UUID) -> None:
    async with db.transaction(pool) as connection:
        await connection.execute("UPDATE validator_partitions SET checkpoint = $1", value)


async def judged_up_to(pool: asyncpg.Pool, last: UUID) -> None:
    """Every SMS up to `last` is judged and the checkpoint stands at or after it, before any
    SMS not yet judged."""
    point = await checkpoint(pool)
    assert point >= last
    async with db.transaction(pool, readonly=True) as connection:
        unjudged = await connection.fetchval(
            "SELECT uuid FROM input_sms i WHERE NOT EXISTS (SELECT FROM sms_monitor m "
            "WHERE m.uuid = i.uuid AND m.overall_status <> 'pending') ORDER BY uuid LIMIT 1"
        )
    assert unjudged is None or point < unjudged


async def test_valid_sms_is_forwarded_once_and_its_sender_indexed(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    sender = SENDERS[0]
    uuids = await insert_sms(receiver_pool, stream([(sender, True), (sender, True)]))
    outcomes = await drain(make_runner(validator_pool, redis_link))
    assert len(outcomes) == 1
    first, second = [await monitor_row(owner_pool, u) for u in uuids]
    assert first["overall_status"] == "valid"
    assert tuple(first[f"{n}_check"] for n in checks.REGISTRY) == ALL_PASS
    assert first["batch_id"] is not None
    assert first["processing_started_at"] <= first["processing_completed_at"]
    # The second SMS of the sender in the same batch sees the first forwarded.
    assert second["overall_status"] == "invalid"
    assert second["failed_at_check"] == "duplicate"
    assert (second["blacklist_check"], second["duplicate_check"], second["header_check"]) == (
        1,
        2,
        0,
    )
    state = await final_state(owner_pool)
    assert state["out_sms"] == [(uuids[0], sender, valid_message(sender))]
    assert state["count_sms"] == [(sender, 2)]
    assert await redis_senders(redis_client) == {sender}
    marks = await redis_marks(redis_client)
    assert marks == await forwarded_seqs(owner_pool)
    assert sum(marks.values()) == 1
    await judged_up_to(owner_pool, uuids[-1])


async def test_threshold_blacklists_across_batches(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    await set_settings(owner_pool, {"batch_size": "3"})
    sender = SENDERS[1]
    uuids = await insert_sms(receiver_pool, stream([(sender, False)] * 12))
    outcomes = await drain(make_runner(validator_pool, redis_link))
    assert [o.size for o in outcomes] == [3, 3, 3, 3]
    rows = [await monitor_row(owner_pool, u) for u in uuids]
    assert [r["blacklist_check"] for r in rows] == [1] * 10 + [2, 2]
    assert [r["failed_at_check"] for r in rows] == ["header"] * 10 + ["blacklist"] * 2
    state = await final_state(owner_pool)
    assert state["count_sms"] == [(sender, 12)]
    assert state["blacklist_sms"] == [(sender, "threshold_exceeded", 12)]
    assert state["out_sms"] == []


async def test_disabled_and_unlisted_checks(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    enabled = dict.fromkeys(checks.REGISTRY, True) | {"header": False}
    await set_settings(
        owner_pool,
        {
            "check_sequence": json.dumps(["header", "mobile", "blacklist"]),
            "check_enabled": json.dumps(enabled),
        },
    )
    sender = SENDERS[2]
    [uuid] = await insert_sms(receiver_pool, stream([(sender, False)]))
    await drain(make_runner(validator_pool, redis_link))
    row = await monitor_row(owner_pool, uuid)
    # header disabled records 3 and the pipeline goes on; unlisted checks stay 0.
    assert (row["header_check"], row["mobile_check"], row["blacklist_check"]) == (3, 1, 1)
    assert (row["duplicate_check"], row["hash_length_check"], row["time_window_check"]) == (0, 0, 0)
    assert row["overall_status"] == "valid"

    await set_settings(
        owner_pool, {"check_enabled": json.dumps(dict.fromkeys(checks.REGISTRY, False))}
    )
    [skipped] = await insert_sms(receiver_pool, stream([(SENDERS[3], True)]))
    await drain(make_runner(validator_pool, redis_link))
    row = await monitor_row(owner_pool, skipped)
    assert row["overall_status"] == "skipped"
    assert await out_sms_senders(owner_pool) == {sender}


class Flaky:
    """A check that raises for one sender until it is fixed."""

    name = "header"

    def __init__(self, poisoned: str) -> None:
        self.poisoned = poisoned
        self.calls = 0

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        if sms.sender_number == self.poisoned:
            self.calls += 1
            raise RuntimeError("a bug in the check")
        return checks.REGISTRY["header"](sms, context)


async def test_a_raising_check_marks_error_without_side_effects_and_requeue_counts_once(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    poisoned, other = SENDERS[4], SENDERS[5]
    flaky = Flaky(poisoned)
    registry = dict(checks.REGISTRY) | {"header": flaky}
    uuids = await insert_sms(receiver_pool, stream([(poisoned, True), (other, True)]))
    runner = make_runner(validator_pool, redis_link, registry)
    await drain(runner)
    bad = await monitor_row(owner_pool, uuids[0])
    assert bad["overall_status"] == "error"
    assert bad["failed_at_check"] == "header"
    assert bad["retry_count"] == 3 == flaky.calls  # max_database_retries attempts
    assert (await monitor_row(owner_pool, uuids[1]))["overall_status"] == "valid"
    state = await final_state(owner_pool)
    assert state["count_sms"] == [(other, 1)]  # the error SMS left no count
    await judged_up_to(owner_pool, uuids[1])

    # The admin's requeue (SPEC §7), then the check is fixed: the sweeper processes it once.
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "UPDATE sms_monitor SET overall_status = 'pending', blacklist_check = 0, "
            "duplicate_check = 0, header_check = 0, hash_length_check = 0, mobile_check = 0, "
            "time_window_check = 0, failed_at_check = NULL WHERE uuid = $1 "
            "AND overall_status = 'error'",
            uuids[0],
        )
    flaky.poisoned = "nobody"
    sweeps = await drain(runner, kind="sweep")
    assert [(o.size, o.requeued) for o in sweeps] == [(1, 1)]
    again = await monitor_row(owner_pool, uuids[0])
    assert again["overall_status"] == "valid"
    assert again["retry_count"] == 3
    assert await drain(runner, kind="sweep") == []
    state = await final_state(owner_pool)
    assert state["count_sms"] == [(poisoned, 1), (other, 1)]
    assert await redis_senders(redis_client) == {poisoned, other}


async def test_redis_loss_is_rebuilt_and_a_lagging_index_caught_up(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    runner = make_runner(validator_pool, redis_link)
    await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[:30]))
    await drain(runner)
    await redis_client.flushdb()
    # The same senders again: each must be judged a duplicate from the rebuilt set.
    await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[:30]))
    await drain(runner)
    assert await redis_senders(redis_client) == set(SENDERS[:30])
    # A crash between commit and write-through: Redis lacks the last senders, marks behind.
    before = await redis_marks(redis_client)
    await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[30:40]))
    await drain(runner)
    await redis_client.srem("out_sms_numbers", *SENDERS[30:40])
    await redis_client.hset(
        "out_sms_numbers:marks", mapping={f"p{p}": seq for p, seq in before.items()}
    )
    await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[30:45]))
    await drain(runner)
    state = await final_state(owner_pool)
    forwarded = [row[1] for row in state["out_sms"]]
    assert sorted(forwarded) == sorted(SENDERS[:45])  # one row per sender, never two
    assert await redis_senders(redis_client) == set(SENDERS[:45])
    marks = await redis_marks(redis_client)
    assert marks == await forwarded_seqs(owner_pool)
    assert sum(marks.values()) == 45


async def test_settings_take_effect_within_one_batch(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    runner = make_runner(validator_pool, redis_link)
    await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[:40]))
    await set_settings(owner_pool, {"batch_size": "7"})
    assert (await runner.run("batch")).size == 7
    await set_settings(owner_pool, {"batch_size": "3", "maintenance_mode": "true"})
    paused = await runner.run("batch")
    assert (paused.paused, paused.size) == ("maintenance", 0)
    await set_settings(
        owner_pool,
        {"maintenance_mode": "false", "check_sequence": json.dumps(["header", "blacklist"])},
    )
    outcome = await runner.run("batch")
    assert outcome.size == 3
    assert all(list(v.results) == ["header", "blacklist"] for v in outcome.verdicts)
    await set_settings(
        owner_pool,
        {"check_enabled": json.dumps(dict.fromkeys(checks.REGISTRY, True) | {"header": False})},
    )
    outcome = await runner.run("batch")
    assert all(v.results["header"] is CheckResult.SKIPPED for v in outcome.verdicts)
    await set_settings(owner_pool, {"log_level": "WARNING"})
    await runner.run("batch")
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger().setLevel(logging.INFO)


async def test_an_operators_blacklist_row_keeps_its_reason(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    sender = SENDERS[6]
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "INSERT INTO blacklist_sms (sender_number, reason, message_count) "
            "VALUES ($1, 'fraud', 0)",
            sender,
        )
    await set_settings(owner_pool, {"blacklist_threshold": "1"})
    uuids = await insert_sms(receiver_pool, [NewSms(sender, valid_message(sender))] * 2)
    await drain(make_runner(validator_pool, redis_link))
    assert [(await monitor_row(owner_pool, u))["failed_at_check"] for u in uuids] == [
        "blacklist",
        "blacklist",
    ]
    state = await final_state(owner_pool)
    assert state["blacklist_sms"] == [(sender, "fraud", 2)]


@pytest.mark.parametrize("workers", [1, 3])
async def test_two_runners_at_once_equal_one(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
    workers: int,
) -> None:
    rng = random.Random(workers)
    senders = SENDERS[:25]
    await set_settings(owner_pool, {"batch_size": "9", "blacklist_threshold": "4"})
    sms = [
        NewSms(s, valid_message(s) if rng.random() < 0.7 else "bad")
        for s in (rng.choice(senders) for _ in range(300))
    ]
    await insert_sms(receiver_pool, sms)
    runners = [make_runner(validator_pool, redis_link) for _ in range(workers + 1)]
    await asyncio.gather(*(drain(r) for r in runners))
    concurrent = await final_state(owner_pool)
    assert concurrent == await sequential_state(
        validator_pool, owner_pool, redis_link, redis_client
    )
    assert await redis_senders(redis_client) == await out_sms_senders(owner_pool)


async def test_a_bad_published_checkpoint_never_changes_what_is_judged(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SPEC §3: a bad value written by hand is refused and the last good one kept. The engine
    judges from its partitions' checkpoints; `last_processed_uuid` only reports the lowest of
    them, so a broken report changes nothing, and the engine's upkeep writes a good one."""
    runner = make_runner(validator_pool, redis_link)
    await insert_sms(receiver_pool, stream((s, False) for s in SENDERS[:3]))
    await drain(runner)
    await set_settings(owner_pool, {"last_processed_uuid": "not-a-uuid"})
    later = await insert_sms(receiver_pool, stream((s, False) for s in SENDERS[3:6]))
    assert [v.sms.uuid for o in await drain(runner) for v in o.verdicts] == later
    await judged_up_to(owner_pool, later[-1])
    assert any(
        getattr(r, "setting_key", None) == "last_processed_uuid" and r.levelno == logging.ERROR
        for r in caplog.records
    )

    # A process that never saw a good value judges exactly the new SMS.
    newest = await insert_sms(receiver_pool, stream([(SENDERS[6], False)]))
    fresh = make_runner(validator_pool, redis_link)
    assert [v.sms.uuid for o in await drain(fresh) for v in o.verdicts] == newest
    await judged_up_to(owner_pool, newest[-1])
    state = await final_state(owner_pool)
    assert len(state["sms_monitor"]) == 7
    assert sum(count for _, count in state["count_sms"]) == 7  # nothing judged twice

    async with db.transaction(owner_pool) as connection:
        await connection.execute(sql.PUBLISH_CHECKPOINT)
        published = await connection.fetchval(
            "SELECT setting_value FROM system_settings WHERE setting_key = 'last_processed_uuid'"
        )
    assert UUID(published) == await checkpoint(owner_pool)


async def test_no_partitions_pauses_the_engine(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    """Without partition rows there is nothing to lease: claim nothing, say why, never
    crash."""
    async with db.transaction(owner_pool) as connection:
        await connection.execute("DELETE FROM validator_partitions")
    await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[:2]))
    runner = make_runner(validator_pool, redis_link)
    await runner.warm_up()
    paused = await runner.run("batch")
    assert (paused.paused, paused.size) == ("configuration", 0)
    assert (await runner.run("sweep")).paused == "configuration"


def sweeper_found(reason: str) -> float:
    return REGISTRY.get_sample_value("sms_validator_sweeper_found_total", {"reason": reason}) or 0.0


async def test_the_sweeper_judges_rows_left_below_the_checkpoint_once(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    """The defence in depth of SPEC §6.2: committed rows below the checkpoint without a result
    (the horizon prevents them; a clock stepped back could make them) are judged by the sweeper,
    once, counted as missed, and the checkpoint stays where it is."""
    runner = make_runner(validator_pool, redis_link)
    uuids = await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[:3]))
    await set_checkpoint(owner_pool, uuids[-1])
    assert await drain(runner) == []  # batches only look above the checkpoint
    missed_before = sweeper_found("missed")
    sweeps = await drain(runner, kind="sweep")
    assert [(o.size, o.requeued) for o in sweeps] == [(3, 0)]
    assert [v.sms.uuid for v in sweeps[0].verdicts] == uuids
    assert sweeper_found("missed") - missed_before == 3
    assert await drain(runner, kind="sweep") == []
    assert await checkpoint(owner_pool) >= uuids[-1]
    assert await out_sms_senders(owner_pool) == set(SENDERS[:3])
    assert await redis_senders(redis_client) == set(SENDERS[:3])


async def test_a_row_missed_while_another_partition_lags_is_found_once_it_caught_up(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
) -> None:
    """The look-back's window ends at the lowest checkpoint of all partitions, below which every
    row has a result unless it was missed: a row missed below its own partition's checkpoint
    waits while another partition lags behind it, and is judged, once and counted as missed,
    when that partition has caught up."""
    async with db.transaction(owner_pool, readonly=True) as connection:
        count = await connection.fetchval("SELECT count(*) FROM validator_partitions")
        partition_of = {
            s: await connection.fetchval("SELECT sms_sender_partition($1, $2)", s, count)
            for s in SENDERS[:40]
        }
    early = SENDERS[0]
    late = next(s for s in SENDERS[1:40] if partition_of[s] != partition_of[early])
    missed, lagging = await insert_sms(
        receiver_pool, [NewSms(early, valid_message(early)), NewSms(late, valid_message(late))]
    )
    # Every partition past both rows (so `missed` is missed), but the late sender's, before both.
    await set_checkpoint(owner_pool, lagging)
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "UPDATE validator_partitions SET checkpoint = $1 WHERE partition_no = $2",
            UUID(int=0),
            partition_of[late],
        )
    runner = make_runner(validator_pool, redis_link)
    missed_before = sweeper_found("missed")
    assert await drain(runner, kind="sweep") == []  # the lowest checkpoint is the zero uuid
    caught_up = await drain(runner)
    assert [v.sms.uuid for o in caught_up for v in o.verdicts] == [lagging]
    found = await drain(runner, kind="sweep")
    assert [v.sms.uuid for o in found for v in o.verdicts] == [missed]
    assert sweeper_found("missed") - missed_before == 1
    assert await drain(runner, kind="sweep") == []


async def test_repartitioning_offline_judges_on_as_the_model_says(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    """docs/operations.md's way to change the number of partitions: refused while a validator
    holds a live lease; then, from partitions judged to different points, every SMS is still
    judged once, each sender's in order, and the Redis set is rebuilt for the new count."""
    rng = random.Random(5)
    await set_settings(owner_pool, {"batch_size": "7", "blacklist_threshold": "3"})
    senders = SENDERS[:30]

    def wave(count: int) -> list[NewSms]:
        return [
            NewSms(s, valid_message(s) if rng.random() < 0.7 else "bad")
            for s in (rng.choice(senders) for _ in range(count))
        ]

    await insert_sms(receiver_pool, wave(120))
    runner = make_runner(validator_pool, redis_link)
    await drain(runner)
    await insert_sms(receiver_pool, wave(120))
    await asyncio.sleep(0.05)
    for _ in range(5):  # part of the second wave only
        await runner.run("batch")
    with pytest.raises(asyncpg.ObjectInUseError):
        async with db.transaction(owner_pool) as connection:
            await connection.execute("SELECT sms_repartition(5)")
    async with db.transaction(owner_pool) as connection:
        # The validators stopped: their leases ran out.
        await connection.execute(
            "UPDATE validator_partitions SET lease_expires_at = now() - interval '1 second'"
        )
        # Partitions judged to different points, as with several workers.
        await connection.execute(
            "UPDATE validator_partitions SET checkpoint = '00000000-0000-0000-0000-000000000000' "
            "WHERE partition_no % 3 = 0"
        )
        assert await connection.fetchval("SELECT sms_repartition(5)") == 5
        assert await connection.fetchval("SELECT count(*) FROM validator_partitions") == 5
    await insert_sms(receiver_pool, wave(60))
    await drain(make_runner(validator_pool, redis_link))  # a validator started afresh
    assert await final_state(owner_pool) == await model_state(owner_pool)
    marks = await redis_marks(redis_client)
    assert marks == await forwarded_seqs(owner_pool)
    assert set(marks) == set(range(5))
    assert await redis_senders(redis_client) == await out_sms_senders(owner_pool)


async def test_an_sms_the_database_refuses_to_store_is_marked_error_and_the_rest_judged(
    validator_pool: asyncpg.Pool,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    """SPEC §6.4: a poison SMS must not stall its batch for ever. Here out_sms was changed by
    hand so that one valid SMS no longer fits (a DataError on every attempt): the batch is
    narrowed until that SMS is alone, it is written `error` with no side effects, and every other
    SMS is judged as the model says."""
    async with db.transaction(owner_pool) as connection:
        await connection.execute("ALTER TABLE out_sms ALTER COLUMN sms_message TYPE varchar(34)")
    poisoned = SENDERS[10]
    long_header = f"ABCDEFGHIJK 0123456789abcdef +{poisoned}"  # valid, but 42 characters
    sms = [NewSms(s, valid_message(s)) for s in SENDERS[11:20]]
    sms.insert(4, NewSms(poisoned, long_header))
    await set_settings(owner_pool, {"batch_size": "10"})
    uuids = await insert_sms(receiver_pool, sms)
    await drain(make_runner(validator_pool, redis_link))
    bad = await monitor_row(owner_pool, uuids[4])
    assert (bad["overall_status"], bad["failed_at_check"]) == ("error", "write")
    state = await final_state(owner_pool)
    assert poisoned not in {sender for sender, _ in state["count_sms"]}  # no side effects
    assert [row[1] for row in state["out_sms"]] == list(SENDERS[11:20])
    statuses = [(await monitor_row(owner_pool, u))["overall_status"] for u in uuids]
    assert statuses == ["valid"] * 4 + ["error"] + ["valid"] * 5
    assert await redis_senders(redis_client) == set(SENDERS[11:20])
