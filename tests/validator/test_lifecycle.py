"""Time partitions and retention (db/init/0013, services/validator/lifecycle.py): partitions are
made ahead by the gateway, a day is dropped only when it is past the retention and every SMS in
it is judged, and dropping old days changes no verdict (SPEC §6.1 across a drop, against the
reference model, which keeps its own per-sender state)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

import checks
from checks.base import CheckSecrets, SmsToJudge
from services.validator import metrics
from services.validator.batch import BatchRunner
from services.validator.config import ValidatorConfig
from services.validator.lifecycle import DAYS_AHEAD, PartitionKeeper
from sms_gateway import archive, db
from sms_gateway.config import load_config
from sms_gateway.errors import ConfigurationError
from sms_gateway.redis import RedisLink
from sms_gateway.settings import SettingsStore
from tests.conftest import FreshDatabase
from tests.validator.conftest import (
    SENDERS,
    NewSms,
    drain,
    final_state,
    forwarded_senders,
    insert_sms,
    invalid_message,
    make_engine,
    make_runner,
    redis_senders,
    running,
    set_settings,
    stored_settings,
    valid_message,
    wait_for,
)
from tests.validator.model import model_of


def uuid7_at(instant: datetime, n: int) -> UUID:
    """A UUIDv7 of `instant` laid out as uuid_generate_v7() lays it out (0001); `n` fills the
    bits after the variant, so that keys of one instant differ."""
    micros = int(instant.timestamp() * 1_000_000)
    millis, sub = divmod(micros, 1000)
    return UUID(int=(millis << 80) | (0x7 << 76) | (sub << 64) | (0b10 << 62) | n)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def today() -> date:
    return datetime.now(UTC).date()


async def make_day(owner_pool: asyncpg.Pool, day: date) -> None:
    """A partition of a past day, as the owner (the gateway makes only today's and later)."""
    async with db.transaction(owner_pool) as connection:
        await connection.execute("SELECT sms_time_partition_create($1)", day)


async def insert_at(
    owner_pool: asyncpg.Pool, rows: Sequence[tuple[datetime, str, str]], *, first: int = 0
) -> list[UUID]:
    """SMS that arrived at the given instants (the owner may set uuid and created_at)."""
    keys = [uuid7_at(at, first + i) for i, (at, _, _) in enumerate(rows)]
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp, "
            "created_at) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], "
            "$4::timestamptz[], $4::timestamptz[])",
            keys,
            [sender for _, sender, _ in rows],
            [message for _, _, message in rows],
            [at for at, _, _ in rows],
        )
    return keys


async def partition_of(owner_pool: asyncpg.Pool, key: UUID) -> str:
    async with db.transaction(owner_pool, readonly=True) as connection:
        name: str = await connection.fetchval(
            "SELECT tableoid::regclass::text FROM input_sms WHERE uuid = $1", key
        )
    return name


async def live_partitions(owner_pool: asyncpg.Pool) -> list[str]:
    async with db.transaction(owner_pool, readonly=True) as connection:
        rows = await connection.fetch(
            "SELECT partition_name FROM sms_time_partitions WHERE dropped_at IS NULL "
            "ORDER BY ends_at"
        )
    return [row["partition_name"] for row in rows]


async def every_sms(owner_pool: asyncpg.Pool) -> list[SmsToJudge]:
    async with db.transaction(owner_pool, readonly=True) as connection:
        rows = await connection.fetch(
            "SELECT uuid, sender_number, sms_message, received_timestamp, created_at "
            "FROM input_sms ORDER BY uuid"
        )
    return [SmsToJudge(*row) for row in rows]


async def status_counters(owner_pool: asyncpg.Pool) -> tuple[dict[str, int], dict[str, int]]:
    """/stats's counters (0007) and the counts of the table itself."""
    async with db.transaction(owner_pool, readonly=True) as connection:
        counters = await connection.fetch(
            "SELECT overall_status, sum(sms_count)::bigint AS n FROM sms_status_counts "
            "GROUP BY 1 HAVING sum(sms_count) <> 0"
        )
        table = await connection.fetch(
            "SELECT coalesce(overall_status, 'unset') AS s, count(*) AS n FROM sms_monitor "
            "GROUP BY 1"
        )
    return {r["overall_status"]: r["n"] for r in counters}, {r["s"]: r["n"] for r in table}


