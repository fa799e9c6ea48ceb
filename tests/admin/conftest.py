"""The admin service driven in-process (httpx over ASGI) against a fresh database reached through
real pgbouncer as the sms_admin role; arrangements are made as the schema owner."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from services.admin.app import create_app
from services.admin.config import AdminConfig
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
async def admin(admin_config: AdminConfig) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a running admin app (lifespan entered), without credentials."""
    app = create_app(admin_config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                          base_url="http://admin.test") as client,
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
