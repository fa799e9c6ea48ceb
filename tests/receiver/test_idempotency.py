"""Idempotent delivery (SPEC §4.3): a repeat stores nothing and answers the same uuid."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.receiver.conftest import SMS, stored_rows


async def test_a_repeat_answers_the_same_uuid_and_stores_nothing(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    headers = {"Idempotency-Key": "delivery-42"}
    first = await client.post("/sms/receive", json=SMS, headers=headers)
    second = await client.post("/sms/receive", json=SMS, headers=headers)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json() == second.json()
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    [row] = await stored_rows(owner_pool)
    assert str(row["uuid"]) == first.json()["uuid"]
    assert (row["source"], row["client_event_id"]) == ("api", "delivery-42")


async def test_fifty_concurrent_identical_deliveries_store_one_row(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    headers = {"Idempotency-Key": "same-delivery"}
    responses = await asyncio.gather(
        *(client.post("/sms/receive", json=SMS, headers=headers) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {202}
    uuids = {r.json()["uuid"] for r in responses}
    rows = await stored_rows(owner_pool)
    assert len(rows) == 1
    assert uuids == {str(rows[0]["uuid"])}


async def test_keys_are_distinct_per_delivery_and_unkeyed_requests_always_store(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    responses = await asyncio.gather(
        client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "a"}),
        client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "b"}),
        client.post("/sms/receive", json=SMS),
        client.post("/sms/receive", json=SMS),
    )
    assert len({r.json()["uuid"] for r in responses}) == 4
    assert len(await stored_rows(owner_pool)) == 4


async def test_a_repeated_batch_answers_the_same_uuids(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    batch = [SMS, {**SMS, "sms_message": "second"}]
    headers = {"Idempotency-Key": "batch-7"}
    first = await client.post("/sms/receive/batch", json=batch, headers=headers)
    repeats = await asyncio.gather(
        *(client.post("/sms/receive/batch", json=batch, headers=headers) for _ in range(5))
    )
    assert first.status_code == 202
    assert all(r.status_code == 202 and r.json() == first.json() for r in repeats)
    rows = await stored_rows(owner_pool)
    assert sorted(str(r["uuid"]) for r in rows) == sorted(first.json()["uuids"])
    assert sorted(r["client_event_id"] for r in rows) == ["batch-7#0", "batch-7#1"]


async def test_a_batch_key_reused_for_a_different_batch_is_409_and_stores_nothing(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    headers = {"Idempotency-Key": "batch-8"}
    first = await client.post("/sms/receive/batch", json=[SMS, SMS], headers=headers)
    assert first.status_code == 202
    for different in ([SMS], [SMS, SMS, SMS]):
        response = await client.post("/sms/receive/batch", json=different, headers=headers)
        assert response.status_code == 409, response.text
        assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert len(await stored_rows(owner_pool)) == 2


async def test_a_batch_key_longer_than_60_characters_is_refused(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    response = await client.post(
        "/sms/receive/batch", json=[SMS], headers={"Idempotency-Key": "k" * 61}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await stored_rows(owner_pool) == []
