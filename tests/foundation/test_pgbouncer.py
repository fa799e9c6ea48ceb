"""asyncpg through pgbouncer 1.18 in transaction mode: the prepared-statement strategy of
sms_gateway/db.py holds under concurrency, with more clients than server connections."""

from __future__ import annotations

import asyncio

from sms_gateway import db
from tests.conftest import FreshDatabase


async def test_many_concurrent_parameterised_queries_share_few_server_connections(
    database: FreshDatabase,
) -> None:
    pool = await db.create_pool(database.url("sms_validator"), min_size=0, max_size=20)
    try:

        async def one(n: int) -> int:
            async with db.transaction(pool) as connection:
                value = await connection.fetchval("SELECT $1::int * 2", n)
                rows = await connection.fetch(
                    "SELECT setting_key FROM system_settings WHERE setting_key = ANY($1::text[])",
                    ["batch_size", f"nothing{n}"],
                )
                assert [r["setting_key"] for r in rows] == ["batch_size"]
                return int(value)

        results = await asyncio.gather(*(one(n) for n in range(500)))
    finally:
        await db.close_pool(pool)
    assert results == [n * 2 for n in range(500)]


async def test_readiness_reports_an_unreachable_database(database: FreshDatabase) -> None:
    pool = await db.create_pool(database.url("sms_admin"), min_size=0, max_size=1)
    try:
        assert await db.is_ready(pool)
    finally:
        await db.close_pool(pool)
