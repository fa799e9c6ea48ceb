"""The blacklist (SPEC §5.3, §7): page through it, remove a sender (which resets its count)."""

from __future__ import annotations

import logging
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from services.admin import queries
from services.admin.errors import SenderNotBlacklisted
from services.admin.models import BlacklistEntry, BlacklistPage, BlacklistRemoval
from services.admin.state import Operator, State
from sms_gateway import db
from sms_gateway.problems import problem_responses
from sms_gateway.senders import MAX_SENDER_LENGTH, normalise_sender

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/blacklist", tags=["blacklist"])


def _stored_form(sender_number: str) -> str:
    """The sender as the receiver stored it, so that `+44 7700 900123` finds `447700900123`."""
    sender = normalise_sender(sender_number)
    if not sender or len(sender) > MAX_SENDER_LENGTH:
        raise ValueError(f"must be 1 to {MAX_SENDER_LENGTH} characters after normalisation")
    return sender


Sender = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="as received or as stored: `+44 7700 900123` and `447700900123` are one sender",
    ),
    AfterValidator(_stored_form),
]


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching what starts with `prefix` literally."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _entry(row: asyncpg.Record, current_count: int | None) -> BlacklistEntry:
    return BlacklistEntry(
        sender_number=row["sender_number"],
        blacklisted_at=row["blacklisted_at"],
        reason=row["reason"],
        message_count=row["message_count"],
        current_count=current_count,
    )


@router.get("", summary="Blacklisted senders in order, a page at a time")
async def list_blacklist(
    state: State,
    sender_prefix: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            description="only senders that start with this, written as received or as stored "
            "(`+44 7700` finds `447700...`)",
        ),
        AfterValidator(_stored_form),
    ] = None,
    after: Annotated[
        str | None, Query(max_length=15, description="next_after of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> BlacklistPage:
    pattern = _like_prefix(sender_prefix) if sender_prefix is not None else None
    async with db.transaction(state.pool, readonly=True) as connection:
        rows = await connection.fetch(queries.BLACKLIST_PAGE, pattern, after, limit + 1)
    entries = [_entry(row, row["current_count"]) for row in rows[:limit]]
    return BlacklistPage(
        entries=entries, next_after=entries[-1].sender_number if len(rows) > limit else None
    )


@router.delete(
    "/{sender_number}",
    summary="Remove a sender from the blacklist and reset its count",
    description="In one transaction: the blacklist_sms row and the sender's count_sms row are "
    "deleted, so the sender starts again as a new sender.",
    responses=problem_responses({404: "the sender is not blacklisted"}),
)
async def remove_from_blacklist(
    sender_number: Sender, state: State, removed_by: Operator
) -> BlacklistRemoval:
    async with db.transaction(state.pool) as connection:
        removed = await connection.fetchrow(queries.BLACKLIST_REMOVE, sender_number)
        if removed is None:
            raise SenderNotBlacklisted(sender_number)
        count_before = await connection.fetchval(queries.COUNT_REMOVE, sender_number)
    logger.info(
        "sender removed from the blacklist",
        extra={"removed_by": removed_by, "count_reset_from": count_before},
    )
    return BlacklistRemoval(removed=_entry(removed, None), count_reset_from=count_before)
