"""The receiver's SMS spans as encoded for OTLP (services/receiver/tracing.py): one tree per SMS
whose root is the receive span with the id the validator derives from the uuid, the same spans
from a batch's shortcut as from one SMS at a time, and a repeat's own span under the first."""

from __future__ import annotations

import random
from uuid import UUID

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource

from services.receiver.store import StoredSms
from services.receiver.tracing import ReceiveSpans
from sms_gateway import telemetry
from sms_gateway.telemetry import SmsSpans, receive_span_id


@pytest.fixture
def pipe() -> SmsSpans:
    # Nothing listens on port 9 and the interval is long: spans stay queued for the test.
    return SmsSpans("http://127.0.0.1:9/v1/traces", Resource.create({}), "test", interval=3600)


def exported(pipe: SmsSpans) -> list[Span]:
    queued = pipe.take()
    request = ExportTraceServiceRequest.FromString(pipe.request_body(queued))
    return list(request.resource_spans[0].scope_spans[0].spans)


def uuids(count: int) -> list[UUID]:
    draw = random.Random(13)
    # Shaped like the database's uuidv7: version 7, variant 10.
    return [
        UUID(int=(draw.getrandbits(128) & ~(0xF << 76) & ~(0x3 << 62)) | (0x7 << 76) | (0x2 << 62))
        for _ in range(count)
    ]


def check_tree(spans: list[Span], uuid: UUID, *, source: str) -> Span:
    receive, insert = sorted(
        (s for s in spans if s.trace_id == uuid.bytes), key=lambda s: s.name, reverse=True
    )
    assert (receive.name, insert.name) == ("sms.receive", "input_sms.insert")
    assert receive.span_id == receive_span_id(uuid)
    assert receive.parent_span_id == b""
    assert insert.parent_span_id == receive.span_id
    assert insert.span_id != receive.span_id
    attributes = {a.key: a.value for a in receive.attributes}
    assert attributes["sms.uuid"].string_value == str(uuid)
    assert attributes["sms.source"].string_value == source
    assert receive.kind == Span.SPAN_KIND_SERVER
    return receive


def test_one_sms_makes_a_receive_span_with_the_derived_id_and_its_insert(pipe: SmsSpans) -> None:
    (uuid,) = uuids(1)
    ReceiveSpans(pipe).record(
        StoredSms(uuid, False, 2_000, 3_000),
        source="api",
        route="/sms/receive",
        status=202,
        request_started_ns=1_000,
    )
    spans = exported(pipe)
    assert len(spans) == 2
    receive = check_tree(spans, uuid, source="api")
    assert receive.start_time_unix_nano == 1_000
    (insert,) = (s for s in spans if s.name == "input_sms.insert")
    assert (insert.start_time_unix_nano, insert.end_time_unix_nano) == (2_000, 3_000)


def test_a_batch_makes_the_same_tree_for_every_sms(pipe: SmsSpans) -> None:
    batch = uuids(50)
    ReceiveSpans(pipe).record_batch(
        batch,
        [str(uuid) for uuid in batch],
        repeated=False,
        source="api-batch",
        route="/sms/receive/batch",
        status=202,
        request_started_ns=1_000,
        insert_ns=(2_000, 3_000),
    )
    spans = exported(pipe)
    assert len(spans) == 100
    for uuid in batch:
        check_tree(spans, uuid, source="api-batch")


def test_a_repeat_gets_its_own_span_under_the_first_delivery(pipe: SmsSpans) -> None:
    (uuid,) = uuids(1)
    ReceiveSpans(pipe).record(
        StoredSms(uuid, True, 2_000, 3_000),
        source="api",
        route="/sms/receive",
        status=202,
        request_started_ns=1_000,
    )
    receive, insert = exported(pipe)
    assert receive.trace_id == uuid.bytes
    assert receive.parent_span_id == receive_span_id(uuid)
    assert receive.span_id != receive_span_id(uuid)
    assert insert.parent_span_id == receive.span_id


def test_sampling_leaves_out_the_same_sms_as_the_validator(pipe: SmsSpans) -> None:
    batch = uuids(400)
    try:
        telemetry.set_sample_ratio(0.5)
        ReceiveSpans(pipe).record_batch(
            batch,
            [str(uuid) for uuid in batch],
            repeated=False,
            source="api-batch",
            route="/sms/receive/batch",
            status=202,
            request_started_ns=1_000,
            insert_ns=(2_000, 3_000),
        )
        kept = {uuid.bytes for uuid in batch if telemetry.is_sampled(uuid)}
    finally:
        telemetry.set_sample_ratio(1.0)
    spans = exported(pipe)
    assert 100 < len(kept) < 300
    assert {span.trace_id for span in spans} == kept
