"""The receiver when the row cannot be stored (SPEC §4.1): 503 with Retry-After, never a 500
and never a 2xx, within the bound it states (`answer_within_seconds`), whatever the outage; and
it recovers by itself.

Outages are made on this test's own database only: read-only through `ALTER DATABASE` (what a
failover to a standby looks like), and hanging through this test stack's pgbouncer (`PAUSE`:
queries wait, as they do while PostgreSQL restarts behind it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FreshDatabase
from tests.fault.support import (
    count_rows,
    pgbouncer_console,
    read_only_database,
    running_receiver,
    wait_ready,
)
from tests.receiver.conftest import SMS, ClientFactory

pytestmark = pytest.mark.fault

CLIENT_PATIENCE = 15.0  # Twilio's webhook timeout: every answer must come before it
SMSGATE = {
    "event": "sms:received",
    "id": "evt-1",
    "payload": {
        "message": "hello",
        "phoneNumber": "+447700900123",
        "receivedAt": SMS["received_timestamp"],
    },
}
TWILIO_FORM = {"MessageSid": "SM1", "From": "+447700900123", "To": "+15550000000", "Body": "hi"}


def _failures(cause: str) -> float:
    value = REGISTRY.get_sample_value("sms_receiver_store_failures_total", {"cause": cause})
    return value or 0.0


async def _every_endpoint(client: httpx.AsyncClient) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(client.post("/sms/receive", json={**SMS, "sms_message": f"m{i}"}) for i in range(4)),
            client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "key-1"}),
            client.post("/sms/receive/batch", json=[SMS, SMS]),
            client.post("/sms/receive/smsgate", json=SMSGATE),
            client.post("/sms/receive/twilio", data=TWILIO_FORM),
        )
    )


def _assert_unavailable(responses: list[httpx.Response]) -> None:
    assert [r.status_code for r in responses] == [503] * len(responses), [r.text for r in responses]
    for response in responses:
        assert int(response.headers["retry-after"]) > 0
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 503


async def test_a_read_only_database_is_503_then_recovers(
    receiver_client: ClientFactory, database: FreshDatabase
) -> None:
    outages_before = _failures("outage")
    async with receiver_client(db_command_timeout=2.0) as client:
        assert (await client.post("/sms/receive", json=SMS)).status_code == 202
        async with read_only_database(database):
            during = await _every_endpoint(client)
            ready = await client.get("/ready")
        _assert_unavailable(during)
        assert ready.status_code == 503  # it answers, but it cannot store: not ready
        assert _failures("outage") > outages_before
        assert await count_rows(database) == 1

        for _ in range(50):  # the old read-only sessions are gone within a few attempts
            after = await client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "k"})
            if after.status_code == 202:
                break
            assert after.status_code == 503
            await asyncio.sleep(0.1)
        assert after.status_code == 202, after.text
        assert (await client.get("/ready")).status_code == 200
    assert await count_rows(database) == 2


async def test_a_hanging_database_is_503_within_the_bound(
    receiver_client: ClientFactory, database: FreshDatabase
) -> None:
    """Every attempt would wait for ever (pgbouncer holds the queries): the deadline over the
    retries answers each request, 503, well before a client's own timeout."""
    deadlines_before = _failures("deadline")
    async with receiver_client(answer_within_seconds=1.0, db_command_timeout=10.0) as client:
        assert (await client.post("/sms/receive", json=SMS)).status_code == 202
        await pgbouncer_console(database, f'PAUSE "{database.name}"')
        try:
            during = await asyncio.wait_for(_every_endpoint(client), CLIENT_PATIENCE)
        finally:
            await pgbouncer_console(database, f'RESUME "{database.name}"')
        _assert_unavailable(during)
        assert _failures("deadline") > deadlines_before

        for _ in range(50):
            after = await client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "k"})
            if after.status_code == 202:
                break
            await asyncio.sleep(0.1)
        assert after.status_code == 202, after.text
        # The keyed delivery is stored once, however many times it was tried.
        again = await client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "k"})
        assert again.json() == after.json()


@pytest.mark.slow
async def test_the_real_receiver_answers_within_its_bound_during_an_outage(
    database: FreshDatabase, tmp_path: Path
) -> None:
    with running_receiver(database, tmp_path, SMSGW_ANSWER_WITHIN_SECONDS="2") as receiver:
        await wait_ready(receiver)
        async with httpx.AsyncClient(base_url=receiver.base_url, timeout=CLIENT_PATIENCE) as c:
            await pgbouncer_console(database, f'PAUSE "{database.name}"')
            try:
                during = await _every_endpoint(c)
            finally:
                await pgbouncer_console(database, f'RESUME "{database.name}"')
            _assert_unavailable(during)
            for _ in range(50):
                after = await c.post("/sms/receive", json=SMS)
                if after.status_code == 202:
                    break
                await asyncio.sleep(0.1)
            assert after.status_code == 202, after.text
            metrics = (await c.get("/metrics")).text
    assert 'sms_receiver_store_failures_total{cause="deadline"}' in metrics
