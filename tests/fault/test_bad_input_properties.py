"""No 500 for any input, as properties (SPEC §4.1, §7): any JSON document to every JSON endpoint
of the receiver, any value for any setting through the admin API and through the settings model.

What must hold for every input: the answer is a success or a 4xx problem details body, never a
5xx; a refusal stores nothing and audits nothing; an accepted setting reads back as it was
accepted and every later GET /settings still answers.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_gateway.errors import SettingValueError
from sms_gateway.problems import PROBLEM_MEDIA_TYPE
from sms_gateway.settings import (
    SETTING_KEYS,
    encode_setting,
    parse_setting_text,
    to_json,
    validate_setting,
)
from sms_gateway.text import plain_text_problem
from tests.fault.support import (
    ANY_JSON,
    ANY_TEXT,
    LoopBridge,
    as_python,
    in_thread,
    json_bytes,
    json_text,
)
from tests.receiver.conftest import SMS

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EXAMPLES = 60
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Documents shaped like what each endpoint takes, with any value in any field, so that the
# examples reach past the first shape check; and anything else at all.
SMS_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "sender_number": ANY_JSON | st.sampled_from(["+44 7700 900123", "Google", "72404"]),
        "sms_message": ANY_JSON | ANY_TEXT,
        "received_timestamp": ANY_JSON | st.sampled_from([SMS["received_timestamp"], "2024"]),
        "extra": ANY_JSON,
    },
) | st.dictionaries(ANY_TEXT, ANY_JSON, max_size=3).map(lambda extra: {**SMS, **extra})
BODIES = {
    "/sms/receive": SMS_LIKE | ANY_JSON,
    "/sms/receive/batch": st.lists(SMS_LIKE | ANY_JSON, max_size=3) | ANY_JSON,
    "/sms/receive/smsgate": st.fixed_dictionaries(
        {"event": st.sampled_from(["sms:received", "sms:sent"]) | ANY_JSON},
        optional={"id": ANY_JSON | ANY_TEXT, "payload": SMS_LIKE | ANY_JSON},
    )
    | ANY_JSON,
}


def assert_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.text
        body = response.json()
        assert body["status"] == response.status_code
        assert body["detail"]


async def _count(pool: asyncpg.Pool, table: str) -> int:
    async with pool.acquire() as connection, connection.transaction():
        return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))


@pytest.mark.parametrize("path", sorted(BODIES))
async def test_any_json_to_the_receiver_is_stored_or_refused(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool, path: str
) -> None:
    def check(bridge: LoopBridge) -> None:
        @PROPERTY
        @given(document=BODIES[path])
        def receive(document: Any) -> None:
            before = bridge.run(_count(owner_pool, "input_sms"))
            response = bridge.request(
                client,
                "POST",
                path,
                content=json_bytes(document),
                headers={"Content-Type": "application/json"},
            )
            assert_answer(response)
            stored = bridge.run(_count(owner_pool, "input_sms")) - before
            if response.status_code >= 400 or "ignored" in response.json():
                assert stored == 0
            else:
                assert response.status_code == 202
                assert stored == len(response.json().get("uuids", [None]))

        receive()

    await in_thread(check)


async def test_any_bytes_to_the_receiver_are_refused(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    def check(bridge: LoopBridge) -> None:
        @PROPERTY
        @given(
            path=st.sampled_from([*BODIES, "/sms/receive/twilio"]),
            raw=st.binary(max_size=200),
            content_type=st.sampled_from(
                ["application/json", "application/x-www-form-urlencoded", "text/plain"]
            ),
        )
        def receive(path: str, raw: bytes, content_type: str) -> None:
            response = bridge.request(
                client, "POST", path, content=raw, headers={"Content-Type": content_type}
            )
            assert_answer(response)

        receive()

    await in_thread(check)
    assert await _count(owner_pool, "input_sms") == 0  # no random bytes make a whole SMS


TWILIO_FIELDS = st.sampled_from(["MessageSid", "From", "To", "Body", "NumMedia"]) | ANY_TEXT


async def test_any_form_to_twilio_is_stored_or_refused(
    client: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    def check(bridge: LoopBridge) -> None:
        @PROPERTY
        @given(
            form=st.dictionaries(
                TWILIO_FIELDS, ANY_TEXT | st.sampled_from(["+447700900123", "hi"]), max_size=6
            )
        )
        def receive(form: dict[str, str]) -> None:
            before = bridge.run(_count(owner_pool, "input_sms"))
            raw = urlencode(
                [
                    (k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass"))
                    for k, v in form.items()
                ]
            )
            response = bridge.request(
                client,
                "POST",
                "/sms/receive/twilio",
                content=raw.encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert_answer(response)
            stored = bridge.run(_count(owner_pool, "input_sms")) - before
            assert stored <= (1 if response.status_code == 200 else 0)

        receive()

    await in_thread(check)


async def test_any_value_for_any_setting_through_the_admin_api(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    def check(bridge: LoopBridge) -> None:
        @PROPERTY
        @given(key=st.sampled_from(SETTING_KEYS), value=ANY_JSON)
        def change(key: str, value: Any) -> None:
            audited = bridge.run(_count(owner_pool, "settings_audit"))
            response = bridge.request(
                authed,
                "PUT",
                f"/settings/{key}",
                content=b'{"value": ' + json_bytes(value) + b"}",
                headers={"Content-Type": "application/json"},
            )
            assert_answer(response)
            if response.status_code >= 400:
                # A value that breaks the key's rule names the key; a body that cannot be read
                # (a number of over 4300 digits) names the body.
                assert response.status_code == 422, response.text
                body = response.json()
                assert body.get("key") == key or body["errors"][0]["field"] == "body", body
                assert bridge.run(_count(owner_pool, "settings_audit")) == audited
            listing = bridge.request(authed, "GET", "/settings")
            assert listing.status_code == 200, listing.text
            assert not any(setting["invalid"] for setting in listing.json())

        change()

    await in_thread(check)


@settings(max_examples=500, deadline=None)
@given(key=st.sampled_from(SETTING_KEYS), value=ANY_JSON | ANY_TEXT)
def test_the_settings_model_accepts_only_what_it_can_store_and_show(key: str, value: Any) -> None:
    """Whatever arrives (JSON from the API, text from the table): refused with the key's rule,
    or a value that is stored as text PostgreSQL holds, read back the same, and shown as JSON
    that encodes, with no control character where the operator would see it."""
    for given_value in (as_python(value), value if isinstance(value, str) else json_text(value)):
        try:
            typed = validate_setting(key, given_value)
        except SettingValueError as refused:
            assert refused.key == key  # noqa: PT017 (a property: refusal is one outcome)
            continue
        text = encode_setting(key, typed)
        assert "\x00" not in text
        text.encode("utf-8")
        assert parse_setting_text(key, text) == typed
        shown = json.dumps(to_json(key, typed), ensure_ascii=False)
        shown.encode("utf-8")
        for string in _strings(to_json(key, typed)):
            assert (
                plain_text_problem(string, allow="\t" if key == "message_separator" else "") is None
            )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [*value, *(s for item in value.values() for s in _strings(item))]
    return []


@pytest.mark.parametrize("key", ["header_allowed", "check_sequence", "mobile_regions"])
def test_a_stored_json_value_with_a_huge_integer_is_refused(key: str) -> None:
    with pytest.raises(SettingValueError, match=f"^{key}: "):
        parse_setting_text(key, "[" + "9" * 5000 + "]")
