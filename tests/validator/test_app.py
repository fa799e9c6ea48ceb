"""The service around the engine: create_app's lifespan, /health, /ready, /metrics, and a Redis
outage (redis_port pointed at nothing, then back) that the engine waits out and resumes from."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from services.validator.app import create_app
from services.validator.config import ValidatorConfig
from services.validator.state import VALIDATOR
from sms_gateway.config import load_config
from tests.conftest import FreshDatabase, Infra
from tests.validator.conftest import (
    SENDERS,
    all_judged,
    insert_sms,
    out_sms_senders,
    redis_senders,
    set_settings,
    stream,
    wait_for,
)


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.usefixtures("service_environment")
async def test_the_app_runs_the_engine_and_waits_out_a_redis_outage(
    database: FreshDatabase,
    infra: Infra,
    monkeypatch: pytest.MonkeyPatch,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
) -> None:
    monkeypatch.setenv("SMSGW_DATABASE_URL", database.url("sms_validator"))
    app = create_app(load_config(ValidatorConfig), settle_margin=0.01)
    async with (
        VALIDATOR.serving(app) as (served, state),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served), base_url="http://validator"
        ) as client,
    ):
        assert (await client.get("/health")).json() == {"status": "ok"}

        async def ready() -> bool:
            return (await client.get("/ready")).status_code == 200

        await wait_for(ready, within=20, what="/ready")
        await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[:5]))
        await wait_for(lambda: all_judged(owner_pool), within=20, what="first SMS judged")

        # Redis "moves" to a port where nothing listens: batches fail and are retried later.
        await set_settings(owner_pool, {"redis_port": "9", "max_database_retries": "1"})
        await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[5:10]))
        await wait_for(
            lambda: metric_above(client, "sms_validator_batch_failures_total"),
            within=30,
            what="a batch given up",
        )
        assert not await all_judged(owner_pool)
        await set_settings(owner_pool, {"redis_port": str(infra.redis_port)})
        await wait_for(lambda: all_judged(owner_pool), within=30, what="resumed by itself")
        assert not state.engine_task.done()  # waited the outage out, never exited
        assert (await client.get("/ready")).status_code == 200

        metrics = (await client.get("/metrics")).text
        assert 'sms_validator_sms_total{status="valid"}' in metrics
        assert "sms_validator_check_results_total" in metrics
        assert "sms_validator_partitions_held" in metrics
    assert (
        await redis_senders(redis_client) == await out_sms_senders(owner_pool) == set(SENDERS[:10])
    )


async def metric_above(client: httpx.AsyncClient, name: str) -> bool:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(name + "{") and float(line.rsplit(" ", 1)[1]) > 0:
            return True
    return False


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.usefixtures("service_environment")
async def test_a_full_redis_is_waited_out_with_ready_saying_so(
    database: FreshDatabase,
    monkeypatch: pytest.MonkeyPatch,
    receiver_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
) -> None:
    """Redis at maxmemory with noeviction (OutOfMemoryError on every write) is an outage, not a
    bug (issue: it used to stop the process): the engine waits, /ready says it is not judging,
    `sms_validator_waiting` is 1, and once Redis has room everything is judged."""
    monkeypatch.setenv("SMSGW_DATABASE_URL", database.url("sms_validator"))
    await set_settings(owner_pool, {"max_database_retries": "1"})
    app = create_app(load_config(ValidatorConfig), settle_margin=0.01)
    config = {str(k): str(v) for k, v in (await redis_client.config_get("maxmemory*")).items()}
    async with (
        VALIDATOR.serving(app) as (served, state),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served), base_url="http://validator"
        ) as client,
    ):

        async def judging(expected: bool) -> bool:
            body = (await client.get("/ready")).json()
            return bool(body["checks"]["judging"]) is expected

        await wait_for(lambda: judging(True), within=20, what="/ready")
        try:
            await redis_client.config_set("maxmemory-policy", "noeviction")
            await redis_client.config_set("maxmemory", "1")  # below what it holds: full
            await insert_sms(receiver_pool, stream((s, True) for s in SENDERS[:5]))
            await wait_for(lambda: judging(False), within=60, what="/ready: not judging")
            assert "sms_validator_waiting 1.0" in (await client.get("/metrics")).text
            assert not state.engine_task.done()  # waiting, never exited
        finally:
            await redis_client.config_set("maxmemory", config["maxmemory"])
            await redis_client.config_set("maxmemory-policy", config["maxmemory-policy"])
        await wait_for(lambda: all_judged(owner_pool), within=60, what="resumed by itself")
        await wait_for(lambda: judging(True), within=60, what="/ready: judging again")
    assert await redis_senders(redis_client) == await out_sms_senders(owner_pool)
