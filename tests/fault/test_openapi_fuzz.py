"""Both OpenAPI documents, fuzzed (SPEC §4.1, §7): schemathesis generates requests from the
receiver's and the admin's own /openapi.json, valid ones and ones that break the schema, and
sends them to the app in-process (through its lifespan, on a fresh database, the admin with a
token). No answer may be a 5xx, and every answer must be one the document describes: its status,
content type, headers and body schema (one problem details body for every refusal).

Bounded: a few hundred requests per document, a few seconds each on this machine.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fault.support import LoopBridge, in_thread
from tests.receiver.conftest import ClientFactory

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EXAMPLES = 150
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _httpx_arguments(case: Case[Any]) -> dict[str, Any]:
    """The request of `case` for httpx (schemathesis serialises it for `requests`)."""
    sent = case.as_transport_kwargs(base_url="")
    arguments: dict[str, Any] = {
        "method": sent["method"],
        "url": sent["url"],
        "headers": sent.get("headers") or {},
        "params": sent.get("params"),
    }
    if "json" in sent:
        arguments["json"] = sent["json"]
    data = sent.get("data")
    if isinstance(data, bytes | str):
        arguments["content"] = data
    elif data is not None:
        arguments["data"] = data
    return arguments


def fuzz(bridge: LoopBridge, client: httpx.AsyncClient, document: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(document)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=schema.as_strategy(mode))
        def request(case: Case[Any]) -> None:
            arguments = _httpx_arguments(case)
            headers = {**client.headers, **arguments.pop("headers")}
            response = bridge.request(client, headers=headers, **arguments)
            case.validate_response(response, checks=CHECKS, headers=headers)

        request()


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
async def test_the_receivers_openapi_document(receiver_client: ClientFactory, signed: bool) -> None:
    """Signed: with the adapters' keys configured, so that the signature checks see the
    generated headers (mostly refused, 401)."""
    keys = {"smsgate_signing_key": "k" * 32, "twilio_auth_token": "t" * 32} if signed else {}
    async with receiver_client(**keys) as client:
        document = (await client.get("/openapi.json")).json()
        await in_thread(lambda bridge: fuzz(bridge, client, document))


async def test_the_admins_openapi_document(authed: httpx.AsyncClient) -> None:
    document = (await authed.get("/openapi.json")).json()
    await in_thread(lambda bridge: fuzz(bridge, authed, document))