def runner_with_margin(pool: asyncpg.Pool, link: RedisLink, margin: float) -> BatchRunner:
    """A runner that judges only SMS older than `margin` seconds (its settle horizon)."""
    return BatchRunner(
        pool,
        link,
        checks.REGISTRY,
        CheckSecrets(),
        SettingsStore(known_checks=checks.REGISTRY),
        settle_margin=margin,
    )


def p(day: date) -> str:
    return "p" + day.strftime("%Y%m%d")


async def test_partitions_are_made_ahead_and_new_sms_land_in_todays(
    owner_pool: asyncpg.Pool, validator_pool: asyncpg.Pool
) -> None:
    first = await PartitionKeeper(validator_pool).run(retention_days=0)
    again = await PartitionKeeper(validator_pool).run(retention_days=0)

    live = await live_partitions(owner_pool)
    assert live[-1] == p(today() + timedelta(days=DAYS_AHEAD))
    assert p(today()) in live
    assert "legacy" not in live  # a new database has no rows to keep in a legacy partition
    assert first.created is not None
    assert again.created == 0
    async with db.transaction(owner_pool) as connection:
        key = await connection.fetchval(
            "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
            "VALUES ('447911123000', 'hi', now()) RETURNING uuid"
        )
    assert await partition_of(owner_pool, key) == f"input_sms_{p(today())}"


