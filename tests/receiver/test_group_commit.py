"""Group commit: concurrent requests share transactions, and each answer names its own row."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg
import httpx

from tests.conftest import FreshDatabase
from tests.receiver.conftest import ClientFactory, stored_rows


async def _commits(database: FreshDatabase) -> int:
    """Committed transactions of the test database, as the statistics system last saw them."""
    connection = await asyncpg.connect(database.stack.pg_admin_url)
    try:
        value = await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database.name
        )
    finally:
        await connection.close()
    return int(value)


async def _settled_commits(database: FreshDatabase) -> int:
    """Backends report their statistics when idle, at least every second or so: wait until
    the count stops moving."""
    previous = await _commits(database)
    while True:
        await asyncio.sleep(1.2)
        current = await _commits(database)
        if current == previous:
            return current
        previous = current


async def test_concurrent_requests_share_commits_and_get_their_own_uuid(
    receiver_client: ClientFactory,
    database: FreshDatabase,
    owner_pool: asyncpg.Pool,
) -> None:
    requests = 300
    # A slow settings refresh would add its own commits to the count; the flush wait is the
    # default (2 ms).
    async with receiver_client() as client:
        await client.post(
            "/sms/receive",
            json={  # warm the pool up
                "sender_number": "1",
                "sms_message": "warm-up",
                "received_timestamp": "2024-01-01T00:00:00Z",
            },
        )
        before = await _settled_commits(database)

        async def send(i: int) -> httpx.Response:
            return await client.post(
                "/sms/receive",
                json={
                    "sender_number": f"+1 555 {i:07d}",
                    "sms_message": f"message number {i}",
                    "received_timestamp": f"2024-06-22T10:{i // 60:02d}:{i % 60:02d}+02:00",
                },
            )

        responses = await asyncio.gather(*(send(i) for i in range(requests)))
        after = await _settled_commits(database)

    assert all(r.status_code == 202 for r in responses), [r.text for r in responses[:3]]
    rows = {row["uuid"]: row for row in await stored_rows(owner_pool)}
    assert len(rows) == requests + 1
    for i, response in enumerate(responses):
        row = rows[UUID(response.json()["uuid"])]
        assert row["sms_message"] == f"message number {i}"
        assert row["sender_number"] == f"1555{i:07d}"
    transactions = after - before
    # The settings refresher and the stats reader add a few; one per request would be 300+.
    assert transactions < requests / 5, transactions


async def test_a_refused_request_does_not_fail_its_neighbours(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    good = {
        "sender_number": "+15550000001",
        "sms_message": "fine",
        "received_timestamp": "2024-06-22T10:00:00Z",
    }
    bad = {**good, "sms_message": "nul \x00"}
    responses = await asyncio.gather(
        *(client.post("/sms/receive", json=bad if i % 3 == 0 else good) for i in range(30))
    )
    statuses = [r.status_code for r in responses]
    assert statuses == [422 if i % 3 == 0 else 202 for i in range(30)]
    assert len(await stored_rows(owner_pool)) == 20
