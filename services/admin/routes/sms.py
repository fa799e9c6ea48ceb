"""One SMS: what happened to it (SPEC §7), and requeueing an SMS in error (SPEC §7, §6.4)."""

from __future__ import annotations

import logging
from typing import Final
from uuid import UUID

import asyncpg
from fastapi import APIRouter

from checks import result_column
from checks.base import CheckResult
from services.admin import queries
from services.admin.errors import SmsNotFound, SmsNotInError
from services.admin.models import CheckOutcome, InputSms, OutSms, Requeued, SmsDetail
from services.admin.state import Operator, State
from sms_gateway import db
from sms_gateway.problems import problem_responses

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/sms", tags=["sms"])


NOT_JUDGED: Final = "unprocessed"


def _meaning(code: int | None) -> str:
    if code is None:
        return "not run"
    try:
        return CheckResult(code).name.lower().replace("_", " ")
    except ValueError:
        return f"unknown code {code}"


def sms_detail(row: asyncpg.Record, check_names: tuple[str, ...]) -> SmsDetail:
    started, completed = row["processing_started_at"], row["processing_completed_at"]
    processing_ms = (
        (completed - started).total_seconds() * 1000
        if started is not None and completed is not None
        else None
    )
    checks = (
        [
            CheckOutcome(
                name=name,
                code=row[result_column(name)] or 0,
                result=_meaning(row[result_column(name)]),
            )
            for name in check_names
        ]
        if row["judged"]
        else []
    )
    out_sms = (
        OutSms(
            sender_number=row["out_sender_number"],
            sms_message=row["out_sms_message"],
            validation_status=row["out_validation_status"],
            forwarded_timestamp=row["out_forwarded_timestamp"],
            created_at=row["out_created_at"],
        )
        if row["forwarded"]
        else None
    )
    return SmsDetail(
        uuid=row["uuid"],
        trace_id=row["uuid"].hex,
        input=InputSms(
            sender_number=row["sender_number"],
            sms_message=row["sms_message"],
            received_timestamp=row["received_timestamp"],
            created_at=row["created_at"],
            source=row["source"],
            client_event_id=row["client_event_id"],
        ),
        overall_status=(row["overall_status"] or "unset") if row["judged"] else NOT_JUDGED,
        failed_at_check=row["failed_at_check"],
        checks=checks,
        batch_id=row["batch_id"],
        retry_count=row["retry_count"],
        processing_started_at=started,
        processing_completed_at=completed,
        processing_ms=processing_ms,
        out_sms=out_sms,
    )


@router.get(
    "/{sms_uuid}",
    summary="One SMS: its input row, every check result, its status and out_sms row",
    responses=problem_responses({404: "no SMS has this uuid", 422: "not a uuid"}),
)
async def read_sms(sms_uuid: UUID, state: State) -> SmsDetail:
    async with db.transaction(state.pool, readonly=True) as connection:
        row = await connection.fetchrow(state.sms_statements.detail, sms_uuid)
    if row is None:
        raise SmsNotFound(sms_uuid)
    return sms_detail(row, state.check_names)


@router.post(
    "/{sms_uuid}/requeue",
    summary="Send an SMS in error back to the validator",
    description="Only where overall_status is 'error': its status becomes 'pending', every "
    "check result 0, failed_at_check null; retry_count is kept. The validator "
    "judges it again.",
    responses=problem_responses(
        {404: "no SMS has this uuid", 409: "the SMS is not in error", 422: "not a uuid"}
    ),
)
async def requeue_sms(sms_uuid: UUID, state: State, requeued_by: Operator) -> Requeued:
    async with db.transaction(state.pool) as connection:
        row = await connection.fetchrow(state.sms_statements.requeue, sms_uuid)
        if row is None:
            current = await connection.fetchrow(queries.SMS_STATUS, sms_uuid)
    if row is None:
        if current is None:
            raise SmsNotFound(sms_uuid)
        status = (current["overall_status"] or "unset") if current["judged"] else NOT_JUDGED
        raise SmsNotInError(sms_uuid, status)
    logger.info("SMS requeued", extra={"sms_uuid": str(sms_uuid), "requeued_by": requeued_by})
    return Requeued(
        uuid=row["uuid"], overall_status=row["overall_status"], retry_count=row["retry_count"]
    )
