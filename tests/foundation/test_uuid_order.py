"""input_sms keys are time-ordered: ordering by uuid gives insertion order."""

from __future__ import annotations

import itertools

import asyncpg

from sms_gateway import db


async def test_ten_thousand_defaults_come_back_in_insertion_order(owner_pool: asyncpg.Pool) -> None:
    # Rows in one statement (many share a microsecond) and in many small statements.
    async with db.transaction(owner_pool) as connection:
        await connection.execute(
            "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
            "SELECT '447700900123', n::text, now() FROM generate_series(1, 5000) AS n"
        )
    for start in range(5001, 10_001, 250):
        async with db.transaction(owner_pool) as connection:
            await connection.executemany(
                "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
                "VALUES ('447700900123', $1, now())",
                [(str(n),) for n in range(start, start + 250)],
            )
    async with db.transaction(owner_pool) as connection:
        rows = await connection.fetch("SELECT uuid, sms_message FROM input_sms ORDER BY uuid")
    assert [int(row["sms_message"]) for row in rows] == list(range(1, 10_001))
    assert all(row["uuid"].version == 7 for row in rows)
    assert len({row["uuid"] for row in rows}) == 10_000


async def test_keys_have_the_layout_the_settle_horizon_reads(owner_pool: asyncpg.Pool) -> None:
    """48 bits of milliseconds, version 7, 12 bits of microseconds, variant 10, 30 bits of the
    sequence (consecutive within a statement), 32 random bits: what uuid_v7_time and
    uuid_v7_lower_bound (0005) read back."""
    async with db.transaction(owner_pool) as connection:
        before = await connection.fetchval("SELECT clock_timestamp()")
        rows = await connection.fetch(
            "SELECT key, uuid_v7_time(key) AS made_at, uuid_v7_lower_bound(uuid_v7_time(key)) "
            "AS lower_bound FROM (SELECT uuid_generate_v7() AS key "
            "FROM generate_series(1, 2000)) AS keys"
        )
        after = await connection.fetchval("SELECT clock_timestamp()")
    sequences = [(row["key"].int >> 32) & (2**30 - 1) for row in rows]
    assert all(b == (a + 1) % 2**30 for a, b in itertools.pairwise(sequences))
    for row in rows:
        key = row["key"]
        assert key.version == 7
        assert key.int >> 62 & 0b11 == 0b10
        assert before <= row["made_at"] <= after
        micros = round(row["made_at"].timestamp() * 1_000_000)
        assert key.int >> 80 == micros // 1000
        assert key.int >> 64 & 0xFFF == micros % 1000
        assert row["lower_bound"] <= key
    assert len({row["key"].int & 0xFFFFFFFF for row in rows}) > 1900  # the random part varies
