"""With the database unreachable the receiver answers 503 (never 2xx) and stores nothing;
once it is back, requests succeed without a restart.

The outage is made on this test's own database only, through the admin console of the test
stack's own pgbouncer (DISABLE refuses new connections to it, KILL drops the open ones);
PostgreSQL and everyone else's databases are untouched.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests.conftest import FreshDatabase
from tests.fault.support import pgbouncer_console
from tests.receiver.conftest import SMS, ClientFactory

pytestmark = pytest.mark.fault


async def _rows_directly(database: FreshDatabase) -> int:
    connection = await asyncpg.connect(database.direct_url())
    try:
        return int(await connection.fetchval("SELECT count(*) FROM input_sms"))
    finally:
        await connection.close()


async def test_database_outage_is_503_then_recovers_without_restart(
    receiver_client: ClientFactory, database: FreshDatabase
) -> None:
    async with receiver_client(db_command_timeout=1.0) as client:
        assert (await client.post("/sms/receive", json=SMS)).status_code == 202

        await pgbouncer_console(database, f'DISABLE "{database.name}"', f'KILL "{database.name}"')
        try:
            during = await asyncio.gather(
                *(
                    client.post("/sms/receive", json={**SMS, "sms_message": f"outage {i}"})
                    for i in range(5)
                ),
                client.post("/sms/receive/batch", json=[SMS, SMS]),
                client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "k1"}),
            )
            ready = await client.get("/ready")
        finally:
            await pgbouncer_console(
                database, f'ENABLE "{database.name}"', f'RESUME "{database.name}"'
            )

        assert [r.status_code for r in during] == [503] * 7, [r.text for r in during]
        assert all(int(r.headers["retry-after"]) > 0 for r in during)
        assert ready.status_code == 503
        assert await _rows_directly(database) == 1

        after: httpx.Response | None = None
        for _ in range(50):
            after = await client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "k1"})
            if after.status_code == 202:
                break
            assert after.status_code == 503
            await asyncio.sleep(0.2)
        assert after is not None
        assert after.status_code == 202, after.text
        assert (await client.get("/ready")).status_code == 200
        assert await _rows_directly(database) == 2
