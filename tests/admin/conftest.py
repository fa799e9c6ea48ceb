"""The admin service driven in-process (httpx over ASGI) against a fresh database reached through
real pgbouncer as the sms_admin role; arrangements are made as the schema owner."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

import checks
from services.admin.app import create_app
from services.admin.config import AdminConfig
from services.admin.state import ADMIN
from sms_gateway.config import load_config
from tests.conftest import FreshDatabase


@dataclass(frozen=True)
class Operators:
    """Two live tokens at once, as during a rotation."""

    tokens: dict[str, str]

    def header(self, name: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    @property
    def environment_value(self) -> str:
        return ",".join(f"{name}:{token}" for name, token in self.tokens.items())


@pytest.fixture
def operators() -> Operators:
    return Operators({"operator": secrets.token_urlsafe(24), "rotated": secrets.token_urlsafe(24)})


@pytest.fixture
def admin_config(
    database: FreshDatabase,
    service_environment: None,
    operators: Operators,
    monkeypatch: pytest.MonkeyPatch,
) -> AdminConfig:
    monkeypatch.setenv("SMSGW_DATABASE_URL", database.url("sms_admin"))
    monkeypatch.setenv("SMSGW_ADMIN_TOKENS", operators.environment_value)
    return load_config(AdminConfig)


@pytest.fixture(autouse=True)
def restore_log_level() -> Iterator[None]:
    """Changing log_level through the API changes this process's level: put it back."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture
def admin_app(admin_config: AdminConfig) -> FastAPI:
    return create_app(admin_config)


@pytest.fixture
async def admin(admin_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a running admin app (lifespan entered), without credentials."""
    app = admin_app
    async with (
        ADMIN.serving(app) as (served, _),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served), base_url="http://admin.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def authed(admin: httpx.AsyncClient, operators: Operators) -> httpx.AsyncClient:
    """The same client, authenticated as `operator`."""
    admin.headers.update(operators.header("operator"))
    return admin


async def audit_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as connection, connection.transaction():
        return list(await connection.fetch("SELECT * FROM settings_audit ORDER BY id"))


async def stored_settings(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch("SELECT setting_key, setting_value FROM system_settings")
    return {row["setting_key"]: row["setting_value"] for row in rows}


async def insert_sms(
    pool: asyncpg.Pool,
    sender_number: str,
    sms_message: str = "ACME 0123456789abcdef +447700900123",
    *,
    overall_status: str | None = None,
    results: dict[str, int] | None = None,
    failed_at_check: str | None = None,
    retry_count: int = 0,
    forwarded: bool = False,
    processed_ago_seconds: float = 1.0,
    check_names: Sequence[str] = tuple(checks.REGISTRY),
) -> UUID:
    """One SMS as the receiver stores it and, with `overall_status`, as the validator judged
    it (`forwarded`: with its out_sms row; `results` by check name, the checks of
    `check_names`). Written as the schema owner."""
    async with pool.acquire() as connection, connection.transaction():
        sms_uuid: UUID = await connection.fetchval(
            "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
            "VALUES ($1, $2, now() - interval '2 seconds') RETURNING uuid",
            sender_number,
            sms_message,
        )
        if overall_status is not None:
            codes = [(results or {}).get(name, 0) for name in check_names]
            columns = "".join(f"{column}, " for column in checks.result_columns(check_names))
            n = len(codes)
            values = "".join(f"${i + 2}, " for i in range(n))
            await connection.execute(
                f"INSERT INTO sms_monitor (uuid, {columns}overall_status, "
                "failed_at_check, retry_count, batch_id, processing_started_at, "
                "processing_completed_at) "
                f"VALUES ($1, {values}${n + 2}, ${n + 3}, ${n + 4}, ${n + 5}, "
                f"now() - make_interval(secs => ${n + 6}), "
                f"now() - make_interval(secs => ${n + 6}) + interval '25 milliseconds')",
                sms_uuid,
                *codes,
                overall_status,
                failed_at_check,
                retry_count,
                uuid4(),
                processed_ago_seconds,
            )
        if forwarded:
            await connection.execute(
                "INSERT INTO out_sms (uuid, sender_number, sms_message) "
                "SELECT uuid, sender_number, sms_message FROM input_sms WHERE uuid = $1",
                sms_uuid,
            )
    return sms_uuid