@pytest.mark.parametrize("role", ["sms_receiver", "sms_admin"])
async def test_only_the_validator_runs_the_upkeep(database: FreshDatabase, role: str) -> None:
    connection = await asyncpg.connect(database.url(role), statement_cache_size=0)
    try:
        for statement in (
            "SELECT sms_time_partitions_ensure(7)",
            "SELECT sms_time_partition_examine('x')",
            "SELECT sms_time_partition_drop('x', 30, 100, false)",
            "SELECT sms_time_partition_create(current_date)",
            "SELECT sms_time_partition_purge('x')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
    finally:
        await connection.close()


async def test_rows_in_the_default_partition_move_into_their_day_when_it_is_made(
    owner_pool: asyncpg.Pool,
) -> None:
    later = today() + timedelta(days=DAYS_AHEAD + 5)
    (key,) = await insert_at(owner_pool, [(day_start(later) + timedelta(hours=3), "4479", "x")])
    assert await partition_of(owner_pool, key) == "input_sms_default"

    await make_day(owner_pool, later)

    assert await partition_of(owner_pool, key) == f"input_sms_{p(later)}"


async def test_retention_keeps_unjudged_days_and_verdicts_do_not_change(
    owner_pool: asyncpg.Pool,
    validator_pool: asyncpg.Pool,
    redis_link: RedisLink,
    redis_client: aioredis.Redis,
) -> None:
    """Judge old days, drop what is past the retention, then judge more SMS of the same
    senders: every verdict is the reference model's, which judged the whole stream in uuid
    order with its own counts, blacklist and forwarded senders."""
    await set_settings(owner_pool, {"blacklist_threshold": "3", "batch_size": "7"})
    days = [today() - timedelta(days=n) for n in (45, 44, 43, 42)]
    for day in days:
        await make_day(owner_pool, day)
    senders = SENDERS[:6]
    old_rows = [
        (day_start(day) + timedelta(hours=1, minutes=i), sender, message(sender, i))
        for day in days[:3]
        for i, sender in enumerate(senders * 2)
    ]
    await insert_at(owner_pool, old_rows)
    (unjudged,) = await insert_at(
        owner_pool, [(day_start(days[3]) + timedelta(hours=2), senders[0], "late")], first=999
    )
    # The fourth day's SMS is not judged yet: a validator whose settle horizon is before it.
    behind = datetime.now(UTC) - day_start(days[3])
    await drain(runner_with_margin(validator_pool, redis_link, behind.total_seconds()))
    # An SMS in error on the third day (marked by hand after it was judged, so that its counts
    # are the model's): neither day may go.
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "UPDATE sms_monitor SET overall_status = 'error' WHERE uuid = "
            "(SELECT uuid FROM sms_monitor WHERE uuid >= $1 ORDER BY uuid LIMIT 1)",
            uuid7_at(day_start(days[2]), 0),
        )
    settings = await stored_settings(owner_pool)
    everything = await every_sms(owner_pool)

    keeper = PartitionKeeper(validator_pool, reexamine_seconds=0.0)
    done = await keeper.run(retention_days=30)

    assert done.dropped == [p(days[0]), p(days[1])]
    assert done.kept == {p(days[2]): 1, p(days[3]): 1}
    live = await live_partitions(owner_pool)
    assert p(days[0]) not in live
    assert p(days[2]) in live
    async with db.transaction(owner_pool, readonly=True) as connection:
        # Detached, then removed from disk.
        left = await connection.fetchval(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%' || $1", p(days[0])
        )
    assert left == 0
    assert await partition_of(owner_pool, unjudged) == f"input_sms_{p(days[3])}"
    counters, table = await status_counters(owner_pool)
    assert counters == table

    # The unjudged SMS is judged later; its day then goes at the next round.
    runner = make_runner(validator_pool, redis_link)
    await drain(runner)
    assert (await keeper.run(retention_days=30)).dropped == [p(days[3])]

    # The same senders again, now: count_sms, blacklist_sms and forwarded_senders carried the
    # dropped days' state, so blacklisting and duplicates go on as if nothing was dropped.
    new_keys = await insert_sms(
        owner_pool,
        [NewSms(s, message(s, i)) for i, s in enumerate([*senders, *SENDERS[6:9]])],
    )
    everything += [sms for sms in await every_sms(owner_pool) if sms.uuid in set(new_keys)]
    await redis_client.flushdb()  # and a Redis that lost the set rebuilds it without out_sms
    await drain(runner)

    model = model_of(everything, settings, now=datetime.now(UTC))
    expected: dict[str, Any] = model.state()
    judged = await final_state(owner_pool)
    remaining = {row[0] for row in judged["sms_monitor"]}
    # The error SMS was marked by hand: the model judged it as it was first judged.
    assert [r for r in judged["sms_monitor"] if r[-3] != "error"] == [
        r for r in expected["sms_monitor"] if r[0] in remaining and r[0] != _errored(judged)
    ]
    assert judged["out_sms"] == [r for r in expected["out_sms"] if r[0] in remaining]
    assert judged["count_sms"] == expected["count_sms"]
    assert judged["blacklist_sms"] == expected["blacklist_sms"]
    assert (
        await redis_senders(redis_client) == await forwarded_senders(owner_pool) == model.forwarded
    )
    counters, table = await status_counters(owner_pool)
    assert counters == table


def _errored(judged: dict[str, Any]) -> UUID | None:
    return next((r[0] for r in judged["sms_monitor"] if r[-3] == "error"), None)


def message(sender: str, i: int) -> str:
    return valid_message(sender) if i % 3 else invalid_message(sender)


async def test_a_drop_gives_way_to_a_busy_table_and_comes_back(
    owner_pool: asyncpg.Pool, validator_pool: asyncpg.Pool, redis_link: RedisLink
) -> None:
    old = today() - timedelta(days=40)
    await make_day(owner_pool, old)
    await insert_at(owner_pool, [(day_start(old) + timedelta(hours=1), SENDERS[0], "hi")])
    await drain(make_runner(validator_pool, redis_link))
    keeper = PartitionKeeper(validator_pool, lock_wait_ms=50, drop_pause=0.01)

    async with owner_pool.acquire() as holder, holder.transaction():
        # A long reader of input_sms: the drop may not wait for it.
        await holder.fetchval("SELECT count(*) FROM input_sms")
        busy = await keeper.run(retention_days=30)
    free = await keeper.run(retention_days=30)

    assert busy.dropped == []
    assert busy.lock_timeouts > 0
    assert free.dropped == [p(old)]


