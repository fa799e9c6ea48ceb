"""POST /sms/receive and /sms/receive/batch: what is stored verbatim, what is refused (with the
field and rule named, and nothing stored)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from tests.receiver.conftest import SMS, stored_rows


@pytest.mark.parametrize(
    ("sender", "message", "stored_sender"),
    [
        ("+44 7700 900123", "ACME 0123456789abcdef +447700900123", "447700900123"),
        ("0044 (7700) 900-123", "plain", "447700900123"),
        ("Google", "G-123456 is your Google verification code.", "Google"),
        ("  AB-CTAXKR ", "Your taxi is here", "AB-CTAXKR"),
        ("72404", "short code reply", "72404"),
        ("+79991234567", "Привет! Ваш код: 4821", "79991234567"),
        ("+971501234567", "رمز التحقق الخاص بك هو 4821", "971501234567"),
        ("+15551234567", "🎉🔐 code 1234 👍🏽", "15551234567"),
        ("+15551234567", "'; DROP TABLE input_sms; --", "15551234567"),
        ("+15551234567", "  leading and trailing spaces\n\ttabs  ", "15551234567"),
        ("+15551234567", "x" * 1600, "15551234567"),
    ],
)
async def test_real_content_is_stored_verbatim(
    client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    sender: str,
    message: str,
    stored_sender: str,
) -> None:
    response = await client.post(
        "/sms/receive",
        json={
            "sender_number": sender,
            "sms_message": message,
            "received_timestamp": "2024-06-22T15:46:11.250+07:00",
        },
    )
    assert response.status_code == 202, response.text
    uuid = UUID(response.json()["uuid"])
    [row] = await stored_rows(owner_pool)
    assert row["uuid"] == uuid
    assert row["sender_number"] == stored_sender
    assert row["sms_message"] == message
    assert row["received_timestamp"] == datetime(2024, 6, 22, 8, 46, 11, 250_000, tzinfo=UTC)
    assert (row["source"], row["client_event_id"]) == ("api", None)


def _refusal(response: httpx.Response, status: int, field: str, rule_part: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert any(e["field"] == field and rule_part in e["rule"] for e in body["errors"]), body
    assert field in body["detail"]


def _with(**changes: Any) -> dict[str, Any]:
    return {**SMS, **changes}


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in SMS.items() if k != name}


@pytest.mark.parametrize(
    ("body", "field", "rule_part"),
    [
        (_with(sms_message="NUL \x00 inside"), "sms_message", "NUL"),
        (_with(sender_number="Goo\x00gle"), "sender_number", "NUL"),
        (_with(sms_message=""), "sms_message", "must not be empty"),
        (_with(sms_message="x" * 1601), "sms_message", "at most 1600 characters"),
        (_with(sender_number="+1234567890123456"), "sender_number", "at most 15 characters"),
        (_with(sender_number="ABCDEFGHIJKLMNOP"), "sender_number", "at most 15 characters"),
        (_with(sender_number=" - ( ) . "), "sender_number", "must not be empty"),
        (_with(sender_number=""), "sender_number", "must not be empty"),
        (_with(sender_number=447700900123), "sender_number", "must be a string"),
        (_with(received_timestamp="2024-06-22T15:46:11"), "received_timestamp", "UTC offset"),
        (_with(received_timestamp="yesterday"), "received_timestamp", "ISO 8601"),
        (_with(received_timestamp=1719049571), "received_timestamp", "ISO 8601"),
        (_with(received_timestamp="0001-01-01T00:00:00+05:00"), "received_timestamp", "years"),
        (_without("sms_message"), "sms_message", "is required"),
        (_without("sender_number"), "sender_number", "is required"),
        (_with(smsmessage="typo"), "smsmessage", "not a known field"),
        ([SMS], "body", "JSON object"),
    ],
)
async def test_refusals_name_the_field_and_rule_and_store_nothing(
    client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    body: Any,
    field: str,
    rule_part: str,
) -> None:
    _refusal(await client.post("/sms/receive", json=body), 422, field, rule_part)
    assert await stored_rows(owner_pool) == []


async def test_lone_surrogates_are_refused(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    raw = json.dumps(SMS).replace("ACME", "\\ud800ACME").encode()
    response = await client.post(
        "/sms/receive", content=raw, headers={"content-type": "application/json"}
    )
    _refusal(response, 422, "sms_message", "lone surrogate U+D800 at position 0")
    assert await stored_rows(owner_pool) == []


@pytest.mark.parametrize(
    ("raw", "rule_part"),
    [
        (
            b'{"sender_number": "+1555", "sms_message": "caf\xe9", "received_timestamp": '
            b'"2024-06-22T15:46:11Z"}',
            "UTF-8",
        ),
        (b'{"sender_number": "+1555",', "must be JSON"),
        (b"", "must be JSON"),
        (b"[" * 30_000 + b"]" * 30_000, "nested"),  # within 64 KiB, past the parser's stack
    ],
)
async def test_invalid_utf8_and_malformed_json_are_refused(
    client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    raw: bytes,
    rule_part: str,
) -> None:
    response = await client.post(
        "/sms/receive", content=raw, headers={"content-type": "application/json"}
    )
    _refusal(response, 422, "body", rule_part)
    assert await stored_rows(owner_pool) == []


async def test_a_body_over_64_kib_is_413(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    body = json.dumps(_with(sms_message="")).encode()
    padded = body[:-1] + b" " * (64 * 1024 + 1 - len(body)) + b"}"
    assert len(padded) == 64 * 1024 + 1
    _refusal(await client.post("/sms/receive", content=padded), 413, "body", "65536 bytes")

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(65):
            yield b" " * 1024
        yield body

    _refusal(await client.post("/sms/receive", content=chunks()), 413, "body", "65536 bytes")
    assert await stored_rows(owner_pool) == []


async def test_a_body_of_exactly_64_kib_is_read(client: httpx.AsyncClient) -> None:
    body = json.dumps(SMS).encode()
    padded = body[:-1] + b" " * (64 * 1024 - len(body)) + b"}"
    assert (await client.post("/sms/receive", content=padded)).status_code == 202


async def test_idempotency_key_rules(client: httpx.AsyncClient, owner_pool: asyncpg.Pool) -> None:
    response = await client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "k" * 65})
    _refusal(response, 422, "Idempotency-Key", "64")
    response = await client.post("/sms/receive", json=SMS, headers={"Idempotency-Key": "a b"})
    _refusal(response, 422, "Idempotency-Key", "visible ASCII")
    assert await stored_rows(owner_pool) == []


async def test_max_message_length_follows_the_setting_without_a_restart(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE system_settings SET setting_value = '10' "
            "WHERE setting_key = 'max_message_length'"
        )
    long_sms = _with(sms_message="x" * 11)
    for _ in range(100):  # the receiver reloads its settings every 2 s
        response = await client.post("/sms/receive", json=long_sms)
        if response.status_code == 422:
            break
        await asyncio.sleep(0.1)
    _refusal(response, 422, "sms_message", "at most 10 characters")


# ---------------------------------------------------------------------------- batch


async def test_a_batch_is_stored_in_input_order(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    items = [_with(sms_message=f"message {i}", sender_number=f"+1555000{i:04d}") for i in range(25)]
    response = await client.post("/sms/receive/batch", json=items)
    assert response.status_code == 202, response.text
    uuids = [UUID(u) for u in response.json()["uuids"]]
    rows = {row["uuid"]: row for row in await stored_rows(owner_pool)}
    assert len(rows) == 25
    for i, uuid in enumerate(uuids):
        assert rows[uuid]["sms_message"] == f"message {i}"
        assert rows[uuid]["sender_number"] == f"1555000{i:04d}"
        assert rows[uuid]["source"] == "api-batch"


BATCH_CONTENT = [
    ("+44 7700 900123", "ACME 0123456789abcdef", "2024-06-22T15:46:11+01:00"),
    ("Google", "Привет! 🎉🔐 \\ \" \n\t\u001f '; --", "2024-06-22T15:46:11.000001Z"),
    ("72404", "رمز 4821", "2024-06-22T15:46:11.123456+05:30:15"),
    ("+15551234567", "x" * 1600, "0001-01-01T00:00:00+00:00"),
    ("+15551234567", "  spaces  ", "9999-12-31T23:59:59.999999+00:30"),
    ("+15551234567", "\u2028\u2029\ufeff", " 2024-06-22 15:46:11-09:59:59.5 "),
]


async def test_a_batch_stores_every_item_verbatim_and_each_instant_exactly(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    items = [
        {"sender_number": sender, "sms_message": message, "received_timestamp": moment}
        for sender, message, moment in BATCH_CONTENT
    ]
    response = await client.post("/sms/receive/batch", json=items)
    assert response.status_code == 202, response.text
    rows = {row["uuid"]: row for row in await stored_rows(owner_pool)}
    for text, (sender, message, moment) in zip(
        response.json()["uuids"], BATCH_CONTENT, strict=True
    ):
        row = rows[UUID(text)]
        assert row["sms_message"] == message
        assert row["sender_number"] == (
            sender if sender == "Google" else sender.lstrip("+").replace(" ", "")
        )
        assert row["received_timestamp"] == datetime.fromisoformat(moment.strip())


async def test_a_batch_with_bad_items_names_each_and_stores_nothing(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    items = [SMS, _with(sms_message="bad \x00"), SMS, _with(received_timestamp="2024-06-22")]
    response = await client.post("/sms/receive/batch", json=items)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {(e["index"], e["field"]) for e in errors} == {
        (1, "sms_message"),
        (3, "received_timestamp"),
    }
    assert "[1].sms_message" in response.json()["detail"]
    assert await stored_rows(owner_pool) == []


@pytest.mark.parametrize(
    ("body", "rule_part"),
    [({"not": "a list"}, "JSON list"), ([], "at least one"), ([SMS] * 1001, "at most 1000")],
    ids=["object", "empty", "1001"],
)
async def test_batch_shape_refusals(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, body: Any, rule_part: str
) -> None:
    _refusal(await client.post("/sms/receive/batch", json=body), 422, "body", rule_part)
    assert await stored_rows(owner_pool) == []


async def test_a_batch_body_over_16_mib_is_413(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    body = json.dumps([_with(sms_message="é" * 1600)] * 1000).encode()
    body = body[:-1] + b" " * (16 * 1024 * 1024 + 1 - len(body)) + b"]"
    _refusal(await client.post("/sms/receive/batch", content=body), 413, "body", "16777216")
    assert await stored_rows(owner_pool) == []


async def test_a_batch_of_1000_is_accepted(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    small = {"sender_number": "1", "sms_message": "m", "received_timestamp": "2024-01-01T00:00Z"}
    response = await client.post("/sms/receive/batch", json=[small] * 1000)
    assert response.status_code == 202, response.text
    assert len(set(response.json()["uuids"])) == 1000
    assert len(await stored_rows(owner_pool)) == 1000
