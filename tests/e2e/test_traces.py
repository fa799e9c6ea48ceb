"""SPEC §8 through the real processes: the receiver, validator and admin entry points export by
OTLP/HTTP to a collector stand-in that decodes every request with opentelemetry-proto. Each SMS
is one trace whose id is its uuid and one tree (every parent named is exported, one root: the
receive span); the validator's spans hang under the receive span, with a span per check run
carrying its result code as sms_monitor records it; probes and scrapes make no span at all."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from checks import CHECK_NAMES
from tests.conftest import FreshDatabase, Infra
from tests.e2e.test_gateway import (
    HASH_KEY,
    Service,
    start,
    stop_all,
    verification_sms,
    wait_ready,
)

pytestmark = pytest.mark.slow

PROBES = ("/health", "/ready", "/metrics")


class Sink:
    """An OTLP/HTTP trace collector stand-in: keeps every span, with its service's name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, Span]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest.FromString(body)
                received = [
                    (_service_name(resource.resource.attributes), span)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
                with sink.lock:
                    sink.spans += received
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def snapshot(self) -> list[tuple[str, Span]]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _service_name(attributes: Any) -> str:
    for attribute in attributes:
        if attribute.key == "service.name":
            return str(attribute.value.string_value)
    return ""


def _attributes(span: Span) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value") or "string_value")
    return values


@pytest.fixture
def sink() -> Iterator[Sink]:
    running = Sink()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def traced_gateway(
    database: FreshDatabase, infra: Infra, tmp_path: Path, sink: Sink
) -> Iterator[dict[str, Service]]:
    traced = {"SMSGW_OTLP_ENDPOINT": sink.endpoint}
    services = {
        # The receiver at its default process model (one per core).
        "receiver": start("receiver", "sms_receiver", database, infra, tmp_path, **traced),
        "validator": start(
            "validator",
            "sms_validator",
            database,
            infra,
            tmp_path,
            SMSGW_HASH_KEY=HASH_KEY,
            **traced,
        ),
        "admin": start(
            "admin",
            "sms_admin",
            database,
            infra,
            tmp_path,
            SMSGW_ADMIN_TOKENS="e2e:e2e-admin-token-0123456789abcdef",
            **traced,
        ),
    }
    try:
        deadline = time.monotonic() + 60
        for service in services.values():
            wait_ready(service, deadline)
        yield services
    finally:
        stop_all(services.values())


async def _monitor_rows(pool: asyncpg.Pool, uuids: list[str]) -> dict[str, asyncpg.Record]:
    """The sms_monitor rows of `uuids` once every one is final."""
    async with asyncio.timeout(60):
        while True:
            async with pool.acquire() as connection:
                rows = await connection.fetch(
                    "SELECT * FROM sms_monitor WHERE uuid = ANY($1::uuid[]) "
                    "AND overall_status <> 'pending'",
                    uuids,
                )
            if len(rows) == len(uuids):
                return {str(row["uuid"]): row for row in rows}
            await asyncio.sleep(0.2)


async def _traces(sink: Sink, uuids: list[str]) -> dict[str, list[tuple[str, Span]]]:
    """Each SMS's spans, once each has its receive and validate spans and nothing more arrives
    for a second (the services export about once a second)."""
    wanted = {UUID(uuid).bytes: uuid for uuid in uuids}
    async with asyncio.timeout(60):
        previous = -1
        while True:
            spans = sink.snapshot()
            by_sms: dict[str, list[tuple[str, Span]]] = {uuid: [] for uuid in uuids}
            for service, span in spans:
                if span.trace_id in wanted:
                    by_sms[wanted[span.trace_id]].append((service, span))
            complete = all(
                {"sms.receive", "sms.validate"} <= {span.name for _, span in found}
                for found in by_sms.values()
            )
            if complete and len(spans) == previous:
                return by_sms
            previous = len(spans)
            await asyncio.sleep(1.5)


async def test_every_sms_is_one_trace_tree_and_probes_are_not_traced(
    traced_gateway: dict[str, Service],
    sink: Sink,
    owner_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            for service in traced_gateway.values():
                for probe in PROBES:
                    assert (await client.get(f"{service.url}{probe}")).status_code == 200

        receiver = traced_gateway["receiver"].url
        uuids: list[str] = []
        for body in (
            verification_sms("447911123456"),  # valid: forwarded, out_sms and Redis spans
            verification_sms("447911123456"),  # the same sender again: fails duplicate
            verification_sms("447911123457", header="acme"),  # fails header
        ):
            response = await client.post(f"{receiver}/sms/receive", json=body)
            assert response.status_code == 202, response.text
            uuids.append(response.json()["uuid"])
        keyed = verification_sms("447911123458")
        first = await client.post(
            f"{receiver}/sms/receive", json=keyed, headers={"Idempotency-Key": "delivery-1"}
        )
        again = await client.post(
            f"{receiver}/sms/receive", json=keyed, headers={"Idempotency-Key": "delivery-1"}
        )
        assert first.json() == again.json()
        repeated = first.json()["uuid"]
        uuids.append(repeated)
        batch = await client.post(
            f"{receiver}/sms/receive/batch",
            json=[verification_sms(f"44791112346{i}") for i in range(3)],
        )
        assert batch.status_code == 202, batch.text
        uuids += batch.json()["uuids"]

    rows = await _monitor_rows(owner_pool, uuids)
    traces = await _traces(sink, uuids)

    for uuid in uuids:
        spans = [span for _, span in traces[uuid]]
        # One tree: every parent named is a span of this trace, and there is one root.
        ids = {span.span_id for span in spans}
        assert all(not span.parent_span_id or span.parent_span_id in ids for span in spans), uuid
        roots = [span for span in spans if not span.parent_span_id]
        assert [root.name for root in roots] == ["sms.receive"], uuid
        (root,) = roots
        # Trace id = uuid; the root's id is the one the validator derives from the uuid.
        assert root.trace_id == UUID(uuid).bytes
        assert root.span_id == UUID(uuid).bytes[8:]
        names = [span.name for span in spans]
        assert names.count("input_sms.insert") == names.count("sms.receive")
        (validate,) = (span for span in spans if span.name == "sms.validate")
        assert validate.parent_span_id == root.span_id
        assert _attributes(validate)["sms.overall_status"] == rows[uuid]["overall_status"]
        # A span per check run, with the result code sms_monitor records.
        runs = {
            _attributes(span)["sms.check"]: _attributes(span)["sms.check.result"]
            for span in spans
            if span.name.startswith("check.")
        }
        assert all(
            span.parent_span_id == validate.span_id
            for span in spans
            if span.name.startswith("check.")
        )
        for check in CHECK_NAMES:
            code = rows[uuid][f"{check}_check"]
            if code in (1, 2):  # run: passed or failed
                assert runs.get(check) == code, (uuid, check, runs)
            if check in runs:
                assert runs[check] == code, (uuid, check, runs)
        forwarded = rows[uuid]["overall_status"] == "valid"
        assert ("out_sms.insert" in names) == forwarded
        assert ("redis.write" in names) == forwarded

    # The idempotent repeat has a receive span of its own, under the first delivery's.
    receives = [span for _, span in traces[repeated] if span.name == "sms.receive"]
    assert len(receives) == 2
    (second,) = (span for span in receives if span.parent_span_id)
    assert second.parent_span_id == UUID(repeated).bytes[8:]
    assert _attributes(second)["sms.repeated_delivery"] is True

    assert {row["overall_status"] for row in rows.values()} >= {"valid", "invalid"}
    # No probe or scrape left a span, on any service.
    for service_name, span in sink.snapshot():
        attributes = _attributes(span)
        path = str(attributes.get("url.path", attributes.get("http.target", "")))
        assert path.split("?", maxsplit=1)[0] not in PROBES, (service_name, span.name, path)
        assert not any(probe in span.name for probe in PROBES), (service_name, span.name)
