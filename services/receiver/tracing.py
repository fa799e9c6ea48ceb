"""The receiver's part of an SMS's trace (SPEC §8): once the insert has returned the uuid, a
server span "sms.receive" in the SMS's own trace (trace id = uuid) from the start of the request
to the answer, with a child "input_sms.insert".

The receive span of an SMS's first delivery has the span id `receive_span_id(uuid)`, the parent
the validator gives its "sms.validate" span: one tree per SMS. An idempotent repeat gets a
receive span of its own (a random id), a child of the first delivery's.

`ReceiveSpans` encodes them straight to OTLP (sms_gateway.telemetry.SmsSpans): what is the same
for every SMS of an endpoint is encoded once, and a batch encodes its times and attributes once
for all its items. `record_receive` makes the same spans through any OpenTelemetry tracer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final
from uuid import UUID

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Tracer

from services.receiver.store import StoredSms
from sms_gateway.telemetry import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    SmsSpans,
    SpanShape,
    encode_span,
    insert_span_id,
    is_sampled,
    random_span_id,
    receive_span_id,
    sampling_all,
    sms_trace_context,
    span_head,
    span_times,
    string_attribute_prefix,
)

_UUID_ATTRIBUTE: Final = string_attribute_prefix("sms.uuid", 36)
_INSERT: Final = SpanShape(
    "input_sms.insert",
    kind=SPAN_KIND_CLIENT,
    attributes={"db.system": "postgresql", "db.operation": "INSERT"},
)


class ReceiveSpans:
    """The receiver's spans of one process, encoded for `pipe`."""

    def __init__(self, pipe: SmsSpans) -> None:
        self._pipe = pipe
        self._shapes: dict[tuple[str, str, int, bool], SpanShape] = {}

    def _shape(self, source: str, route: str, status: int, repeated: bool) -> SpanShape:
        key = (source, route, status, repeated)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = SpanShape(
                "sms.receive",
                kind=SPAN_KIND_SERVER,
                attributes={
                    "sms.source": source,
                    "sms.repeated_delivery": repeated,
                    "http.request.method": "POST",
                    "http.route": route,
                    "http.response.status_code": status,
                },
            )
        return shape

    def record(
        self, stored: StoredSms, *, source: str, route: str, status: int, request_started_ns: int
    ) -> None:
        uuid = stored.uuid
        if not is_sampled(uuid):
            return
        trace_id = uuid.bytes
        first = receive_span_id(uuid)
        if stored.repeated:
            span_id, parent = random_span_id(), first
        else:
            span_id, parent = first, None
        receive = self._shape(source, route, status, stored.repeated).tail + span_times(
            request_started_ns, time.time_ns()
        )
        insert = _INSERT.tail + span_times(stored.insert_started_ns, stored.insert_ended_ns)
        self._pipe.add(
            encode_span(
                trace_id, span_id, parent, receive + _UUID_ATTRIBUTE + str(uuid).encode("ascii")
            )
            + encode_span(trace_id, insert_span_id(uuid), span_id, insert),
            2,
        )

    def record_batch(
        self,
        uuids: Sequence[UUID],
        texts: Sequence[str],
        *,
        repeated: bool,
        source: str,
        route: str,
        status: int,
        request_started_ns: int,
        insert_ns: tuple[int, int],
    ) -> None:
        """The spans of every SMS of one batch (`texts`: the uuids as text, already made for
        the answer). Times, names and attributes are encoded once for the whole batch."""
        receive = self._shape(source, route, status, repeated).tail + span_times(
            request_started_ns, time.time_ns()
        )
        insert = _INSERT.tail + span_times(*insert_ns)
        if repeated or not sampling_all():
            self._record_each(uuids, texts, receive, insert, repeated=repeated)
            return
        # Every span of the batch has the same length: heads are encoded once, and each SMS
        # costs one join of its ids and uuid text.
        receive_tail = receive + _UUID_ATTRIBUTE
        receive_head = span_head(2 + 16 + 2 + 8 + len(receive_tail) + 36)
        insert_head = span_head(2 + 16 + 2 + 8 + 2 + 8 + len(insert))
        pieces: list[bytes] = []
        add = pieces.extend
        for uuid, text in zip(uuids, texts, strict=True):
            trace_id = uuid.bytes
            span_id = trace_id[8:]
            add(
                (
                    receive_head,
                    trace_id,
                    b"\x12\x08",
                    span_id,
                    receive_tail,
                    text.encode("ascii"),
                    insert_head,
                    trace_id,
                    b"\x12\x08",
                    bytes((span_id[0] ^ 0x40,)),
                    span_id[1:],
                    b"\x22\x08",
                    span_id,
                    insert,
                )
            )
        self._pipe.add(b"".join(pieces), 2 * len(uuids))

    def _record_each(
        self,
        uuids: Sequence[UUID],
        texts: Sequence[str],
        receive: bytes,
        insert: bytes,
        *,
        repeated: bool,
    ) -> None:
        spans: list[bytes] = []
        add = spans.append
        for uuid, text in zip(uuids, texts, strict=True):
            if not is_sampled(uuid):
                continue
            trace_id = uuid.bytes
            first = receive_span_id(uuid)
            span_id, parent = (random_span_id(), first) if repeated else (first, None)
            add(
                encode_span(
                    trace_id, span_id, parent, receive + _UUID_ATTRIBUTE + text.encode("ascii")
                )
            )
            add(encode_span(trace_id, insert_span_id(uuid), span_id, insert))
        self._pipe.add(b"".join(spans), len(spans))


def record_receive(
    tracer: Tracer,
    stored: StoredSms,
    *,
    source: str,
    request_started_ns: int,
    http_span: SpanContext,
) -> None:
    """The same two spans through an OpenTelemetry tracer (for a provider of one's own, as in
    tests), linked to the request's HTTP server span when there is one. The SDK picks the span
    ids, so the receive span is a child of `receive_span_id` rather than that span itself."""
    links = [Link(http_span)] if http_span.is_valid else []
    receive = tracer.start_span(
        "sms.receive",
        context=sms_trace_context(stored.uuid),
        kind=SpanKind.SERVER,
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
        kind=SpanKind.CLIENT,
        start_time=stored.insert_started_ns,
        attributes={"db.system": "postgresql", "db.operation": "INSERT"},
    )
    insert.end(end_time=stored.insert_ended_ns)
    receive.end()
