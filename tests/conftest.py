"""Test harness: real PostgreSQL through real pgbouncer, and real Redis. No mocks of either.

Where the services are comes from SMSGW_TEST_* variables, which `sms-stack test` (the README's
test command) sets after starting pgbouncer and Redis of its own. The roles and a template
database are made by the production bootstrap (`sms_gateway.bootstrap`, what compose and the
playbook run), once per schema version; each test gets a fresh copy
(`CREATE DATABASE ... TEMPLATE`) and reaches it through pgbouncer as the service roles do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg
import pytest
import redis.asyncio as aioredis

from sms_gateway import db
from sms_gateway.bootstrap import Bootstrap
from sms_gateway.devstack import StackConfig, bootstrap_steps, passwords
from sms_gateway.migrate import MIGRATIONS_DIR

REQUIRED: Final = (
    "SMSGW_TEST_PG_ADMIN_URL",
    "SMSGW_TEST_PGBOUNCER_PORT",
    "SMSGW_TEST_OWNER_PASSWORD",
    "SMSGW_TEST_SERVICE_DB_PASSWORD",
    "SMSGW_TEST_REDIS_PORT",
    "SMSGW_TEST_REDIS_PASSWORD",
)
# The Redis database the tests use; every test that asks for Redis finds it empty.
TEST_REDIS_DB: Final = 1


@dataclass(frozen=True)
class Infra:
    """Where the real services of this test run are."""

    stack: StackConfig

    @property
    def redis_port(self) -> int:
        return self.stack.redis_port

    @property
    def redis_password(self) -> str:
        return self.stack.redis_password


def _infra_from_environment() -> Infra:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.exit(
            "The tests need real PostgreSQL, pgbouncer and Redis. Run them with the README's "
            "test command (`./stack test`), which starts pgbouncer and Redis and sets "
            f"{', '.join(REQUIRED)}; missing here: {', '.join(missing)}.",
            returncode=2,
        )
    return Infra(
        StackConfig(
            state_dir=Path(".stack-test").resolve(),
            pg_admin_url=os.environ["SMSGW_TEST_PG_ADMIN_URL"],
            pgbouncer_port=int(os.environ["SMSGW_TEST_PGBOUNCER_PORT"]),
            owner_password=os.environ["SMSGW_TEST_OWNER_PASSWORD"],
            role_password=os.environ["SMSGW_TEST_SERVICE_DB_PASSWORD"],
            redis_port=int(os.environ["SMSGW_TEST_REDIS_PORT"]),
            redis_password=os.environ["SMSGW_TEST_REDIS_PASSWORD"],
        )
    )


@pytest.fixture(scope="session")
def infra() -> Infra:
    return _infra_from_environment()


def _schema_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def template_database(infra: Infra) -> str:
    """A migrated database to copy, one per version of the migrations."""
    return asyncio.run(_build_template(infra))


async def bootstrapped_roles(stack: StackConfig) -> Bootstrap:
    """The production bootstrap's roles step (a second run changes nothing)."""
    steps = bootstrap_steps(stack)
    await steps.roles(passwords(stack))
    return steps


async def drop_database(stack: StackConfig, name: str) -> None:
    connection = await asyncpg.connect(stack.pg_admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _build_template(infra: Infra) -> str:
    name = f"smsgw_tmpl_{_schema_digest()}"
    steps = await bootstrapped_roles(infra.stack)
    connection = await asyncpg.connect(infra.stack.pg_admin_url)
    try:
        # Two test runs at once must not both build the template.
        await connection.execute("SELECT pg_advisory_lock(7362)")
        try:
            if await steps.database(name):
                try:
                    await steps.schema(name, infra.stack.owner_password)
                except BaseException:
                    await drop_database(infra.stack, name)
                    raise
        finally:
            await connection.execute("SELECT pg_advisory_unlock(7362)")
    finally:
        await connection.close()
    return name


@dataclass(frozen=True)
class FreshDatabase:
    """A fresh, migrated database of one test."""

    name: str
    stack: StackConfig

    def url(self, role: str = "sms_owner") -> str:
        """`role`'s URL through pgbouncer, as the services connect."""
        if role == "sms_owner":
            return (
                f"postgresql://sms_owner:{self.stack.owner_password}@127.0.0.1:"
                f"{self.stack.pgbouncer_port}/{self.name}"
            )
        return self.stack.pooled_url(role, self.name)

    def direct_url(self) -> str:
        """The schema owner's direct URL (bypassing pgbouncer), for migrations."""
        return self.stack.direct_url("sms_owner", self.stack.owner_password, self.name)

    @contextlib.asynccontextmanager
    async def pool(
        self, role: str = "sms_owner", *, max_size: int = 4
    ) -> AsyncIterator[asyncpg.Pool]:
        """A pool of `role` through pgbouncer, closed on exit."""
        pool = await db.create_pool(self.url(role), min_size=0, max_size=max_size)
        try:
            yield pool
        finally:
            await db.close_pool(pool)


@pytest.fixture
async def database(infra: Infra, template_database: str) -> AsyncIterator[FreshDatabase]:
    name = f"smsgw_t_{uuid.uuid4().hex[:16]}"
    await bootstrap_steps(infra.stack).database(name, template=template_database)
    test_db = FreshDatabase(name, infra.stack)
    owner = await asyncpg.connect(test_db.direct_url())
    try:
        await owner.executemany(
            "UPDATE system_settings SET setting_value = $2 WHERE setting_key = $1",
            [("redis_host", "127.0.0.1"), ("redis_port", str(infra.redis_port))],
        )
    finally:
        await owner.close()
    try:
        yield test_db
    finally:
        await drop_database(infra.stack, name)


@pytest.fixture
async def empty_database(infra: Infra) -> AsyncIterator[FreshDatabase]:
    """A database with no schema at all, owned by the schema owner."""
    steps = await bootstrapped_roles(infra.stack)
    name = f"smsgw_e_{uuid.uuid4().hex[:16]}"
    await steps.database(name)
    try:
        yield FreshDatabase(name, infra.stack)
    finally:
        await drop_database(infra.stack, name)


@pytest.fixture
async def owner_pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    """A pool of the schema owner through pgbouncer, for arranging and inspecting tests."""
    async with database.pool() as pool:
        yield pool


@pytest.fixture
async def redis_client(infra: Infra) -> AsyncIterator[aioredis.Redis]:
    """The tests' Redis database, emptied before the test."""
    client = aioredis.Redis(
        host="127.0.0.1",
        port=infra.redis_port,
        password=infra.redis_password,
        db=TEST_REDIS_DB,
        decode_responses=True,
    )
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def service_environment(
    database: FreshDatabase, infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SMSGW_* bootstrap variables a service reads, pointed at this test's database.

    Services call `load_config(...)`; this sets what they would find in production, with the
    development placeholders allowed. `SMSGW_DATABASE_URL` is set per role by the test.
    """
    monkeypatch.setenv("SMSGW_ENVIRONMENT", "development")
    monkeypatch.setenv("SMSGW_REDIS_PASSWORD", infra.redis_password)
    monkeypatch.setenv("SMSGW_REDIS_DB", str(TEST_REDIS_DB))
    monkeypatch.setenv("SMSGW_LOG_FORMAT", "text")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SMSGW_* variable of the shell that runs the tests reaches a configuration under test;
    the harness's own SMSGW_TEST_* variables stay."""
    for name in list(os.environ):
        if name.startswith("SMSGW_") and not name.startswith("SMSGW_TEST_"):
            monkeypatch.delenv(name)
