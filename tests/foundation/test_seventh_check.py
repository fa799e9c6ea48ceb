"""The registry drives every per-check thing: a seventh check needs one check, one registry line
and one migration, and then the validator judges it, the admin validates it in check_sequence,
shows its result, and a requeue resets it; the operator page lists it (docs/architecture.md,
"Adding a seventh check", is this test written out).

The check here is synthetic and its registry is built in the test; both apps take a registry
(`create_app(config, checks_by_name=...)`) exactly as they take `checks.REGISTRY` by default.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final
from uuid import UUID

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

import checks
from checks.base import CheckContext, CheckResult, SmsToJudge
from services.admin.app import create_app as create_admin_app
from services.admin.config import AdminConfig
from services.admin.state import ADMIN
from services.validator.app import create_app as create_validator_app
from services.validator.config import ValidatorConfig
from sms_gateway.config import load_config
from sms_gateway.migrate import MIGRATIONS_DIR, migrate
from tests.conftest import FreshDatabase

# Step 1: the check, in its own file in a real project (checks/keyword.py).


class KeywordCheck:
    """keyword: the message contains the required word."""

    name: Final = "keyword"

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        if "ABC" in sms.sms_message:
            return CheckResult.PASS
        return CheckResult.FAIL


# Step 2: its line in the registry (checks/__init__.py's _CHECKS).
REGISTRY: Final = checks.build_registry([*checks.REGISTRY.values(), KeywordCheck()])

# Step 3: its migration (db/init/NNNN_keyword_check.sql): the result column, and the admin's
# grant to reset it on requeue.
MIGRATION: Final = """
ALTER TABLE sms_monitor ADD COLUMN IF NOT EXISTS keyword_check INTEGER DEFAULT 0;
SELECT grant_check_result_columns();
INSERT INTO schema_migrations (version) VALUES ('0100_keyword_check') ON CONFLICT DO NOTHING;
"""

TOKEN: Final = "seventh-check-operator-token"
SEQUENCE: Final = [*checks.REGISTRY, "keyword"]
WITH_WORD: Final = ("447911123001", "ABC 0123456789abcdef +447911123001")
WITHOUT_WORD: Final = ("447911123002", "XYZ 0123456789abcdef +447911123002")


@pytest.fixture
async def migrated(database: FreshDatabase, tmp_path: Path) -> FreshDatabase:
    """The test's database with the seventh check's migration applied by `sms-migrate`."""
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, tmp_path)
    (tmp_path / "0100_keyword_check.sql").write_text(MIGRATION)
    assert await migrate(database.direct_url(), tmp_path) == ["0100_keyword_check"]
    return database


@pytest.fixture
async def admin(
    migrated: FreshDatabase, service_environment: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("SMSGW_DATABASE_URL", migrated.url("sms_admin"))
    monkeypatch.setenv("SMSGW_ADMIN_TOKENS", f"operator:{TOKEN}")
    app = create_admin_app(load_config(AdminConfig), checks_by_name=REGISTRY)
    async with (
        ADMIN.serving(app) as (served, _),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served),
            base_url="http://admin.test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client,
    ):
        yield client


async def store(database: FreshDatabase, sender_number: str, sms_message: str) -> UUID:
    """An SMS as the receiver stores it."""
    connection = await asyncpg.connect(database.direct_url())
    try:
        sms_uuid: UUID = await connection.fetchval(
            "INSERT INTO input_sms (sender_number, sms_message, received_timestamp) "
            "VALUES ($1, $2, now()) RETURNING uuid",
            sender_number,
            sms_message,
        )
    finally:
        await connection.close()
    return sms_uuid


async def monitor_row(database: FreshDatabase, sms_uuid: UUID) -> asyncpg.Record | None:
    connection = await asyncpg.connect(database.direct_url())
    try:
        row: asyncpg.Record | None = await connection.fetchrow(
            "SELECT * FROM sms_monitor WHERE uuid = $1", sms_uuid
        )
    finally:
        await connection.close()
    return row


@pytest.mark.slow
async def test_a_seventh_check_is_judged_shown_requeued_and_listed(
    migrated: FreshDatabase,
    admin: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: aioredis.Redis,
) -> None:
    # Operators turn it on: the admin validates check_sequence against its registry.
    answer = await admin.put("/settings/check_sequence", json={"value": SEQUENCE})
    assert answer.status_code == 200, answer.text
    setting = (await admin.get("/settings/check_sequence")).json()
    assert setting["value"] == SEQUENCE
    assert setting["default"] == SEQUENCE  # every registered check, in registry order
    refused = await admin.put("/settings/check_sequence", json={"value": ["keyword", "spam"]})
    assert refused.status_code == 422
    assert "keyword" in refused.json()["detail"]  # named among the known checks

    passing = await store(migrated, *WITH_WORD)
    failing = await store(migrated, *WITHOUT_WORD)

    # The validator judges it.
    monkeypatch.setenv("SMSGW_DATABASE_URL", migrated.url("sms_validator"))
    validator = create_validator_app(load_config(ValidatorConfig), checks_by_name=REGISTRY)
    async with validator.router.lifespan_context(validator):
        deadline = time.monotonic() + 30
        while (
            await monitor_row(migrated, passing) is None
            or await monitor_row(migrated, failing) is None
        ):
            assert time.monotonic() < deadline, "the validator judged nothing in 30 s"
            await asyncio.sleep(0.1)
    judged = await monitor_row(migrated, passing)
    refused_row = await monitor_row(migrated, failing)
    assert judged is not None
    assert refused_row is not None
    assert (judged["overall_status"], judged["keyword_check"]) == ("valid", 1)
    assert (refused_row["overall_status"], refused_row["failed_at_check"]) == ("invalid", "keyword")
    assert (refused_row["header_check"], refused_row["keyword_check"]) == (1, 2)

    # The admin shows it, as the operator page renders it (one row per entry of `checks`).
    detail = (await admin.get(f"/sms/{failing}")).json()
    assert [check["name"] for check in detail["checks"]] == SEQUENCE
    assert detail["checks"][-1] == {"name": "keyword", "code": 2, "result": "fail"}
    assert detail["failed_at_check"] == "keyword"
    page_script = (await admin.get("/ui/app.js")).text
    assert "for (const check of sms.checks)" in page_script  # no check is named in the page

    # A requeue resets it: the SMS is put in error as the validator would after a bug.
    connection = await asyncpg.connect(migrated.direct_url())
    try:
        await connection.execute(
            "UPDATE sms_monitor SET overall_status = 'error' WHERE uuid = $1", failing
        )
    finally:
        await connection.close()
    requeued = await admin.post(f"/sms/{failing}/requeue")
    assert requeued.status_code == 200, requeued.text
    reset = await monitor_row(migrated, failing)
    assert reset is not None
    assert (reset["overall_status"], reset["failed_at_check"]) == ("pending", None)
    assert all(reset[column] == 0 for column in checks.result_columns(REGISTRY))
