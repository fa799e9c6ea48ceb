"""Every endpoint but /health, /ready, /metrics needs an operator's bearer token (SPEC §7, §10),
and no token ever reaches a log line."""

from __future__ import annotations

import logging
import secrets
from uuid import uuid4

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.admin.app import PUBLIC_PATHS
from sms_gateway.logging import JsonFormatter, TextFormatter
from tests.admin.conftest import Operators, audit_rows, stored_settings

EXAMPLE_PARAMETERS = {
    "{key}": "batch_size",
    "{sms_uuid}": str(uuid4()),
    "{sender_number}": "447700900123",
}


def api_endpoints(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every operation the app documents."""
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }


def protected_endpoints(app: FastAPI) -> list[tuple[str, str]]:
    endpoints = []
    for method, template in sorted(api_endpoints(app)):
        if template in PUBLIC_PATHS:
            continue
        path = template
        for parameter, example in EXAMPLE_PARAMETERS.items():
            path = path.replace(parameter, example)
        assert "{" not in path, f"add an example for {template}"
        endpoints.append((method, path))
    return endpoints


def test_the_api_is_what_spec_7_lists(admin_app: FastAPI) -> None:
    paths = api_endpoints(admin_app)
    assert {
        ("GET", "/settings"),
        ("GET", "/settings/{key}"),
        ("PUT", "/settings/{key}"),
        ("GET", "/settings/audit"),
        ("GET", "/sms/{sms_uuid}"),
        ("POST", "/sms/{sms_uuid}/requeue"),
        ("GET", "/blacklist"),
        ("DELETE", "/blacklist/{sender_number}"),
        ("GET", "/stats"),
    } <= paths


async def test_every_endpoint_refuses_a_missing_or_wrong_token(
    admin_app: FastAPI,
    admin: httpx.AsyncClient,
    operators: Operators,
    owner_pool: asyncpg.Pool,
) -> None:
    settings_before = await stored_settings(owner_pool)
    endpoints = protected_endpoints(admin_app)
    assert len(endpoints) >= 9
    near_miss = operators.tokens["operator"][:-1] + (
        "A" if operators.tokens["operator"][-1] != "A" else "B"
    )
    refusals = {
        "missing": {},
        "empty": {"Authorization": "Bearer "},
        "wrong": {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"},
        "near miss": {"Authorization": f"Bearer {near_miss}"},
        "other scheme": {"Authorization": f"Basic {operators.tokens['operator']}"},
        "bare token": {"Authorization": operators.tokens["operator"]},
    }
    for method, path in [*endpoints, ("GET", "/no/such/path")]:
        for case, headers in refusals.items():
            response = await admin.request(method, path, headers=headers, json={"value": 1})
            assert response.status_code == 401, (method, path, case, response.text)
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="sms-admin"')
    # A malformed body is not looked at before the token is.
    response = await admin.put("/settings/batch_size", content=b"{")
    assert response.status_code == 401
    assert await stored_settings(owner_pool) == settings_before
    assert await audit_rows(owner_pool) == []


async def test_operations_and_docs_need_no_token(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/health")).json() == {"status": "ok"}
    ready = await admin.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "background": True}
    metrics = await admin.get("/metrics")
    assert "sms_http_requests_total" in metrics.text
    assert (await admin.get("/docs")).status_code == 200
    spec = (await admin.get("/openapi.json")).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    put = spec["paths"]["/settings/{key}"]["put"]
    assert put["security"] == [{"HTTPBearer": []}]
    assert spec["components"]["schemas"]["SettingUpdate"]["examples"]


async def test_a_made_up_method_is_counted_as_other(admin: httpx.AsyncClient) -> None:
    """Any token is a method to HTTP: the metrics' labels must not grow with what clients
    send."""
    for method in ("BREW", "X-" + "A" * 40):
        response = await admin.request(method, "/health")
        assert response.status_code == 405
    metrics = (await admin.get("/metrics")).text
    assert 'method="BREW"' not in metrics
    assert 'method="X-' not in metrics
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("sms_http_requests_total{") and 'method="OTHER"' in line
    ]
    assert len(counted) == 1
    assert 'status="405"' in counted[0]
    assert counted[0].endswith(" 2.0")


async def test_auth_failures_are_counted(admin: httpx.AsyncClient, operators: Operators) -> None:
    def failures(text: str, reason: str) -> float:
        for line in text.splitlines():
            if line.startswith(f'sms_admin_auth_failures_total{{reason="{reason}"}}'):
                return float(line.split()[-1])
        return 0.0

    before = (await admin.get("/metrics")).text
    await admin.get("/stats")
    await admin.get("/stats", headers={"Authorization": "Bearer nope"})
    assert (await admin.get("/stats", headers=operators.header())).status_code == 200
    after = (await admin.get("/metrics")).text
    assert failures(after, "missing") == failures(before, "missing") + 1
    assert failures(after, "unknown") == failures(before, "unknown") + 1


async def test_no_token_ever_reaches_a_log_line(
    admin: httpx.AsyncClient, operators: Operators, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = secrets.token_urlsafe(24)
    near_miss = operators.tokens["rotated"][:-2]
    with caplog.at_level(logging.DEBUG):
        await admin.get("/settings")
        await admin.get("/settings", headers={"Authorization": f"Bearer {wrong}"})
        await admin.get("/stats", headers={"Authorization": f"Bearer {near_miss}"})
        await admin.get("/stats", headers={"Authorization": f"Basic {wrong}"})
        for value, name in enumerate(operators.tokens, start=42):
            response = await admin.put(
                "/settings/batch_size", json={"value": value}, headers=operators.header(name)
            )
            assert response.status_code == 200
        await admin.put("/settings/batch_size", json={"value": "bad"}, headers=operators.header())

    refusals = [r for r in caplog.records if r.getMessage().startswith("refused an admin request")]
    assert [getattr(r, "reason", None) for r in refusals] == [
        "missing",
        "unknown",
        "unknown",
        "malformed",
    ]
    changes = [r for r in caplog.records if r.getMessage() == "setting changed"]
    assert [getattr(r, "changed_by", None) for r in changes] == ["operator", "rotated"]

    formatters = (JsonFormatter("sms-admin"), TextFormatter("sms-admin"))
    lines = [f.format(record) for record in caplog.records for f in formatters]
    lines += [repr(vars(record)) for record in caplog.records]
    for token in (*operators.tokens.values(), wrong, near_miss):
        assert not [line for line in lines if token in line]
