"""GET /stats (SPEC §7) and the exact per-status counters behind it (db/init/0007)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

import asyncpg
import httpx

from sms_gateway import db
from sms_gateway.migrate import discover
from tests.admin.conftest import insert_sms
from tests.conftest import FreshDatabase

COUNTED = (
    "SELECT overall_status, sum(sms_count)::int FROM sms_status_counts GROUP BY 1 "
    "HAVING sum(sms_count) <> 0"
)
GROUPED = "SELECT coalesce(overall_status, 'unset'), count(*)::int FROM sms_monitor GROUP BY 1"


async def counters_and_truth(pool: asyncpg.Pool) -> tuple[dict[str, int], dict[str, int]]:
    async with db.transaction(pool, readonly=True, isolation="repeatable_read") as connection:
        counted = dict(await connection.fetch(COUNTED))
        grouped = dict(await connection.fetch(GROUPED))
    return counted, grouped


async def set_checkpoint(pool: asyncpg.Pool, checkpoint: UUID) -> None:
    async with db.transaction(pool) as connection:
        await connection.execute(
            "UPDATE system_settings SET setting_value = $1 "
            "WHERE setting_key = 'last_processed_uuid'",
            str(checkpoint),
        )


async def test_stats_on_a_known_data_set(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    judged = {"valid": 5, "invalid": 3, "skipped": 2, "error": 1}
    last = None
    for status, how_many in judged.items():
        for _ in range(how_many):
            last = await insert_sms(
                owner_pool, "447700900123", overall_status=status, forwarded=status == "valid"
            )
    # Judged long ago: outside the throughput window.
    await insert_sms(
        owner_pool, "447700900124", overall_status="invalid", processed_ago_seconds=3600
    )
    assert last is not None
    await set_checkpoint(owner_pool, last)
    waiting = [await insert_sms(owner_pool, "447700900125") for _ in range(4)]

    stats = (await authed.get("/stats")).json()

    assert stats["by_status"] == {"error": 1, "invalid": 4, "skipped": 2, "valid": 5}
    assert stats["total_judged"] == 12
    assert stats["checkpoint"] == str(last)
    backlog = stats["backlog"]
    # The SMS after the checkpoint: 1 long-ago invalid one (inserted after `last`) + 4 waiting.
    assert (backlog["after_checkpoint"], backlog["after_checkpoint_exact"]) == (5, True)
    assert backlog["pending"] == 0
    async with db.transaction(owner_pool, readonly=True) as connection:
        first_after = await connection.fetchval(
            "SELECT created_at FROM input_sms WHERE uuid > $1 ORDER BY uuid LIMIT 1", last
        )
    assert datetime.fromisoformat(backlog["oldest_unprocessed_at"]) == first_after
    assert backlog["oldest_unprocessed_age_seconds"] >= 0
    throughput = stats["throughput"]
    assert throughput["window_seconds"] == 60
    assert throughput["processed_per_second"] == 11 / 60
    assert throughput["received_per_second"] == (12 + len(waiting)) / 60


async def test_a_requeue_moves_the_sms_into_the_backlog(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    failed = await insert_sms(owner_pool, "447700900123", overall_status="error", retry_count=3)
    await set_checkpoint(owner_pool, failed)
    before = (await authed.get("/stats")).json()
    assert (before["by_status"], before["backlog"]["pending"]) == ({"error": 1}, 0)
    assert before["backlog"]["oldest_unprocessed_at"] is None

    assert (await authed.post(f"/sms/{failed}/requeue")).status_code == 200

    after = (await authed.get("/stats")).json()
    assert after["by_status"] == {"pending": 1}
    assert after["backlog"]["pending"] == 1
    assert after["backlog"]["oldest_unprocessed_at"] is not None
    counted, grouped = await counters_and_truth(owner_pool)
    assert counted == grouped


async def test_an_empty_gateway(authed: httpx.AsyncClient) -> None:
    stats = (await authed.get("/stats")).json()
    assert stats["by_status"] == {}
    assert stats["total_judged"] == 0
    assert stats["checkpoint"] == "00000000-0000-0000-0000-000000000000"
    assert stats["backlog"]["after_checkpoint"] == 0
    assert stats["backlog"]["oldest_unprocessed_age_seconds"] is None


async def test_counters_stay_exact_under_concurrent_writers(
    database: FreshDatabase, owner_pool: asyncpg.Pool
) -> None:
    """Validator-like upserts, admin requeues and an operator's deletes, some rolled back."""
    async with db.transaction(owner_pool) as connection:
        uuids: list[UUID] = [
            row["uuid"]
            for row in await connection.fetch(
                "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
                "SELECT '4477009' || lpad(n::text, 5, '0'), 'm', now() "
                "FROM generate_series(1, 400) AS n RETURNING uuid"
            )
        ]
    validator = await db.create_pool(database.url("sms_validator"), min_size=0, max_size=4)
    admin = await db.create_pool(database.url("sms_admin"), min_size=0, max_size=2)
    operator = await db.create_pool(database.url(), min_size=0, max_size=2)
    statuses = ["valid", "invalid", "skipped", "error", "pending"]

    async def validator_batches(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            batch = rng.sample(uuids, 20)
            results = [rng.choice(statuses) for _ in batch]
            try:
                async with db.transaction(validator) as connection:
                    await connection.execute(
                        "INSERT INTO sms_monitor (uuid, overall_status) "
                        "SELECT * FROM unnest($1::uuid[], $2::text[]) "
                        "ON CONFLICT (uuid) DO UPDATE SET overall_status = excluded.overall_status",
                        batch,
                        results,
                    )
                    if rng.random() < 0.2:
                        raise RuntimeError("roll this batch back")
            except RuntimeError:
                pass
            except asyncpg.DeadlockDetectedError:
                pass  # a transient fault the validator retries; nothing of it stays

    async def admin_work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            if rng.random() < 0.7:
                async with db.transaction(admin) as connection:
                    await connection.execute(
                        "UPDATE sms_monitor SET overall_status = 'pending' "
                        "WHERE uuid = $1 AND overall_status = 'error'",
                        rng.choice(uuids),
                    )
            else:  # by hand: the admin service deletes no sms_monitor row
                async with db.transaction(operator) as connection:
                    await connection.execute(
                        "DELETE FROM sms_monitor WHERE uuid = $1", rng.choice(uuids)
                    )

    try:
        await asyncio.gather(
            *(validator_batches(seed) for seed in range(4)),
            *(admin_work(seed) for seed in (10, 11)),
        )
    finally:
        await db.close_pool(validator)
        await db.close_pool(admin)
        await db.close_pool(operator)

    counted, grouped = await counters_and_truth(owner_pool)
    assert sum(grouped.values()) > 0
    assert counted == grouped


async def test_the_migration_recounts_to_the_same_numbers(
    database: FreshDatabase, owner_pool: asyncpg.Pool
) -> None:
    for status in ("valid", "valid", "invalid", "error"):
        await insert_sms(owner_pool, "447700900123", overall_status=status)
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "UPDATE sms_monitor SET overall_status = NULL WHERE overall_status = 'invalid'"
        )
    before = await counters_and_truth(owner_pool)
    assert before[0] == before[1] == {"valid": 2, "unset": 1, "error": 1}

    [migration] = [m for m in discover() if m.version.startswith("0007")]
    connection = await asyncpg.connect(database.direct_url())
    try:
        await connection.execute(migration.sql)
        shards = await connection.fetchval("SELECT count(*) FROM sms_status_counts")
    finally:
        await connection.close()
    assert await counters_and_truth(owner_pool) == before
    assert shards == 3  # recounted into one shard per status

    async with db.transaction(owner_pool) as connection:
        await connection.execute("TRUNCATE sms_monitor")
    assert await counters_and_truth(owner_pool) == ({}, {})


