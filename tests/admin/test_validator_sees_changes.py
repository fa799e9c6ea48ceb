"""A setting changed through the admin API is what the validator's next batch runs with
(SPEC §3: "a change takes effect within one batch")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

import checks
from checks.base import CheckSecrets
from services.validator.batch import BatchRunner
from sms_gateway import db
from sms_gateway.redis import RedisLink
from sms_gateway.settings import SettingsStore, validate_setting
from tests.admin.conftest import insert_sms
from tests.admin.test_settings_api import EXAMPLES, WRITABLE
from tests.conftest import TEST_REDIS_DB, FreshDatabase, Infra

SETTLE_MARGIN = 0.01


@pytest.fixture
async def runner(database: FreshDatabase, infra: Infra) -> AsyncIterator[BatchRunner]:
    """The validator's batch runner on this test's database and Redis, as sms_validator."""
    pool = await db.create_pool(database.url("sms_validator"), min_size=0, max_size=2)
    link = RedisLink(password=infra.redis_password, db=TEST_REDIS_DB)
    try:
        yield BatchRunner(
            pool,
            link,
            checks.REGISTRY,
            CheckSecrets(),
            SettingsStore(known_checks=checks.REGISTRY),
            settle_margin=SETTLE_MARGIN,
        )
    finally:
        await link.close()
        await db.close_pool(pool)


@pytest.mark.parametrize("key", WRITABLE)
async def test_the_next_batch_runs_with_the_new_value(
    key: str, authed: httpx.AsyncClient, runner: BatchRunner
) -> None:
    good, _ = EXAMPLES[key]
    before = await runner.run("batch")  # nothing to judge: it only loads the settings
    assert getattr(before.settings, key) != validate_setting(key, good)

    assert (await authed.put(f"/settings/{key}", json={"value": good})).status_code == 200

    after = await runner.run("batch")
    assert getattr(after.settings, key) == validate_setting(key, good)


async def test_a_disabled_check_is_skipped_from_the_next_batch_on(
    authed: httpx.AsyncClient, runner: BatchRunner, owner_pool: asyncpg.Pool
) -> None:
    response = await authed.put("/settings/check_enabled", json={"value": {"header": False}})
    assert response.status_code == 200
    # A lower-case header fails `header`; with the check disabled the SMS goes on and passes.
    sms_uuid = await insert_sms(owner_pool, "447911123001", "abc 0123456789abcdef +447911123001")
    # The runner judges only rows older than its settle margin (10 ms here).
    await asyncio.sleep(SETTLE_MARGIN * 5)

    outcome = await runner.run("batch")

    assert outcome.size == 1
    detail = (await authed.get(f"/sms/{sms_uuid}")).json()
    results = {c["name"]: c["result"] for c in detail["checks"]}
    assert results["header"] == "skipped"
    assert detail["overall_status"] == "valid"
    assert detail["out_sms"] is not None
