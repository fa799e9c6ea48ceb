"""The real clients' webhooks (SPEC §4.3): SMS Gateway for Android and Twilio."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.receiver.conftest import ClientFactory, stored_rows

SIGNING_KEY = "Zx3wq7Lm2pV9"
TWILIO_TOKEN = "12345678901234567890123456789012"

# As the app sends them (docs of android-sms-gateway; current and older app versions).
SMSGATE_CURRENT: dict[str, Any] = {
    "deviceId": "ffffffffceb0b1db0000018e937c815b",
    "event": "sms:received",
    "id": "Ey6ECgOkVVFjz3CL48B8C",
    "webhookId": "LreFUt-Z3sSq0JufY9uWB",
    "payload": {
        "messageId": "abc123",
        "message": "Android is always a sweet treat!",
        "sender": "+16505551212",
        "recipient": "+79990001234",
        "phoneNumber": "+16505551212",
        "simNumber": 1,
        "receivedAt": "2024-06-22T15:46:11.000+07:00",
    },
}
SMSGATE_OLDER: dict[str, Any] = {
    "deviceId": "ffffffffceb0b1db0000018e937c815b",
    "event": "sms:received",
    "id": "Qw8oH1kz2mB5nC7xD9yE0",
    "webhookId": "LreFUt-Z3sSq0JufY9uWB",
    "payload": {
        "message": "Ваш код: 4821",
        "phoneNumber": "6505551212",
        "receivedAt": "2024-06-22T15:46:11.000+07:00",
    },
}
# A real inbound-SMS request of Twilio (values anonymised), in Twilio's parameter order.
TWILIO_PARAMS: dict[str, str] = {
    "ToCountry": "US",
    "ToState": "CA",
    "SmsMessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "NumMedia": "0",
    "ToCity": "SAN FRANCISCO",
    "FromZip": "94105",
    "SmsSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "FromState": "CA",
    "SmsStatus": "received",
    "FromCity": "SAN FRANCISCO",
    "Body": "Hello from Twilio 👋 & co",
    "FromCountry": "US",
    "To": "+15017122661",
    "MessagingServiceSid": "MG0123456789abcdef0123456789abcdef",
    "ToZip": "94105",
    "NumSegments": "1",
    "ReferralNumMedia": "0",
    "MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+14155552671",
    "ApiVersion": "2010-04-01",
}


def _smsgate_headers(
    body: bytes, *, key: str = SIGNING_KEY, timestamp: int | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = hmac.new(key.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    return {"X-Signature": signature, "X-Timestamp": stamp, "Content-Type": "application/json"}


@pytest.fixture
async def signed_client(receiver_client: ClientFactory) -> Any:
    async with receiver_client(
        smsgate_signing_key=SIGNING_KEY, twilio_auth_token=TWILIO_TOKEN
    ) as client:
        yield client


# ---------------------------------------------------------------------------- SMS Gateway


@pytest.mark.parametrize(
    ("envelope", "sender"),
    [(SMSGATE_CURRENT, "16505551212"), (SMSGATE_OLDER, "6505551212")],
    ids=["current", "older"],
)
async def test_smsgate_sms_received_is_stored(
    signed_client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    envelope: dict[str, Any],
    sender: str,
) -> None:
    body = json.dumps(envelope).encode()
    response = await signed_client.post(
        "/sms/receive/smsgate", content=body, headers=_smsgate_headers(body)
    )
    assert response.status_code == 202, response.text
    [row] = await stored_rows(owner_pool)
    assert str(row["uuid"]) == response.json()["uuid"]
    assert row["sender_number"] == sender
    assert row["sms_message"] == envelope["payload"]["message"]
    assert row["received_timestamp"] == datetime(2024, 6, 22, 8, 46, 11, tzinfo=UTC)
    assert (row["source"], row["client_event_id"]) == ("smsgate", envelope["id"])


async def test_smsgate_retries_of_one_event_store_one_row(
    signed_client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    body = json.dumps(SMSGATE_CURRENT).encode()
    answers = [
        await signed_client.post(
            "/sms/receive/smsgate", content=body, headers=_smsgate_headers(body)
        )
        for _ in range(3)
    ]
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["uuid"] for a in answers}) == 1
    assert len(await stored_rows(owner_pool)) == 1


@pytest.mark.parametrize(
    "case", ["tampered", "stale", "future", "wrong key", "missing", "uppercase hex", "not a number"]
)
async def test_smsgate_bad_signatures_are_401_and_store_nothing(
    signed_client: httpx.AsyncClient, owner_pool: asyncpg.Pool, case: str
) -> None:
    body = json.dumps(SMSGATE_CURRENT).encode()
    headers = _smsgate_headers(body)
    if case == "tampered":
        body = body.replace(b"sweet", b"sour!")
    elif case == "stale":
        headers = _smsgate_headers(body, timestamp=int(time.time()) - 301)
    elif case == "future":
        headers = _smsgate_headers(body, timestamp=int(time.time()) + 301)
    elif case == "wrong key":
        headers = _smsgate_headers(body, key="another key")
    elif case == "missing":
        del headers["X-Signature"]
    elif case == "uppercase hex":
        headers["X-Signature"] = headers["X-Signature"].upper()
    elif case == "not a number":
        headers["X-Timestamp"] = "soon"
    response = await signed_client.post("/sms/receive/smsgate", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert "signature" in response.json()["detail"]
    assert await stored_rows(owner_pool) == []


@pytest.mark.parametrize(
    "event", ["sms:sent", "sms:delivered", "sms:failed", "system:ping", "sms:data-received"]
)
async def test_smsgate_other_events_are_acknowledged_and_not_stored(
    signed_client: httpx.AsyncClient, owner_pool: asyncpg.Pool, event: str
) -> None:
    envelope = {
        **SMSGATE_CURRENT,
        "event": event,
        "payload": {
            "messageId": "m1",
            "phoneNumber": "+16505551212",
            "simNumber": None,
            "sentAt": "2024-06-22T15:46:11.000+07:00",
        },
    }
    body = json.dumps(envelope).encode()
    response = await signed_client.post(
        "/sms/receive/smsgate", content=body, headers=_smsgate_headers(body)
    )
    assert response.status_code == 200
    assert response.json() == {"ignored": event}
    assert await stored_rows(owner_pool) == []


async def test_smsgate_payload_refusals_name_the_field(
    signed_client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    envelope = {
        **SMSGATE_CURRENT,
        "payload": {"message": "hi", "receivedAt": "2024-06-22T15:46:11.000"},
    }
    body = json.dumps(envelope).encode()
    response = await signed_client.post(
        "/sms/receive/smsgate", content=body, headers=_smsgate_headers(body)
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {
        "payload.sender or payload.phoneNumber"
    }
    envelope["payload"]["phoneNumber"] = "+1555"
    body = json.dumps(envelope).encode()
    response = await signed_client.post(
        "/sms/receive/smsgate", content=body, headers=_smsgate_headers(body)
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "payload.receivedAt"
    assert await stored_rows(owner_pool) == []


async def test_smsgate_without_a_signing_key_needs_no_signature(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    response = await client.post("/sms/receive/smsgate", json=SMSGATE_OLDER)
    assert response.status_code == 202
    assert len(await stored_rows(owner_pool)) == 1


# ---------------------------------------------------------------------------- Twilio


def _twilio_signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    signature: str = RequestValidator(token).compute_signature(url, params)
    return signature


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_twilio_inbound_sms_is_stored_and_answered_with_empty_twiml(
    signed_client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    url = "http://receiver.test/sms/receive/twilio"
    before = datetime.now(UTC)
    response = await signed_client.post(
        "/sms/receive/twilio",
        content=urlencode(TWILIO_PARAMS),
        headers={**FORM, "X-Twilio-Signature": _twilio_signature(url, TWILIO_PARAMS)},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert response.content.endswith(b"<Response/>")
    [row] = await stored_rows(owner_pool)
    assert row["sender_number"] == "14155552671"
    assert row["sms_message"] == "Hello from Twilio 👋 & co"
    assert before - timedelta(seconds=1) <= row["received_timestamp"] <= datetime.now(UTC)
    assert (row["source"], row["client_event_id"]) == (
        "twilio",
        "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    )
    again = await signed_client.post(
        "/sms/receive/twilio",
        content=urlencode(TWILIO_PARAMS),
        headers={**FORM, "X-Twilio-Signature": _twilio_signature(url, TWILIO_PARAMS)},
    )
    assert again.status_code == 200
    assert len(await stored_rows(owner_pool)) == 1


async def test_twilio_signature_uses_the_url_behind_a_proxy(
    signed_client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    url = "https://sms.example.com/sms/receive/twilio?tenant=7"
    params = {**TWILIO_PARAMS, "NewFieldTwilioAddsLater": "x"}
    response = await signed_client.post(
        "/sms/receive/twilio?tenant=7",
        content=urlencode(params),
        headers={
            **FORM,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "sms.example.com",
            "X-Twilio-Signature": _twilio_signature(url, params),
        },
    )
    assert response.status_code == 200, response.text
    # Signed for the URL with the default port: accepted too, as Twilio's validators do.
    params["MessageSid"] = params["SmsSid"] = "SM00000000000000000000000000000002"
    response = await signed_client.post(
        "/sms/receive/twilio?tenant=7",
        content=urlencode(params),
        headers={
            **FORM,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "sms.example.com",
            "X-Twilio-Signature": _twilio_signature(
                "https://sms.example.com:443/sms/receive/twilio?tenant=7", params
            ),
        },
    )
    assert response.status_code == 200, response.text
    assert len(await stored_rows(owner_pool)) == 2


async def test_twilio_signature_uses_the_path_a_prefix_stripping_proxy_was_called_with(
    receiver_client: ClientFactory, owner_pool: asyncpg.Pool
) -> None:
    # Twilio calls https://sms.example.com/gw/sms/receive/twilio; the proxy strips /gw and the
    # receiver runs with root_path=/gw. The signed URL has the prefix once, not twice.
    url = "https://sms.example.com/gw/sms/receive/twilio"
    async with receiver_client(root_path="/gw", twilio_auth_token=TWILIO_TOKEN) as client:
        response = await client.post(
            "/gw/sms/receive/twilio",
            content=urlencode(TWILIO_PARAMS),
            headers={
                **FORM,
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "sms.example.com",
                "X-Twilio-Signature": _twilio_signature(url, TWILIO_PARAMS),
            },
        )
    assert response.status_code == 200, response.text
    assert len(await stored_rows(owner_pool)) == 1


@pytest.mark.parametrize("case", ["tampered", "wrong token", "wrong url", "missing"])
async def test_twilio_bad_signatures_are_401_and_store_nothing(
    signed_client: httpx.AsyncClient, owner_pool: asyncpg.Pool, case: str
) -> None:
    url = "http://receiver.test/sms/receive/twilio"
    params = dict(TWILIO_PARAMS)
    headers = {**FORM, "X-Twilio-Signature": _twilio_signature(url, params)}
    if case == "tampered":
        params["Body"] = "Hello from someone else"
    elif case == "wrong token":
        headers["X-Twilio-Signature"] = _twilio_signature(url, params, "0" * 32)
    elif case == "wrong url":
        headers["X-Twilio-Signature"] = _twilio_signature(url + "-other", params)
    elif case == "missing":
        del headers["X-Twilio-Signature"]
    response = await signed_client.post(
        "/sms/receive/twilio", content=urlencode(params), headers=headers
    )
    assert response.status_code == 401, response.text
    assert await stored_rows(owner_pool) == []


async def test_twilio_without_message_sid_is_refused(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    params = {k: v for k, v in TWILIO_PARAMS.items() if k != "MessageSid"}
    response = await client.post("/sms/receive/twilio", content=urlencode(params), headers=FORM)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "MessageSid"
    assert await stored_rows(owner_pool) == []