async def two_writers_on_one_shard(database: FreshDatabase) -> list[asyncpg.Connection]:
    """Two direct connections whose server processes fall on the same `pid % 16` (by the
    pigeonhole principle, 17 connections hold such a pair); the others are closed."""
    connections = [await asyncpg.connect(database.direct_url()) for _ in range(17)]
    by_shard: dict[int, asyncpg.Connection] = {}
    pair: list[asyncpg.Connection] = []
    for connection in connections:
        shard = connection.get_server_pid() % 16
        if not pair and shard in by_shard:
            pair = [by_shard[shard], connection]
        by_shard.setdefault(shard, connection)
    for connection in connections:
        if connection not in pair:
            await connection.close()
    return pair


async def test_writers_moving_statuses_in_opposite_orders_do_not_deadlock_on_the_counters(
    database: FreshDatabase, owner_pool: asyncpg.Pool
) -> None:
    """Each transaction writes a status the other one wrote first. The sms_monitor rows are
    all different, so only the counters could make them wait for each other."""
    async with db.transaction(owner_pool) as connection:
        first, second, third, fourth = [
            row["uuid"]
            for row in await connection.fetch(
                "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
                "SELECT '447700900123', 'm', now() FROM generate_series(1, 4) RETURNING uuid"
            )
        ]
    one, other = await two_writers_on_one_shard(database)
    insert = "INSERT INTO sms_monitor (uuid, overall_status) VALUES ($1, $2)"
    try:
        await one.execute("BEGIN")
        await other.execute("BEGIN")
        await one.execute(insert, first, "valid")
        await other.execute(insert, second, "invalid")
        waiting = asyncio.create_task(one.execute(insert, third, "invalid"))
        await asyncio.sleep(0.2)
        await other.execute(insert, fourth, "valid")
        await other.execute("COMMIT")
        await waiting
        await one.execute("COMMIT")
    finally:
        await one.close()
        await other.close()
    counted, grouped = await counters_and_truth(owner_pool)
    assert counted == grouped == {"valid": 2, "invalid": 2}


