"""The admin API when the database refuses writes (a standby after a failover): a change is 503
with Retry-After and nothing is written or audited; reading goes on; writes come back by
themselves."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests.admin.conftest import audit_rows
from tests.conftest import FreshDatabase
from tests.fault.support import read_only_database

pytestmark = pytest.mark.fault


async def test_a_read_only_database_is_503_for_changes_and_reads_go_on(
    authed: httpx.AsyncClient, database: FreshDatabase, owner_pool: asyncpg.Pool
) -> None:
    async with read_only_database(database):
        changed = await authed.put("/settings/batch_size", json={"value": 50})
        for _ in range(20):  # the first may meet a session ended under pgbouncer (503)
            listed = await authed.get("/settings")
            if listed.status_code == 200:
                break
            await asyncio.sleep(0.1)
    assert changed.status_code == 503, changed.text
    assert int(changed.headers["retry-after"]) > 0
    assert changed.headers["content-type"] == "application/problem+json"
    assert await audit_rows(owner_pool) == []
    # A read-only transaction is what a standby serves: the operator can still look.
    assert listed.status_code == 200, listed.text

    for _ in range(50):
        changed = await authed.put("/settings/batch_size", json={"value": 50})
        if changed.status_code == 200:
            break
        assert changed.status_code == 503
        await asyncio.sleep(0.1)
    assert changed.status_code == 200, changed.text
    assert len(await audit_rows(owner_pool)) == 1
