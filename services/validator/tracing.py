"""Spans of the validator in each SMS's own trace (SPEC §8).

"sms.validate" per SMS, a child per check run (attribute `sms.check.result`), and for a forwarded
SMS "out_sms.insert" and "redis.write". They are emitted after the batch committed, from times
recorded during the batch: a rolled-back batch leaves no spans that claim a result, and with no
exporter configured the engine records no times and creates no spans at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final
from uuid import UUID

from opentelemetry import trace

from services.validator.pipeline import Verdict
from sms_gateway.telemetry import sms_trace_context

_TRACER_NAME: Final = "sms-validator"


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def emit_spans(
    verdicts: Sequence[Verdict],
    *,
    batch_id: UUID,
    write_ns: tuple[int, int],
    redis_ns: tuple[int, int] | None,
) -> None:
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
                span.end(end_time=redis_ns[1])
        root.end(
            end_time=max(
                _ns(verdict.completed_at),
                redis_ns[1] if (redis_ns and verdict.forwarded) else write_ns[1],
            )
        )
