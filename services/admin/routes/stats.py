"""GET /stats (SPEC §7): counts per overall status, backlog, throughput.

Every number comes from an index or from the counters that 0007's triggers keep, so the answer
costs the same at ten thousand SMS as at ten million (plans in docs/benchmarks.md). All the
numbers come from one statement after reading the checkpoint, in one repeatable-read transaction:
one consistent snapshot.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter

from services.admin import queries
from services.admin.models import (
    Backlog,
    KeptPartition,
    LastDrop,
    NextDrop,
    Stats,
    Storage,
    Throughput,
    TimePartition,
)
from services.admin.state import State
from sms_gateway import db
from sms_gateway.errors import SettingValueError
from sms_gateway.settings import parse_setting_text

router = APIRouter(tags=["stats"])

# Counting the rows after the checkpoint walks the primary key; beyond this many the answer is
# "at least this many", which is all an operator needs to know about such a backlog, and the
# count stays a few milliseconds.
BACKLOG_COUNT_CAP: Final = 100_000
THROUGHPUT_WINDOW_SECONDS: Final = 60


@router.get("/stats", summary="Counts per status, backlog and throughput")
async def read_stats(state: State) -> Stats:
    async with db.transaction(state.pool, readonly=True, isolation="repeatable_read") as conn:
        checkpoint_text = await conn.fetchval(queries.CHECKPOINT)
        try:
            checkpoint = parse_setting_text("last_processed_uuid", checkpoint_text or "")
        except SettingValueError:
            # Written by hand and broken: the validator keeps its last good one, so do we.
            checkpoint = state.settings.current.last_processed_uuid
        row = await conn.fetchrow(
            queries.STATS, checkpoint, BACKLOG_COUNT_CAP, float(THROUGHPUT_WINDOW_SECONDS)
        )
        storage_row = await conn.fetchrow(queries.STORAGE)
    assert row is not None
    assert storage_row is not None
    now = row["at"]
    by_status: dict[str, int] = json.loads(row["by_status"])
    waiting = [
        at for at in (row["oldest_after_checkpoint"], row["oldest_pending"]) if at is not None
    ]
    oldest = min(waiting) if waiting else None
    return Stats(
        at=now,
        by_status=dict(sorted(by_status.items())),
        total_judged=sum(by_status.values()),
        checkpoint=checkpoint,
        backlog=Backlog(
            after_checkpoint=min(row["after_checkpoint"], BACKLOG_COUNT_CAP),
            after_checkpoint_exact=row["after_checkpoint"] <= BACKLOG_COUNT_CAP,
            pending=by_status.get("pending", 0),
            oldest_unprocessed_at=oldest,
            oldest_unprocessed_age_seconds=(
                max((now - oldest).total_seconds(), 0.0) if oldest is not None else None
            ),
        ),
        throughput=Throughput(
            window_seconds=THROUGHPUT_WINDOW_SECONDS,
            processed_per_second=row["processed_in_window"] / THROUGHPUT_WINDOW_SECONDS,
            received_per_second=row["received_in_window"] / THROUGHPUT_WINDOW_SECONDS,
        ),
        storage=_storage(storage_row, state.settings.current.retention_days, now),
    )


def _partition(entry: dict[str, Any]) -> TimePartition:
    return TimePartition(
        partition=entry["partition"],
        # The legacy partition starts at -infinity, which JSON gives as a string.
        starts_at=None if entry["starts_at"] == "-infinity" else entry["starts_at"],
        ends_at=entry["ends_at"],
    )


def _storage(row: Any, retention_days: int, now: datetime) -> Storage:
    partitions: list[dict[str, Any]] = json.loads(row["partitions"])
    oldest = _partition(partitions[0]) if partitions else None
    next_drop = None
    if oldest is not None and retention_days > 0:
        next_drop = NextDrop(
            **oldest.model_dump(), due_at=oldest.ends_at + timedelta(days=retention_days)
        )
    kept = [
        KeptPartition(
            **_partition(entry).model_dump(),
            unjudged=entry["unjudged"],
            examined_at=entry["examined_at"],
        )
        for entry in partitions
        if entry["unjudged"]
        and retention_days > 0
        and _partition(entry).ends_at <= now - timedelta(days=retention_days)
    ]
    return Storage(
        retention_days=retention_days,
        table_bytes=json.loads(row["table_bytes"]),
        partitions=len(partitions),
        oldest_partition=oldest,
        newest_partition=_partition(partitions[-1]) if partitions else None,
        next_drop=next_drop,
        kept_unjudged=kept,
        last_drop=LastDrop(**json.loads(row["last_drop"])) if row["last_drop"] else None,
    )
