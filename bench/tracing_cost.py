"""CPU cost of tracing one SMS, the OpenTelemetry SDK against the encoded path of
sms_gateway.telemetry, in one process, in process time (the machine is shared: wall time would
count others' work). No network: the exporters' encoding is counted, the post is not:

    .venv/bin/python -m bench.tracing_cost [--sms 20000]

* SDK: the receiver's two spans through `tracer.start_span`/`end` with a BatchSpanProcessor's
  work done inline (on_end into a list), then the OTLP exporter's `encode_spans` +
  `SerializeToString` of those spans: what the SDK path costs per SMS.
* encoded, one SMS at a time: `ReceiveSpans.record` (what `/sms/receive` pays).
* encoded, a batch of 1000: `ReceiveSpans.record_batch`, per item (with the uuids' text, which
  the answer needs anyway).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from services.receiver.store import StoredSms
from services.receiver.tracing import ReceiveSpans, record_receive
from sms_gateway.telemetry import SmsSpans


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _sdk(uuids: list[UUID]) -> tuple[float, float]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415

    collect = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(SimpleSpanProcessor(collect))
    tracer = provider.get_tracer("bench")
    invalid = trace.INVALID_SPAN_CONTEXT
    started = time.process_time()
    for uuid in uuids:
        record_receive(
            tracer,
            StoredSms(uuid, False, time.time_ns(), time.time_ns()),
            source="api",
            request_started_ns=time.time_ns(),
            http_span=invalid,
        )
    created = time.process_time() - started
    started = time.process_time()
    for index in range(0, len(collect.spans), 512):
        encode_spans(collect.spans[index : index + 512]).SerializeToString()
    encoded = time.process_time() - started
    return created / len(uuids), encoded / len(uuids)


def _pipe() -> SmsSpans:
    # Nothing listens on port 9 and the interval is long: only the encoding is measured.
    return SmsSpans("http://127.0.0.1:9/v1/traces", Resource.create({}), "bench", interval=3600)


def _encoded_single(uuids: list[UUID]) -> float:
    pipe = _pipe()
    spans = ReceiveSpans(pipe)
    started = time.process_time()
    for uuid in uuids:
        spans.record(
            StoredSms(uuid, False, time.time_ns(), time.time_ns()),
            source="api",
            route="/sms/receive",
            status=202,
            request_started_ns=time.time_ns(),
        )
    body = pipe.request_body(pipe.take())
    assert body
    return (time.process_time() - started) / len(uuids)


def _encoded_batch(uuids: list[UUID]) -> float:
    pipe = _pipe()
    spans = ReceiveSpans(pipe)
    started = time.process_time()
    for index in range(0, len(uuids), 1000):
        batch = uuids[index : index + 1000]
        spans.record_batch(
            batch,
            [str(uuid) for uuid in batch],
            repeated=False,
            source="api-batch",
            route="/sms/receive/batch",
            status=202,
            request_started_ns=time.time_ns(),
            insert_ns=(time.time_ns(), time.time_ns()),
        )
    pipe.request_body(pipe.take())
    return (time.process_time() - started) / len(uuids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=20_000)
    args = parser.parse_args()
    uuids = [UUID(int=uuid4().int) for _ in range(args.sms)]
    created, encoded = _sdk(uuids)
    single = _encoded_single(uuids)
    batch = _encoded_batch(uuids)
    print(f"{args.sms} SMS, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, per SMS (receiver's 2 spans):")
    print("| path | µs per SMS |\n|---|---:|")
    print(f"| SDK: start/end through a span processor | {created * 1e6:.1f} |")
    print(f"| SDK: OTLP encoding (exporter) | {encoded * 1e6:.1f} |")
    print(f"| SDK: total | {(created + encoded) * 1e6:.1f} |")
    print(f"| encoded, one SMS per request | {single * 1e6:.1f} |")
    print(f"| encoded, batch of 1000 (per item) | {batch * 1e6:.2f} |")
    print(f"\nSDK / encoded (one SMS): {(created + encoded) / single:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
