"""The group-commit store on its own, against the real database: a failed flush fails exactly its
requests, a request cancelled before its row is taken stores nothing, and close() commits every
request already taken before it returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.receiver.errors import StorageUnavailable
from services.receiver.incoming import SmsToStore
from services.receiver.store import SmsStore, StoredSms
from sms_gateway import db
from tests.conftest import FreshDatabase
from tests.receiver.conftest import stored_rows

StoreFactory = Callable[..., AbstractAsyncContextManager[SmsStore]]


def _sms(sender: str, message: str) -> SmsToStore:
    return SmsToStore(sender, message, datetime(2024, 6, 22, tzinfo=UTC), "api", None)


@pytest.fixture
def running_store(database: FreshDatabase) -> StoreFactory:
    @asynccontextmanager
    async def running(**bounds: Any) -> AsyncIterator[SmsStore]:
        pool = await db.create_pool(database.url("sms_receiver"), min_size=0, max_size=4)
        options: dict[str, Any] = {"max_wait": 0.002, "max_rows": 500, "max_flushes": 2}
        options.update(bounds)
        store = SmsStore(pool, retries=lambda: 0, attempt_timeout=5.0, **options)
        store.start()
        try:
            yield store
        finally:
            await store.close()
            await db.close_pool(pool)

    return running


async def test_a_failed_flush_fails_exactly_its_own_requests(
    running_store: StoreFactory, owner_pool: asyncpg.Pool
) -> None:
    # One row per flush; the middle one cannot be stored (a 16-character sender, which the
    # HTTP layer would have refused: here it stands for a flush the database rejects).
    async with running_store(max_rows=1) as store:
        results = await asyncio.gather(
            store.store(_sms("15550000001", "before")),
            store.store(_sms("1" * 16, "rejected")),
            store.store(_sms("15550000003", "after")),
            return_exceptions=True,
        )
    assert isinstance(results[0], StoredSms)
    # Answered 503 (never a 500), with the database's refusal as the cause.
    assert isinstance(results[1], StorageUnavailable)
    assert isinstance(results[1].__cause__, asyncpg.StringDataRightTruncationError)
    assert isinstance(results[2], StoredSms)
    rows = await stored_rows(owner_pool)
    assert sorted(row["sms_message"] for row in rows) == ["after", "before"]


async def test_a_request_cancelled_while_waiting_stores_nothing(
    running_store: StoreFactory, owner_pool: asyncpg.Pool
) -> None:
    async with running_store(max_wait=0.05) as store:
        gone = asyncio.create_task(store.store(_sms("15550000001", "client went away")))
        await asyncio.sleep(0)  # it joins the pending group
        gone.cancel()
        stayed = await store.store(_sms("15550000002", "client stayed"))
        with pytest.raises(asyncio.CancelledError):
            await gone
    [row] = await stored_rows(owner_pool)
    assert (row["uuid"], row["sms_message"]) == (stayed.uuid, "client stayed")


async def test_close_commits_every_request_already_taken(
    running_store: StoreFactory, owner_pool: asyncpg.Pool
) -> None:
    async with running_store(max_wait=0.05, max_rows=10, max_flushes=1) as store:
        waiting = [
            asyncio.create_task(store.store(_sms(f"1555000{i:04d}", f"queued {i}")))
            for i in range(45)
        ]
        await asyncio.sleep(0)  # all 45 are queued: the first group is still gathering
        await store.close()
        rows = {row["uuid"]: row["sms_message"] for row in await stored_rows(owner_pool)}
        answers = await asyncio.gather(*waiting)
    assert {answer.uuid: f"queued {i}" for i, answer in enumerate(answers)} == rows