def _day_key(day: date, n: int = 0) -> UUID:
    """A UUIDv7 of an instant of `day` (the layout of uuid_generate_v7, 0001)."""
    millis = int(datetime.combine(day, time(1), tzinfo=UTC).timestamp() * 1000)
    return UUID(int=(millis << 80) | (0x7 << 76) | (0b10 << 62) | n)


async def test_storage_shows_partitions_the_next_drop_and_what_is_kept(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    today = datetime.now(UTC).date()
    dropped_day, kept_day = today - timedelta(days=41), today - timedelta(days=40)
    async with db.transaction(owner_pool) as connection:
        for day, status in ((dropped_day, "valid"), (kept_day, "pending")):
            await connection.execute("SELECT sms_time_partition_create($1)", day)
            key = _day_key(day)
            await connection.execute(
                "INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp) "
                "VALUES ($1, '447700900123', 'hi', now())",
                key,
            )
            await connection.execute(
                "INSERT INTO sms_monitor (uuid, overall_status) VALUES ($1, $2)", key, status
            )
    for day in (dropped_day, kept_day):
        name = f"p{day:%Y%m%d}"
        async with db.transaction(owner_pool) as connection:
            await connection.execute("SELECT sms_time_partition_examine($1)", name)
        async with db.transaction(owner_pool) as connection:
            await connection.execute("SELECT sms_time_partition_drop($1, 30, 1000, false)", name)

    stats = (await authed.get("/stats")).json()

    storage = stats["storage"]
    assert storage["retention_days"] == 30
    assert set(storage["table_bytes"]) == {"input_sms", "sms_monitor", "out_sms"}
    assert all(size > 0 for size in storage["table_bytes"].values())
    assert storage["oldest_partition"]["partition"] == f"p{kept_day:%Y%m%d}"
    assert storage["next_drop"]["partition"] == f"p{kept_day:%Y%m%d}"
    assert datetime.fromisoformat(storage["next_drop"]["due_at"]) == datetime.combine(
        kept_day + timedelta(days=31), time(), tzinfo=UTC
    )
    assert [(k["partition"], k["unjudged"]) for k in storage["kept_unjudged"]] == [
        (f"p{kept_day:%Y%m%d}", 1)
    ]
    assert storage["last_drop"]["partition"] == f"p{dropped_day:%Y%m%d}"
    assert storage["last_drop"]["archived"] is False
    # The dropped day's result left the counters with it; the kept one is still counted.
    assert stats["by_status"] == {"pending": 1}
