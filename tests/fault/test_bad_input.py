"""No input answers 500 (SPEC §4.1, §7): every case a fault campaign found, on the receiver
(no token needed) and the admin API (with a token), answers a 4xx problem details body that
names what was wrong, and nothing is stored or half written.

The whole class is covered by the property tests beside this file (test_bad_input_properties,
test_openapi_fuzz); these are the cases as they were reported.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from sms_gateway.problems import PROBLEM_MEDIA_TYPE
from tests.admin.conftest import audit_rows, stored_settings
from tests.receiver.conftest import SMS, ClientFactory, stored_rows

pytestmark = pytest.mark.fault

HUGE_INTEGER = "9" * 4301  # past Python's int-from-text limit (4300 digits)


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """A problem details answer with `status` whose detail names each fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


# ------------------------------------------------------------------ receiver


def _sms_json(**changes: Any) -> bytes:
    return json.dumps({**SMS, **changes}).encode()


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        # a JSON key with a lone surrogate: the unknown field's name was echoed and did not encode
        ("/sms/receive", b'{"\\ud800": 1, ' + _sms_json()[1:], "\ud800"),
        ("/sms/receive/batch", b'[{"\\udfff": 1, ' + _sms_json()[1:] + b"]", "\udfff"),
        # an integer of more than 4300 digits anywhere in the body
        ("/sms/receive", _sms_json()[:-1] + b', "n": ' + HUGE_INTEGER.encode() + b"}", "body"),
        ("/sms/receive/batch", b"[" + HUGE_INTEGER.encode() + b"]", "body"),
        ("/sms/receive/smsgate", b'{"event": ' + HUGE_INTEGER.encode() + b"}", "body"),
        # an SMSGate event name with a lone surrogate, echoed in the "ignored" answer
        ("/sms/receive/smsgate", b'{"event": "sms:\\ud800", "id": "x"}', "event"),
        # NUL and control-character noise that the database cannot hold
        ("/sms/receive", _sms_json(sms_message="a\u0000b"), "sms_message"),
        ("/sms/receive", _sms_json(sender_number="\ud83d"), "sender_number"),
    ],
)
async def test_receiver_refuses_what_it_cannot_store(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, path: str, raw: bytes, field: str
) -> None:
    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    body = assert_problem(response, 422)
    assert any(error["field"] == field for error in body["errors"]), body
    assert await stored_rows(owner_pool) == []


async def test_twilio_refuses_nul_and_a_huge_form(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for raw in (
        b"MessageSid=SM1&From=%2B447700900123&Body=a%00b",
        b"MessageSid=SM1&From=%ED%A0%80&Body=hello",  # not UTF-8 once decoded
        b"MessageSid=" + b"S" * 65 + b"&From=%2B447700900123&Body=hello",
    ):
        response = await client.post("/sms/receive/twilio", content=raw, headers=form)
        assert 400 <= response.status_code < 500, (raw, response.text)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert await stored_rows(owner_pool) == []


async def test_a_smsgate_timestamp_of_thousands_of_digits_is_refused(
    receiver_client: ClientFactory, owner_pool: asyncpg.Pool
) -> None:
    async with receiver_client(smsgate_signing_key="k" * 32) as signed:
        response = await signed.post(
            "/sms/receive/smsgate",
            content=b"{}",
            headers={"X-Signature": "00", "X-Timestamp": "9" * 4000},
        )
    assert_problem(response, 401, "X-Timestamp")
    assert await stored_rows(owner_pool) == []


async def test_unknown_paths_and_methods_answer_problem_details(
    client: httpx.AsyncClient, authed: httpx.AsyncClient
) -> None:
    assert_problem(await client.get("/sms/nothing-here"), 404)
    assert_problem(await client.get("/sms/receive"), 405)
    assert_problem(await authed.get("/nothing-here"), 404)


# ------------------------------------------------------------------ admin


@pytest.mark.parametrize("key", ["message_separator", "header_pattern", "redis_host"])
async def test_nul_in_a_setting_is_refused(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool, key: str
) -> None:
    before = await stored_settings(owner_pool)
    response = await authed.put(f"/settings/{key}", json={"value": "a\u0000"})
    body = assert_problem(response, 422, key)
    assert body["key"] == key
    assert "U+0000" in body["rule"]
    assert await stored_settings(owner_pool) == before
    assert await audit_rows(owner_pool) == []


async def test_a_lone_surrogate_in_header_allowed_is_refused_before_it_is_committed(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    before = await stored_settings(owner_pool)
    response = await authed.put(
        "/settings/header_allowed",
        content=b'{"value": ["ACME", "\\ud800"]}',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(response, 422, "header_allowed")
    assert "U+D800" in body["rule"]
    assert await stored_settings(owner_pool) == before
    assert await audit_rows(owner_pool) == []
    assert (await authed.get("/settings")).status_code == 200


@pytest.mark.parametrize(
    "stored",
    ['["\\ud800"]', '["ACME\\u0000"]', '["\\u0007"]', '{"blacklist": "\\udc00"}', "[1e999999]"],
)
async def test_settings_written_by_hand_never_break_the_listing(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool, stored: str
) -> None:
    """A bad value already in the table is shown as invalid, with the stored text (SPEC §3)."""
    key = "check_enabled" if stored.startswith("{") else "header_allowed"
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE system_settings SET setting_value = $2 WHERE setting_key = $1", key, stored
        )
    for response in (await authed.get("/settings"), await authed.get(f"/settings/{key}")):
        assert response.status_code == 200, response.text
    [view] = [s for s in (await authed.get("/settings")).json() if s["key"] == key]
    assert view["invalid"]
    assert view["value"] == stored


@pytest.mark.parametrize(
    "request_line",
    [
        "/blacklist?sender_prefix=44%00",
        "/blacklist?after=4477%00",
        "/blacklist?sender_prefix=%1b%5b2J",
        "/settings/audit?key=batch%00size",
        "/settings/batch%00size",
        "/settings/audit?before_id=99999999999999999999",
        "/settings/audit?before_id=-1",
        "/settings/audit?limit=100000000000000000000000",
        "/blacklist?limit=0",
        "/sms/00000000-0000-0000-0000-000000000000%00",
    ],
)
async def test_admin_parameters_are_refused_with_a_4xx(
    authed: httpx.AsyncClient, request_line: str
) -> None:
    response = await authed.get(request_line)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["errors"], response.text


async def test_a_blacklist_path_with_nul_is_refused(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    async with owner_pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "INSERT INTO blacklist_sms (sender_number, reason, message_count) "
            "VALUES ('447700900123', 'threshold_exceeded', 11)"
        )
    response = await authed.delete("/blacklist/447700900123%00")
    body = assert_problem(response, 422)
    assert body["errors"][0] == {
        "field": "sender_number",
        "rule": "must not contain control characters: U+0000 at position 12",
        "in": "path",
    }
    async with owner_pool.acquire() as connection, connection.transaction():
        assert await connection.fetchval("SELECT count(*) FROM blacklist_sms") == 1
