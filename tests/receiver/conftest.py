"""The receiver in-process (httpx.ASGITransport inside its lifespan), on a fresh database
reached through pgbouncer as the sms_receiver role; the owner pool inspects what was stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from services.receiver.api import create_app
from services.receiver.config import ReceiverConfig
from services.receiver.state import RECEIVER
from tests.conftest import FreshDatabase

SMS: dict[str, str] = {
    "sender_number": "+44 7700 900123",
    "sms_message": "ACME 0123456789abcdef +447700900123",
    "received_timestamp": "2024-06-22T15:46:11+01:00",
}

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def receiver_config(database: FreshDatabase, **overrides: Any) -> ReceiverConfig:
    values: dict[str, Any] = {
        "environment": "development",
        "database_url": database.url("sms_receiver"),
        "db_pool_max_size": 4,
        "db_command_timeout": 5.0,
        "log_format": "text",
    }
    values.update(overrides)
    return ReceiverConfig(**values)


@pytest.fixture
def receiver_client(database: FreshDatabase) -> ClientFactory:
    """`async with receiver_client(**config) as client:` a running receiver; with `root_path`,
    mounted behind a proxy that strips that prefix (request paths then start with it, as
    uvicorn's --root-path gives them)."""

    @asynccontextmanager
    async def running(root_path: str = "", **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(receiver_config(database, **overrides))
        async with RECEIVER.serving(app) as (served, _):
            transport = httpx.ASGITransport(app=served, root_path=root_path)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://receiver.test"
            ) as client:
                yield client

    return running


@pytest.fixture
async def client(receiver_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with receiver_client() as running:
        yield running


async def stored_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as connection, connection.transaction():
        rows: list[asyncpg.Record] = await connection.fetch(
            "SELECT uuid, sender_number, sms_message, received_timestamp, source, "
            "client_event_id FROM input_sms ORDER BY uuid"
        )
    return rows
