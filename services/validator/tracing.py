"""Spans of the validator in each SMS's own trace (SPEC §8).

"sms.validate" per SMS, a child of the receiver's "sms.receive" span (its span id is derived
from the uuid, `receive_span_id`: one tree per SMS), with a child per check run (attribute
`sms.check.result`), and for a forwarded SMS "out_sms.insert" and "redis.write" (status error
when the write-through failed). They are emitted after the batch committed, from times recorded
during the batch: a rolled-back batch leaves no spans that claim a result, and with no exporter
configured the engine records no times and creates no spans at all.

The spans are encoded straight to OTLP (sms_gateway.telemetry.SmsSpans): names, kinds and the
attributes shared by a batch (its id, each check's result, each kind of verdict) are encoded
once per batch, and each span is then one `struct.pack` (`SpanPacker`).
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
    SpanPacker,
    SpanShape,
    encode_attributes,
    is_sampled,
    random_span_id,
    receive_span_id,
    sms_spans,
    sms_trace_context,
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
    # What the spans of a batch share is packed once: each check's span per result, each kind
    # of verdict's "sms.validate" (the batch id and the verdict's attributes; only the uuid's
    # text differs per SMS), the batch's write and write-through.
    batch_attribute = encode_attributes({"sms.batch_id": str(batch_id)})
    checks: dict[tuple[str, int], SpanPacker] = {}
    validations: dict[tuple[str, int, str | None], SpanPacker] = {}
    out_sms_insert = SpanPacker(_OUT_SMS_INSERT.tail)
    redis_write = (
        None
        if redis_ns is None
        else SpanPacker(
            _REDIS_WRITE.tail
            + (encode_attributes({"error.type": "redis"}) + ERROR_STATUS if redis_failed else b"")
        )
    )
    spans: list[bytes] = []
    add = spans.append
    for verdict in verdicts:
        uuid = verdict.sms.uuid
        if not is_sampled(uuid):
            continue
        trace_id = uuid.bytes
        validate_id = random_span_id()
        marks = verdict.run_marks
        if marks:
            for i, (name, result) in enumerate(verdict.results.items()):
                check = checks.get((name, result))
                if check is None:
                    check = checks[(name, result)] = _check_span(name, result)
                add(check.pack(trace_id, random_span_id(), validate_id, marks[i], marks[i + 1]))
        end_ns = _ns(verdict.completed_at)
        if verdict.forwarded:
            add(out_sms_insert.pack(trace_id, random_span_id(), validate_id, *write_ns))
            end_ns = max(end_ns, write_ns[1])
            if redis_write is not None and redis_ns is not None:
                add(redis_write.pack(trace_id, random_span_id(), validate_id, *redis_ns))
                end_ns = max(end_ns, redis_ns[1])
        key = (verdict.overall_status.value, verdict.retry_count, verdict.failed_at_check)
        validation = validations.get(key)
        if validation is None:
            validation = validations[key] = _validate_span(key, batch_attribute)
        add(
            validation.pack(
                trace_id,
                validate_id,
                receive_span_id(uuid),
                _ns(verdict.started_at),
                end_ns,
                suffix=str(uuid).encode("ascii"),
            )
        )
    pipe.add(b"".join(spans), len(spans))


def _check_span(name: str, result: int) -> SpanPacker:
    return SpanPacker(
        SpanShape(
            f"check.{name}", attributes={"sms.check": name, "sms.check.result": int(result)}
        ).tail
    )


def _validate_span(key: tuple[str, int, str | None], batch_attribute: bytes) -> SpanPacker:
    status, retries, failed_at = key
    attributes = encode_attributes(
        {
            "sms.overall_status": status,
            "sms.retry_count": retries,
            **({"sms.failed_at_check": failed_at} if failed_at else {}),
        }
    )
    # The uuid's text is the varying suffix: the last attribute, of 36 characters.
    return SpanPacker(_VALIDATE.tail + batch_attribute + attributes + _UUID_ATTRIBUTE, 36)


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
