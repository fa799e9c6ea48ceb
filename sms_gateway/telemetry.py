"""Tracing: one trace per SMS, whose trace id is the SMS uuid, and one tree (SPEC §8).

Both are 128 bits, so an operator who has a uuid finds the trace in Jaeger directly
(`uuid.hex` is the trace id). The receiver's "sms.receive" span has a span id derived from the
uuid too (`receive_span_id`), so the validator, which knows only the uuid, makes its
"sms.validate" span that span's child without any propagation: the trace is one tree.

Two paths leave by OTLP/HTTP to the same collector:

* **SMS spans** (`SmsSpans`): made for every SMS, so they skip the SDK's span objects. Each span
  is encoded to OTLP protobuf bytes the moment it is recorded (a few byte joins: the resource,
  scope and every constant attribute are encoded once) and queued; a daemon thread posts the
  queue as one `ExportTraceServiceRequest` about once a second. The SDK's start/end and its
  exporter's encoding cost ~100 µs per SMS (two spans); this path costs a few µs.
* **Everything else** (FastAPI's HTTP server spans on the admin API, any instrumentation):
  the SDK's `TracerProvider` with a `BatchSpanProcessor`, behind `GatewaySampler`, which drops
  the spans of health, readiness and scrape requests (and so their children).

Sampling: `trace_sample_ratio` (default 1: every SMS) keeps the SMS whose uuid falls under the
ratio, decided from the uuid's last 32 (random) bits, so receiver and validator keep the same SMS.

The queue holds `MAX_QUEUED_SPANS` spans: when the collector is away longer than that lasts at
the current rate, later spans are dropped (and counted in a log line), never the service slowed.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import logging
import os
import random
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Final
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes

logger = logging.getLogger(__name__)

# Requests that are never traced on any service (SPEC §8): probes and scrapes.
UNTRACED_PATHS: Final = frozenset({"/health", "/ready", "/metrics"})
SAMPLE_RATIO_VARIABLE: Final = "SMSGW_TRACE_SAMPLE_RATIO"
MAX_QUEUED_SPANS: Final = 200_000
EXPORT_INTERVAL_SECONDS: Final = 1.0
MAX_SPANS_PER_EXPORT: Final = 20_000
EXPORT_TIMEOUT_SECONDS: Final = 10.0
_SPAN_ID_MASK: Final = (1 << 64) - 1
_ONE: Final = (1).to_bytes(8, "big")
# The last 32 bits of the database's uuidv7 are random (above them: the variant and a sequence,
# db/init/0001): the sampling decision is read there.
_RANDOM_BITS: Final = 32


# ---------------------------------------------------------------------------- ids and sampling


def trace_id_of(sms_uuid: UUID) -> int:
    return sms_uuid.int


def receive_span_id(sms_uuid: UUID) -> bytes:
    """The span id of the receiver's "sms.receive" span of this SMS (its first delivery): the
    uuid's low 64 bits (a sequence and random bits in the database's uuidv7; the variant bits
    make them never 0)."""
    return sms_uuid.bytes[8:] if sms_uuid.int & _SPAN_ID_MASK else _ONE


def insert_span_id(sms_uuid: UUID) -> bytes:
    """The span id of that span's "input_sms.insert" child: the same bits with the variant's
    second bit flipped, so it can never equal any SMS's receive span id."""
    low = sms_uuid.bytes[8:]
    return bytes((low[0] ^ 0x40,)) + low[1:]


class _Sampling:
    """The process's share of SMS traced (set by `setup_tracing`)."""

    bound: int = 1 << _RANDOM_BITS


_sampling = _Sampling()


def set_sample_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"trace_sample_ratio must be between 0 and 1; got {ratio}")
    _sampling.bound = round(ratio * (1 << _RANDOM_BITS))


def sampling_all() -> bool:
    """Every SMS is traced (the default): no per-SMS decision to make."""
    return _sampling.bound >= 1 << _RANDOM_BITS


def is_sampled(sms_uuid: UUID) -> bool:
    """Whether this SMS is traced: the same answer in every service for the same uuid."""
    return (sms_uuid.int & ((1 << _RANDOM_BITS) - 1)) < _sampling.bound


def sms_span_context(sms_uuid: UUID) -> SpanContext:
    """The receiver's "sms.receive" span of this SMS, as a remote parent."""
    flags = TraceFlags.SAMPLED if is_sampled(sms_uuid) else TraceFlags.DEFAULT
    return SpanContext(
        trace_id=trace_id_of(sms_uuid),
        span_id=int.from_bytes(receive_span_id(sms_uuid), "big"),
        is_remote=True,
        trace_flags=TraceFlags(flags),
    )


