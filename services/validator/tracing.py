"""Spans of the validator in each SMS's own trace (SPEC §8).

"sms.validate" per SMS, a child of the receiver's "sms.receive" span (its span id is derived
from the uuid, `receive_span_id`: one tree per SMS), with a child per check run (attribute
`sms.check.result`), and for a forwarded SMS "out_sms.insert" and "redis.write" (status error
when the write-through failed). They are emitted after the batch committed, from times recorded
during the batch: a rolled-back batch leaves no spans that claim a result, and with no exporter
configured the engine records no times and creates no spans at all.

The spans are encoded straight to OTLP (sms_gateway.telemetry.SmsSpans): names, kinds and the
attributes shared by a batch (its id, each check's result) are encoded once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final
from uuid import UUID

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from services.validator.pipeline import Verdict
from sms_gateway.telemetry import (
    ERROR_STATUS,
    SPAN_KIND_CLIENT,
    SmsSpans,
    SpanShape,
    encode_attributes,
    encode_span,
    is_sampled,
    random_span_id,
    receive_span_id,
    sms_spans,
    sms_trace_context,
    span_times,
    string_attribute_prefix,
)

_TRACER_NAME: Final = "sms-validator"
_VALIDATE: Final = SpanShape("sms.validate")
_OUT_SMS_INSERT: Final = SpanShape(
    "out_sms.insert",
    kind=SPAN_KIND_CLIENT,
    attributes={"db.system": "postgresql", "db.operation": "INSERT"},
)
_REDIS_WRITE: Final = SpanShape(
    "redis.write", kind=SPAN_KIND_CLIENT, attributes={"db.system": "redis"}
)
_UUID_ATTRIBUTE: Final = string_attribute_prefix("sms.uuid", 36)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def emit_spans(
    verdicts: Sequence[Verdict],
    *,
    batch_id: UUID,
    write_ns: tuple[int, int],
    redis_ns: tuple[int, int] | None,
    redis_failed: bool = False,
) -> None:
    """The spans of a committed batch. `redis_failed`: the write-through to Redis failed (its
    span is then marked as an error)."""
    pipe = sms_spans()
    if pipe is None:
        _emit_through_tracer(
            verdicts,
            batch_id=batch_id,
            write_ns=write_ns,
            redis_ns=redis_ns,
            redis_failed=redis_failed,
        )
        return
    _emit_encoded(
        pipe,
        verdicts,
        batch_id=batch_id,
        write_ns=write_ns,
        redis_ns=redis_ns,
        redis_failed=redis_failed,
    )


def _emit_encoded(
    pipe: SmsSpans,
    verdicts: Sequence[Verdict],
    *,
    batch_id: UUID,
    write_ns: tuple[int, int],
    redis_ns: tuple[int, int] | None,
    redis_failed: bool,
) -> None:
    batch_attribute = encode_attributes({"sms.batch_id": str(batch_id)})
    checks: dict[tuple[str, int], bytes] = {}  # a check's name, kind and result attributes
    verdict_attributes: dict[tuple[str, int, str | None], bytes] = {}
    out_sms_insert = _OUT_SMS_INSERT.tail + span_times(*write_ns)
    redis_write = (
        None
        if redis_ns is None
        else _REDIS_WRITE.tail
        + span_times(*redis_ns)
        + (encode_attributes({"error.type": "redis"}) + ERROR_STATUS if redis_failed else b"")
    )
    spans: list[bytes] = []
    add = spans.append
    for verdict in verdicts:
        uuid = verdict.sms.uuid
        if not is_sampled(uuid):
            continue
        trace_id = uuid.bytes
        validate_id = random_span_id()
        key = (verdict.overall_status.value, verdict.retry_count, verdict.failed_at_check)
        attributes = verdict_attributes.get(key)
        if attributes is None:
            attributes = verdict_attributes[key] = batch_attribute + encode_attributes(
                {
                    "sms.overall_status": key[0],
                    "sms.retry_count": key[1],
                    **({"sms.failed_at_check": key[2]} if key[2] else {}),
                }
            )
        end_ns = _ns(verdict.completed_at)
        for run in verdict.runs:
            result = int(run.result)
            check = checks.get((run.check, result))
            if check is None:
                check = checks[(run.check, result)] = SpanShape(
                    f"check.{run.check}",
                    attributes={"sms.check": run.check, "sms.check.result": result},
                ).tail
            add(
                encode_span(
                    trace_id,
                    random_span_id(),
                    validate_id,
                    check + span_times(run.started_ns, run.ended_ns),
                )
            )
        if verdict.forwarded:
            add(encode_span(trace_id, random_span_id(), validate_id, out_sms_insert))
            end_ns = max(end_ns, write_ns[1])
            if redis_write is not None:
                add(encode_span(trace_id, random_span_id(), validate_id, redis_write))
                assert redis_ns is not None
                end_ns = max(end_ns, redis_ns[1])
        add(
            encode_span(
                trace_id,
                validate_id,
                receive_span_id(uuid),
                _VALIDATE.tail
                + span_times(_ns(verdict.started_at), end_ns)
                + attributes
                + _UUID_ATTRIBUTE
                + str(uuid).encode("ascii"),
            )
        )
    pipe.add(b"".join(spans), len(spans))


def _emit_through_tracer(
    verdicts: Sequence[Verdict],
    *,
    batch_id: UUID,
    write_ns: tuple[int, int],
    redis_ns: tuple[int, int] | None,
    redis_failed: bool,
) -> None:
    """The same spans through the global OpenTelemetry tracer (a provider of one's own)."""
    tracer = trace.get_tracer(_TRACER_NAME)
    for verdict in verdicts:
        sms = verdict.sms
        root = tracer.start_span(
            "sms.validate",
            context=sms_trace_context(sms.uuid),
            start_time=_ns(verdict.started_at),
            attributes={
                "sms.uuid": str(sms.uuid),
                "sms.batch_id": str(batch_id),
                "sms.overall_status": verdict.overall_status.value,
                "sms.retry_count": verdict.retry_count,
                **(
                    {"sms.failed_at_check": verdict.failed_at_check}
                    if verdict.failed_at_check
                    else {}
                ),
            },
        )
        parent = trace.set_span_in_context(root)
        for run in verdict.runs:
            span = tracer.start_span(
                f"check.{run.check}",
                context=parent,
                start_time=run.started_ns,
                attributes={"sms.check": run.check, "sms.check.result": int(run.result)},
            )
            span.end(end_time=run.ended_ns)
        if verdict.forwarded:
            span = tracer.start_span("out_sms.insert", context=parent, start_time=write_ns[0])
            span.end(end_time=write_ns[1])
            if redis_ns is not None:
                span = tracer.start_span("redis.write", context=parent, start_time=redis_ns[0])
                if redis_failed:
                    span.set_status(Status(StatusCode.ERROR, "write-through to Redis failed"))
                span.end(end_time=redis_ns[1])
        root.end(
            end_time=max(
                _ns(verdict.completed_at),
                redis_ns[1] if (redis_ns and verdict.forwarded) else write_ns[1],
            )
        )
