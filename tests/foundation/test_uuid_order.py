"""input_sms keys are time-ordered: ordering by uuid gives insertion order."""

from __future__ import annotations

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