def sms_trace_context(sms_uuid: UUID) -> Context:
    """The context under which an SDK span becomes a child of the SMS's receive span."""
    return trace.set_span_in_context(NonRecordingSpan(sms_span_context(sms_uuid)))


class GatewaySampler(Sampler):
    """The SDK's sampler: never a probe or a scrape, else the parent's decision (a root: kept).

    FastAPI's server span carries `url.path` (older instrumentations `http.target`) when it
    starts; its children follow it, so a dropped probe leaves no span at all.
    """

    def should_sample(  # noqa: PLR0917 (the SDK's signature)
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            keep = parent.trace_flags.sampled
        else:
            path = None
            if attributes:
                path = attributes.get("url.path", attributes.get("http.target"))
            keep = not (isinstance(path, str) and path.split("?", 1)[0] in UNTRACED_PATHS)
        decision = Decision.RECORD_AND_SAMPLE if keep else Decision.DROP
        return SamplingResult(decision, attributes if keep else None, parent.trace_state)

    def get_description(self) -> str:
        return "GatewaySampler"


# ---------------------------------------------------------------------------- OTLP encoding
# Field numbers from opentelemetry-proto (trace/v1/trace.proto, common/v1/common.proto).

SPAN_KIND_INTERNAL: Final = 1
SPAN_KIND_SERVER: Final = 2
SPAN_KIND_CLIENT: Final = 3
STATUS_ERROR: Final = 2

AttributeValue = str | bool | int | float


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(tag << 3 | 2) + _varint(len(payload)) + payload


def _any_value(value: AttributeValue) -> bytes:
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    return _field(1, value.encode("utf-8"))


def encode_attributes(attributes: Mapping[str, AttributeValue]) -> bytes:
    """Span attributes (field 9 of Span), encoded once for constant ones."""
    return b"".join(
        _field(9, _field(1, key.encode("utf-8")) + _field(2, _any_value(value)))
        for key, value in attributes.items()
    )


def string_attribute(key: str, value: str) -> bytes:
    """One string attribute, the common per-SMS case, without the generic dispatch."""
    encoded = value.encode("utf-8")
    any_value = b"\x0a" + _varint(len(encoded)) + encoded
    return _field(9, _field(1, key.encode("utf-8")) + _field(2, any_value))


_PACK_TIME: Final = struct.Struct("<Q").pack
ERROR_STATUS: Final = _field(15, b"\x18" + _varint(STATUS_ERROR))


def string_attribute_prefix(key: str, length: int) -> bytes:
    """The encoding of a string attribute up to its value, for values of a fixed UTF-8 length
    (a uuid's 36 characters): prefix + value is the attribute."""
    any_value_head = b"\x0a" + _varint(length)
    value_head = b"\x12" + _varint(len(any_value_head) + length) + any_value_head
    key_field = _field(1, key.encode("utf-8"))
    return b"\x4a" + _varint(len(key_field) + len(value_head) + length) + key_field + value_head


def span_times(start_ns: int, end_ns: int) -> bytes:
    return b"\x39" + _PACK_TIME(start_ns) + b"\x41" + _PACK_TIME(end_ns)


def span_id_bytes(span_id: int) -> bytes:
    return span_id.to_bytes(8, "big")


def random_span_id() -> bytes:
    return (random.getrandbits(64) or 1).to_bytes(8, "big")


class SpanShape:
    """What every span of one name has in common, encoded once: name, kind, constant
    attributes. `encode` adds what differs per span; `tail` + `span_times` + attributes may be
    joined once for many spans that share them (a batch)."""

    __slots__ = ("tail",)

    def __init__(
        self,
        name: str,
        *,
        kind: int = SPAN_KIND_INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        self.tail = (
            _field(5, name.encode("utf-8"))
            + b"\x30"
            + _varint(kind)
            + encode_attributes(attributes or {})
        )

    def encode(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_span_id: bytes | None,
        *,
        start_ns: int,
        end_ns: int,
        attributes: bytes = b"",
        error: bool = False,
    ) -> bytes:
        """One span (trace_id: 16 bytes, e.g. `uuid.bytes`; span ids: 8 bytes)."""
        return encode_span(
            trace_id,
            span_id,
            parent_span_id,
            self.tail
            + span_times(start_ns, end_ns)
            + attributes
            + (ERROR_STATUS if error else b""),
        )


def span_head(length: int) -> bytes:
    """The start of a span of `length` bytes (without this head) up to its trace id: for spans
    encoded many at a time whose length is known in advance."""
    return b"\x12" + _varint(length) + b"\x0a\x10"


def encode_span(
    trace_id: bytes, span_id: bytes, parent_span_id: bytes | None, rest: bytes
) -> bytes:
    """A Span message as a ScopeSpans field: ids, then `rest` (name, kind, times, attributes,
    status, already encoded)."""
    if parent_span_id is None:
        body = b"".join((b"\x0a\x10", trace_id, b"\x12\x08", span_id, rest))
    else:
        body = b"".join(
            (b"\x0a\x10", trace_id, b"\x12\x08", span_id, b"\x22\x08", parent_span_id, rest)
        )
    return b"\x12" + _varint(len(body)) + body


class SpanPacker:
    """Spans of one shape with a parent, each encoded by a single `struct.pack`: the span that
    `encode_span` makes of `tail + suffix + span_times(start, end)`, for many spans whose `tail`
    (name, kind, constant attributes) is the same and whose `suffix` has one fixed length
    (`tail` may end with `string_attribute_prefix`, and `suffix` be that attribute's value).
    With every part of fixed length, so is the span: its head is encoded once. For the spans
    made per SMS by the thousand (a check run each), where joining and measuring each one
    costs several times more.
    """

    __slots__ = ("_pack", "_prefix", "_tail")

    def __init__(self, tail: bytes, suffix_length: int = 0) -> None:
        # ids (2 + 16, 2 + 8, 2 + 8), tail, suffix, the two times (1 + 8 each)
        body = 38 + len(tail) + suffix_length + 18
        self._prefix = b"\x12" + _varint(body) + b"\x0a\x10"
        self._tail = tail
        layout = f"<{len(self._prefix)}s16s2s8s2s8s{len(tail)}s{suffix_length}sBQBQ"
        self._pack = struct.Struct(layout).pack

    def pack(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_span_id: bytes,
        start_ns: int,
        end_ns: int,
        *,
        suffix: bytes = b"",
    ) -> bytes:
        """One span; `suffix` of the length given at construction (none by default)."""
        return self._pack(
            self._prefix,
            trace_id,
            b"\x12\x08",
            span_id,
            b"\x22\x08",
            parent_span_id,
            self._tail,
            suffix,
            0x39,
            start_ns,
            0x41,
            end_ns,
        )


# ---------------------------------------------------------------------------- the SMS span pipe


class SmsSpans:
    """Encoded spans of one service, queued for a daemon thread that posts them by OTLP/HTTP.

    `add` is called from the event loop with one or more encoded spans joined (a request's, a
    batch's) and only appends to a deque; the thread takes up to `MAX_SPANS_PER_EXPORT` spans at
    a time. A failed post is retried at the next interval with the spans kept, as long as the
    queue has room.
    """

    def __init__(
        self,
        endpoint: str,
        resource: Resource,
        scope_name: str,
        *,
        interval: float = EXPORT_INTERVAL_SECONDS,
        max_queued: int = MAX_QUEUED_SPANS,
    ) -> None:
        self._url = urllib.parse.urlsplit(endpoint)
        self._interval = interval
        self._max_queued = max_queued
        resource_proto = ResourceProto()
        for key, value in resource.attributes.items():
            attribute = resource_proto.attributes.add(key=key)
            if isinstance(value, str):
                attribute.value.string_value = value
            elif isinstance(value, bool):
                attribute.value.bool_value = value
            elif isinstance(value, int):
                attribute.value.int_value = value
            else:
                attribute.value.string_value = str(value)
        self._resource = _field(1, resource_proto.SerializeToString())
        self._scope = _field(1, InstrumentationScope(name=scope_name).SerializeToString())
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: deque[tuple[bytes, int]] = deque()  # (spans joined, how many)
        self._queued = 0
        self._dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._connection: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="otlp-sms-spans", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Spans waiting to be sent."""
        return self._queued

    def add(self, spans: bytes, count: int = 1) -> None:
        """Queue `count` encoded spans, joined in `spans` (dropped, and counted, when full)."""
        with self._lock:
            if self._queued + count > self._max_queued:
                self._dropped += count
                return
            self._queue.append((spans, count))
            self._queued += count

    def take(self) -> list[bytes]:
        """Everything queued, taken out of the queue (for tests and tools)."""
        with self._lock:
            taken = [spans for spans, _ in self._queue]
            self._queue.clear()
            self._queued = 0
        return taken

    def request_body(self, spans: Sequence[bytes]) -> bytes:
        """An ExportTraceServiceRequest holding `spans` (encoded by `encode_span`)."""
        return b"".join(self.request_parts(spans))

    def request_parts(self, spans: Sequence[bytes]) -> list[bytes]:
        """`request_body` as the pieces that make it, the spans not copied: an export of
        20,000 spans is 4 MB, and joining it (then wrapping it twice) cost as much as
        encoding the spans."""
        spans_length = sum(map(len, spans))
        scope_spans_length = len(self._scope) + spans_length
        scope_spans_head = b"\x12" + _varint(scope_spans_length)
        resource_spans_length = len(self._resource) + len(scope_spans_head) + scope_spans_length
        head = b"\x0a" + _varint(resource_spans_length) + self._resource + scope_spans_head
        return [head + self._scope, *spans]

    def flush(self, timeout: float = EXPORT_TIMEOUT_SECONDS) -> bool:
        """Post everything queued now (from any thread but the exporter's); True when sent."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        return not self._queue

    def shutdown(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self._interval
        while not self._stopping:
            self._wake.wait(backoff)
            self._wake.clear()
            if self._dropped:
                logger.warning(
                    "trace spans dropped: the exporter's queue was full",
                    extra={"spans": self._dropped, "max_queued": self._max_queued},
                )
                self._dropped = 0
            backoff = self._interval
            while self._queue:
                chunks: list[bytes] = []
                count = 0
                # Walked from the left without indexing (a deque's index is linear).
                for spans, spans_count in self._queue:
                    chunks.append(spans)
                    count += spans_count
                    if count >= MAX_SPANS_PER_EXPORT:
                        break
                if not self._post(self.request_parts(chunks)):
                    backoff = min(backoff * 2, 30.0)
                    break
                with self._lock:
                    for _ in chunks:
                        self._queue.popleft()
                    self._queued -= count

    def _post(self, parts: list[bytes]) -> bool:
        try:
            if self._connection is None:
                factory = (
                    http.client.HTTPSConnection
                    if self._url.scheme == "https"
                    else http.client.HTTPConnection
                )
                self._connection = factory(self._url.netloc, timeout=EXPORT_TIMEOUT_SECONDS)
            # With its length given, http.client sends the parts one after the other as the
            # body (no chunked encoding, no join).
            self._connection.request(
                "POST",
                self._url.path or "/v1/traces",
                parts,
                {
                    "Content-Type": "application/x-protobuf",
                    "Content-Length": str(sum(map(len, parts))),
                },
            )
            response = self._connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            logger.warning("trace export failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(Exception):
                if self._connection is not None:
                    self._connection.close()
            self._connection = None
            return False
        if 200 <= response.status < 300:
            return True
        logger.warning("trace export refused", extra={"status": response.status})
        # A 4xx will not get better with a retry: drop these spans.
        return 400 <= response.status < 500


class _Pipe:
    current: SmsSpans | None = None


_pipe = _Pipe()


def sms_spans() -> SmsSpans | None:
    """The process's SMS span pipe, or None when tracing is off."""
    return _pipe.current


# ---------------------------------------------------------------------------- set-up


def traces_url(otlp_endpoint: str) -> str:
    endpoint = otlp_endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def setup_tracing(
    service: str, otlp_endpoint: str | None, *, sample_ratio: float | None = None
) -> TracerProvider | None:
    """Export spans by OTLP/HTTP to `otlp_endpoint` (in each process that serves: after a fork).

    `sample_ratio`: the config's `trace_sample_ratio`; None reads SMSGW_TRACE_SAMPLE_RATIO (the
    same variable) for an entry point that does not pass it. Without an endpoint nothing is
    installed: the API's no-op tracer then makes spans that cost next to nothing, and no SMS
    span is encoded.
    """
    if not otlp_endpoint:
        return None
    set_sample_ratio(_sample_ratio_from_environment() if sample_ratio is None else sample_ratio)
    resource = Resource.create({"service.name": service})
    url = traces_url(otlp_endpoint)
    provider = TracerProvider(resource=resource, sampler=GatewaySampler())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    if _pipe.current is None or _pipe.current.pid != os.getpid():  # none yet, or forked
        _pipe.current = SmsSpans(url, resource, service)
        atexit.register(_pipe.current.shutdown)  # what is queued leaves before the process
    return provider


def _sample_ratio_from_environment() -> float:
    text = os.environ.get(SAMPLE_RATIO_VARIABLE, "1")
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        logger.error(
            "bad trace sample ratio: every SMS is traced",
            extra={"variable": SAMPLE_RATIO_VARIABLE, "rule": "a number from 0 to 1"},
        )
        return 1.0
    return ratio


def shutdown_tracing(timeout: float = 5.0) -> None:
    """Send what is queued (at the end of a process's serving)."""
    pipe = _pipe.current
    if pipe is not None:
        pipe.shutdown(timeout)