async def test_an_archive_holds_every_row_and_loads_back(
    owner_pool: asyncpg.Pool,
    validator_pool: asyncpg.Pool,
    redis_link: RedisLink,
    database: FreshDatabase,
    tmp_path: Path,
) -> None:
    old = today() - timedelta(days=40)
    await make_day(owner_pool, old)
    rows = [
        (day_start(old) + timedelta(hours=1, seconds=i), SENDERS[i % 3], f'line {i}\nnext, "q"')
        for i in range(25)
    ]
    await insert_at(owner_pool, rows)
    await drain(make_runner(validator_pool, redis_link))
    before = await _partition_rows(owner_pool, old)

    done = await PartitionKeeper(validator_pool, archive_dir=tmp_path).run(retention_days=30)

    assert done.archived == done.dropped == [p(old)]
    directory = tmp_path / p(old)
    manifest = archive.read_manifest(directory)
    assert {t: manifest["tables"][t]["rows"] for t in archive.TABLES} == {
        t: len(before[t]) for t in archive.TABLES
    }
    loaded = await archive.load_partition(database.direct_url(), directory, "investigation")
    assert loaded == {t: len(before[t]) for t in archive.TABLES}
    # The command operators run (docs/operations.md, "Restoring from an archive"), as a process
    # of its own (it configures logging for itself).
    assert await sms_archive("verify", str(directory)) == 0
    command = ("load", str(directory), "--dsn", database.direct_url())
    assert await sms_archive(*command) == 0  # into archive_<partition>
    assert await sms_archive(*command) == 1  # its tables exist: refused, nothing changed
    async with db.transaction(owner_pool, readonly=True) as connection:
        for table in archive.TABLES:
            back = await connection.fetch(f"SELECT * FROM investigation.{table} ORDER BY uuid")
            assert [tuple(r) for r in back] == before[table]
        again = await connection.fetchval(f"SELECT count(*) FROM archive_{p(old)}.input_sms")
        assert again == len(before["input_sms"])
        archived_at = await connection.fetchval(
            "SELECT archived_at FROM sms_time_partitions WHERE partition_name = $1", p(old)
        )
    assert archived_at is not None


