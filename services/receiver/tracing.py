"""The receiver's part of an SMS's trace (SPEC §8): once the insert has returned the
uuid, a span "sms.receive" in the SMS's own trace (trace id = uuid) from the start of the
request, with a child "input_sms.insert", linked to the HTTP server span of the request."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Tracer

from services.receiver.store import StoredSms
from sms_gateway.telemetry import sms_trace_context


def record_receive(
    tracer: Tracer,
    stored: StoredSms,
    *,
    source: str,
    request_started_ns: int,
    http_span: SpanContext,
) -> None:
    links = [Link(http_span)] if http_span.is_valid else []
    receive = tracer.start_span(
        "sms.receive",
        context=sms_trace_context(stored.uuid),
        start_time=request_started_ns,
        links=links,
        attributes={
            "sms.uuid": str(stored.uuid),
            "sms.source": source,
            "sms.repeated_delivery": stored.repeated,
        },
    )
    insert = tracer.start_span(
        "input_sms.insert",
        context=trace.set_span_in_context(receive),
        start_time=stored.insert_started_ns,
        attributes={"db.system": "postgresql", "db.operation": "INSERT"},
    )
    insert.end(end_time=stored.insert_ended_ns)
    receive.end()
