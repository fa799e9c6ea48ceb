"""The SMS span encoding (sms_gateway.telemetry): what it writes is what opentelemetry-proto
reads, ids are derived from the uuid as documented, sampling agrees across services, and the
SDK's sampler never keeps a probe."""

from __future__ import annotations

import random
from uuid import UUID

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import Decision

from sms_gateway import telemetry
from sms_gateway.telemetry import (
    ERROR_STATUS,
    SPAN_KIND_SERVER,
    GatewaySampler,
    SmsSpans,
    SpanPacker,
    SpanShape,
    encode_attributes,
    encode_span,
    insert_span_id,
    receive_span_id,
    span_times,
    string_attribute_prefix,
)

UUID_7 = UUID("0192f3a4-5b6c-7d8e-9f01-23456789abcd")


def decode(pipe: SmsSpans, spans: list[bytes]) -> ExportTraceServiceRequest:
    request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(
        pipe.request_body(spans)
    )
    return request


@pytest.fixture
def pipe() -> SmsSpans:
    # Nothing listens on port 9: the thread's posts fail quietly; only request_body is used.
    return SmsSpans(
        "http://127.0.0.1:9/v1/traces", Resource.create({"service.name": "t"}), "t", interval=60
    )


def test_encoded_spans_read_back_with_every_field(pipe: SmsSpans) -> None:
    shape = SpanShape(
        "sms.receive",
        kind=SPAN_KIND_SERVER,
        attributes={"sms.source": "api", "flag": True, "count": 3, "ratio": 0.5},
    )
    uuid_attribute = string_attribute_prefix("sms.uuid", 36) + str(UUID_7).encode()
    first = shape.encode(
        UUID_7.bytes,
        receive_span_id(UUID_7),
        None,
        start_ns=1_000,
        end_ns=2_000,
        attributes=uuid_attribute,
    )
    child = encode_span(
        UUID_7.bytes,
        insert_span_id(UUID_7),
        receive_span_id(UUID_7),
        SpanShape("input_sms.insert").tail
        + span_times(1_500, 1_800)
        + encode_attributes({"ünïcode": "✓"})
        + ERROR_STATUS,
    )
    request = decode(pipe, [first, child])
    (resource_spans,) = request.resource_spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "t"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "t"
    receive, insert = scope_spans.spans
    assert receive.trace_id == insert.trace_id == UUID_7.bytes
    assert receive.span_id == UUID_7.bytes[8:]
    assert receive.parent_span_id == b""
    assert (receive.name, receive.kind) == ("sms.receive", Span.SPAN_KIND_SERVER)
    assert (receive.start_time_unix_nano, receive.end_time_unix_nano) == (1_000, 2_000)
    values = {a.key: a.value for a in receive.attributes}
    assert values["sms.source"].string_value == "api"
    assert values["flag"].bool_value is True
    assert values["count"].int_value == 3
    assert values["ratio"].double_value == 0.5
    assert values["sms.uuid"].string_value == str(UUID_7)
    assert insert.parent_span_id == receive.span_id
    assert insert.span_id != receive.span_id
    assert insert.attributes[0].value.string_value == "✓"
    assert insert.status.code == Status.STATUS_CODE_ERROR
    assert receive.status.code == Status.STATUS_CODE_UNSET


@pytest.mark.parametrize("attributes", [{}, {"sms.check": "mobile", "sms.check.result": 2}])
def test_a_packed_span_is_the_span_encode_span_makes(
    pipe: SmsSpans, attributes: dict[str, str | int]
) -> None:
    tail = SpanShape("check.mobile", attributes=attributes).tail
    span_id, parent = bytes(range(1, 9)), bytes(range(11, 19))
    start, end = 1_700_000_000_123_456_789, 1_700_000_000_123_999_999
    packed = SpanPacker(tail).pack(UUID_7.bytes, span_id, parent, start, end)
    assert packed == encode_span(UUID_7.bytes, span_id, parent, tail + span_times(start, end))
    (span,) = decode(pipe, [packed]).resource_spans[0].scope_spans[0].spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (UUID_7.bytes, span_id, parent)
    assert (span.name, span.start_time_unix_nano, span.end_time_unix_nano) == (
        "check.mobile",
        start,
        end,
    )
    assert {a.key: a.value.int_value or a.value.string_value for a in span.attributes} == (
        attributes
    )


def test_a_packed_span_ends_its_last_attribute_with_the_suffix(pipe: SmsSpans) -> None:
    """The validator's "sms.validate": constant attributes, then the uuid's text per SMS."""
    tail = SpanShape("sms.validate", attributes={"sms.overall_status": "valid"}).tail
    packer = SpanPacker(tail + string_attribute_prefix("sms.uuid", 36), 36)
    spans = [
        packer.pack(u.bytes, b"\x01" * 8, receive_span_id(u), 5, 9, suffix=str(u).encode())
        for u in (UUID_7, UUID("0192f3a4-5b6c-7d8e-bfff-ffffffffffff"))
    ]
    decoded = decode(pipe, spans).resource_spans[0].scope_spans[0].spans
    for span, text in zip(
        decoded,
        ("0192f3a4-5b6c-7d8e-9f01-23456789abcd", "0192f3a4-5b6c-7d8e-bfff-ffffffffffff"),
        strict=True,
    ):
        values = {a.key: a.value.string_value for a in span.attributes}
        assert values == {"sms.overall_status": "valid", "sms.uuid": text}
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (5, 9)
        assert span.parent_span_id == receive_span_id(UUID(text))


def test_an_insert_span_id_is_never_a_receive_span_id() -> None:
    # A receive span id keeps the uuid's variant bits (10); an insert span id has 11 there.
    for text in ("0192f3a4-5b6c-7d8e-9f01-23456789abcd", "0192f3a4-5b6c-7d8e-bfff-ffffffffffff"):
        uuid = UUID(text)
        assert receive_span_id(uuid)[0] >> 6 == 0b10
        assert insert_span_id(uuid)[0] >> 6 == 0b11


def test_sampling_is_decided_by_the_uuid_alone() -> None:
    draw = random.Random(7)
    uuids = [UUID(int=draw.getrandbits(128)) for _ in range(2000)]
    try:
        telemetry.set_sample_ratio(0.25)
        kept = [uuid for uuid in uuids if telemetry.is_sampled(uuid)]
        assert 300 < len(kept) < 700
        assert kept == [uuid for uuid in uuids if telemetry.is_sampled(uuid)]
        telemetry.set_sample_ratio(0.0)
        assert not any(telemetry.is_sampled(uuid) for uuid in uuids)
    finally:
        telemetry.set_sample_ratio(1.0)
    assert all(telemetry.is_sampled(uuid) for uuid in uuids)


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/metrics?x=1"])
def test_the_sdk_sampler_drops_probes_and_scrapes(path: str) -> None:
    result = GatewaySampler().should_sample(None, 1, "GET", attributes={"url.path": path})
    assert result.decision is Decision.DROP


def test_the_sdk_sampler_keeps_other_requests() -> None:
    result = GatewaySampler().should_sample(None, 1, "GET", attributes={"url.path": "/settings"})
    assert result.decision is Decision.RECORD_AND_SAMPLE