async def sms_archive(*args: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sms_gateway.archive",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


async def test_a_damaged_archive_is_refused(
    owner_pool: asyncpg.Pool, validator_pool: asyncpg.Pool, redis_link: RedisLink, tmp_path: Path
) -> None:
    old = today() - timedelta(days=40)
    await make_day(owner_pool, old)
    await insert_at(owner_pool, [(day_start(old), SENDERS[0], "hi")])
    await drain(make_runner(validator_pool, redis_link))
    await PartitionKeeper(validator_pool, archive_dir=tmp_path).run(retention_days=30)
    file = tmp_path / p(old) / "out_sms.csv.gz"
    file.write_bytes(file.read_bytes() + b"x")

    with pytest.raises(archive.ArchiveError, match=r"out_sms\.csv\.gz does not match"):
        await asyncio.to_thread(archive.read_manifest, tmp_path / p(old))


async def _partition_rows(owner_pool: asyncpg.Pool, day: date) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with db.transaction(owner_pool, readonly=True) as connection:
        for table in archive.TABLES:
            fetched = await connection.fetch(f"SELECT * FROM {table}_{p(day)} ORDER BY uuid")
            rows[table] = [tuple(r) for r in fetched]
    return rows


async def test_the_running_validator_drops_what_the_setting_says(
    owner_pool: asyncpg.Pool, validator_pool: asyncpg.Pool, redis_link: RedisLink
) -> None:
    """The engine's upkeep reads retention_days from the table at each round: 0 keeps a day
    that 30 (the default) drops."""
    old = today() - timedelta(days=40)
    await make_day(owner_pool, old)
    await insert_at(owner_pool, [(day_start(old) + timedelta(hours=1), SENDERS[0], "hi")])
    await drain(make_runner(validator_pool, redis_link))
    await set_settings(owner_pool, {"retention_days": "0"})
    await forget_newest_day(owner_pool)  # the round makes it again: a sign that it ran
    engine = make_engine(validator_pool, redis_link)
    async with running(engine):
        await wait_for(lambda: made_ahead(owner_pool), within=30, what="an upkeep round")
    assert p(old) in await live_partitions(owner_pool)

    await set_settings(owner_pool, {"retention_days": "30"})
    async with running(make_engine(validator_pool, redis_link)):
        await wait_for(
            lambda: gone(owner_pool, p(old)), within=30, what="the old day dropped by the engine"
        )
    assert (await live_partitions(owner_pool))[-1] == p(today() + timedelta(days=DAYS_AHEAD))


@pytest.mark.parametrize("stored", ["30 days", None])
async def test_retention_drops_nothing_on_a_value_the_table_does_not_hold(
    owner_pool: asyncpg.Pool,
    validator_pool: asyncpg.Pool,
    redis_link: RedisLink,
    stored: str | None,
) -> None:
    """retention_days deletes data: a value written by hand that breaks its rule, or a row
    deleted, must not stand in the default (30, which would drop this 40-day-old day)."""
    old = today() - timedelta(days=40)
    await make_day(owner_pool, old)
    await insert_at(owner_pool, [(day_start(old) + timedelta(hours=1), SENDERS[0], "hi")])
    await drain(make_runner(validator_pool, redis_link))
    async with db.transaction(owner_pool) as connection:
        if stored is None:
            await connection.execute(
                "DELETE FROM system_settings WHERE setting_key = 'retention_days'"
            )
        else:
            await connection.execute(
                "UPDATE system_settings SET setting_value = $1 "
                "WHERE setting_key = 'retention_days'",
                stored,
            )
    metrics.PARTITIONS_KEPT.set(-1)  # a round's last step measures: then it has ended

    async def round_ended() -> bool:
        return REGISTRY.get_sample_value("sms_time_partitions") != -1

    async with running(make_engine(validator_pool, redis_link)):
        await wait_for(round_ended, within=30, what="an upkeep round")
    assert p(old) in await live_partitions(owner_pool)


def test_the_store_says_whether_the_table_holds_a_valid_value() -> None:
    store = SettingsStore()
    store.apply([("retention_days", "7"), ("batch_size", "50")])
    assert store.holds_valid("retention_days")
    store.apply([("retention_days", "seven"), ("batch_size", "50")])
    assert store.current.retention_days == 7  # the last good value is kept for reading...
    assert not store.holds_valid("retention_days")  # ...but it is not what the table holds
    store.apply([("batch_size", "50")])
    assert not store.holds_valid("retention_days")
    assert store.holds_valid("batch_size")
    store.apply([("retention_days", "3"), ("batch_size", "50")])
    assert store.holds_valid("retention_days")
    assert store.current.retention_days == 3


async def forget_newest_day(owner_pool: asyncpg.Pool) -> None:
    newest = (await live_partitions(owner_pool))[-1]
    async with db.transaction(owner_pool) as connection:
        for table in archive.TABLES:
            await connection.execute(f"DROP TABLE {table}_{newest}")
        await connection.execute(
            "DELETE FROM sms_time_partitions WHERE partition_name = $1", newest
        )
    assert (await live_partitions(owner_pool))[-1] != newest


async def made_ahead(owner_pool: asyncpg.Pool) -> bool:
    return (await live_partitions(owner_pool))[-1] == p(today() + timedelta(days=DAYS_AHEAD))


async def gone(owner_pool: asyncpg.Pool, name: str) -> bool:
    return name not in await live_partitions(owner_pool)


@pytest.mark.usefixtures("clean_environment")
def test_the_archive_directory_must_be_a_writable_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SMSGW_DATABASE_URL", "postgresql://v:Zq8vN3x7Lr2pW5tY@h:6432/db")
    monkeypatch.setenv("SMSGW_ARCHIVE_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="is not a directory") as raised:
        load_config(ValidatorConfig)
    assert "ARCHIVE_DIR" in str(raised.value).upper()
    monkeypatch.setenv("SMSGW_ARCHIVE_DIR", "")
    assert load_config(ValidatorConfig).archive_dir is None
    monkeypatch.setenv("SMSGW_ARCHIVE_DIR", str(tmp_path))
    assert load_config(ValidatorConfig).archive_dir == tmp_path
