"""Operations (SPEC §4.4), the OpenAPI document, metrics and the SMS's trace (SPEC §8)."""

from __future__ import annotations

from uuid import UUID

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from services.receiver.store import StoredSms
from services.receiver.tracing import record_receive
from tests.receiver.conftest import SMS


async def test_health_ready_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json()["checks"] == {"database": True, "background": True}
    assert (await client.post("/sms/receive", json=SMS)).status_code == 202
    metrics = (await client.get("/metrics")).text
    assert 'sms_receiver_stored_total{source="api"}' in metrics
    assert "sms_receiver_flush_rows_bucket" in metrics
    assert 'route="/sms/receive"' in metrics


async def test_openapi_documents_every_endpoint_with_examples(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for path in ("/sms/receive", "/sms/receive/batch", "/sms/receive/smsgate"):
        operation = paths[path]["post"]
        content = operation["requestBody"]["content"]["application/json"]
        assert content["examples"], path
        assert {"202", "413", "422", "503"} <= set(operation["responses"]), path
    single = paths["/sms/receive"]["post"]
    assert [p["name"] for p in single["parameters"]] == ["Idempotency-Key"]
    schema = single["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"sender_number", "sms_message", "received_timestamp"}
    twilio = paths["/sms/receive/twilio"]["post"]
    assert "application/x-www-form-urlencoded" in twilio["requestBody"]["content"]
    assert "application/xml" in twilio["responses"]["200"]["content"]
    assert {"401", "422", "503"} <= set(twilio["responses"])


def test_the_receive_span_is_in_the_sms_trace_with_its_insert_and_a_link() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    uuid = UUID("0192f3a4-5b6c-7d8e-9f01-23456789abcd")
    http_span = SpanContext(
        trace_id=0xABC, span_id=0xDEF, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    record_receive(
        provider.get_tracer("test"),
        StoredSms(uuid, False, 2_000, 3_000),
        source="api",
        request_started_ns=1_000,
        http_span=http_span,
    )
    insert, receive = exporter.get_finished_spans()
    assert (receive.name, insert.name) == ("sms.receive", "input_sms.insert")
    assert receive.context.trace_id == insert.context.trace_id == uuid.int
    assert insert.parent is not None
    assert insert.parent.span_id == receive.context.span_id
    assert receive.start_time == 1_000
    assert (insert.start_time, insert.end_time) == (2_000, 3_000)
    assert [link.context.span_id for link in receive.links] == [0xDEF]
    assert receive.attributes is not None
    assert receive.attributes["sms.source"] == "api"
