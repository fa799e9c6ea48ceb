"""GET /stats (SPEC §7): counts per overall status, backlog, throughput.

Every number comes from an index or from the counters that 0007's triggers keep, so the answer
costs the same at ten thousand SMS as at ten million (plans in docs/benchmarks.md). All the
queries run in one repeatable-read transaction: the numbers are one consistent snapshot.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends

from services.admin import queries
from services.admin.models import Backlog, Stats, Throughput
from services.admin.state import AdminState, admin_state
from sms_gateway import db
from sms_gateway.errors import SettingValueError
from sms_gateway.settings import parse_setting_text

router = APIRouter(tags=["stats"])

State = Annotated[AdminState, Depends(admin_state)]

# Counting the rows after the checkpoint walks the primary key; beyond this many the answer is
# "at least this many", which is all an operator needs to know about such a backlog.
BACKLOG_COUNT_CAP: Final = 1_000_000
THROUGHPUT_WINDOW_SECONDS: Final = 60


@router.get("/stats", summary="Counts per status, backlog and throughput")
async def read_stats(state: State) -> Stats:
    async with db.transaction(state.pool, readonly=True, isolation="repeatable_read") as conn:
        now = await conn.fetchval(queries.DATABASE_NOW)
        by_status = {row["overall_status"]: row["sms_count"]
                     for row in await conn.fetch(queries.STATUS_COUNTS) if row["sms_count"]}
        checkpoint_text = await conn.fetchval(queries.CHECKPOINT)
        try:
            checkpoint = parse_setting_text("last_processed_uuid", checkpoint_text or "")
        except SettingValueError:
            # Written by hand and broken: the validator keeps its last good one, so do we.
            checkpoint = state.settings.current.last_processed_uuid
        after_checkpoint = await conn.fetchval(
            queries.BACKLOG_AFTER_CHECKPOINT, checkpoint, BACKLOG_COUNT_CAP)
        oldest_after = await conn.fetchval(queries.OLDEST_AFTER_CHECKPOINT, checkpoint)
        oldest_pending = await conn.fetchval(queries.OLDEST_PENDING)
        processed = await conn.fetchval(queries.PROCESSED_LAST_MINUTE)
        received = await conn.fetchval(queries.RECEIVED_LAST_MINUTE)
    waiting = [at for at in (oldest_after, oldest_pending) if at is not None]
    oldest = min(waiting) if waiting else None
    return Stats(
        at=now,
        by_status=dict(sorted(by_status.items())),
        total_judged=sum(by_status.values()),
        checkpoint=checkpoint,
        backlog=Backlog(
            after_checkpoint=min(after_checkpoint, BACKLOG_COUNT_CAP),
            after_checkpoint_exact=after_checkpoint <= BACKLOG_COUNT_CAP,
            pending=by_status.get("pending", 0),
            oldest_unprocessed_at=oldest,
            oldest_unprocessed_age_seconds=(
                max((now - oldest).total_seconds(), 0.0) if oldest is not None else None),
        ),
        throughput=Throughput(
            window_seconds=THROUGHPUT_WINDOW_SECONDS,
            processed_per_second=processed / THROUGHPUT_WINDOW_SECONDS,
            received_per_second=received / THROUGHPUT_WINDOW_SECONDS,
        ),
    )
