"""Tracing: one trace per SMS, whose trace id is the SMS uuid (SPEC §8).

Both are 128 bits, so an operator who has a uuid finds the trace in Jaeger directly
(`uuid.hex` is the trace id). `sms_trace_context(uuid)` is the parent context under which any
service starts spans that belong to that SMS; spans about many SMS (a batch) link to them.
"""

from __future__ import annotations

import random
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags


def setup_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider | None:
    """Export spans by OTLP/HTTP to `otlp_endpoint`.

    Without an endpoint no SDK provider is installed: the API's no-op tracer then makes spans
    that cost next to nothing, rather than recording spans that nobody will ever read.
    """
    if not otlp_endpoint:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def trace_id_of(sms_uuid: UUID) -> int:
    return sms_uuid.int


def sms_span_context(sms_uuid: UUID) -> SpanContext:
    """A remote parent span context in the SMS's own trace."""
    return SpanContext(
        trace_id=trace_id_of(sms_uuid),
        span_id=random.getrandbits(64) or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def sms_trace_context(sms_uuid: UUID) -> Context:
    """The context under which a span joins the trace of one SMS."""
    return trace.set_span_in_context(NonRecordingSpan(sms_span_context(sms_uuid)))
