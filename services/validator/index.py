"""The Redis set `out_sms_numbers`: an index of the senders of out_sms, never the truth (SPEC §5.4).

Completeness is explicit. Every out_sms row has a `seq` (db/init/0005) handed out under the
checkpoint lock, so seq order is commit order, and the marker key `out_sms_numbers:seq` says
"the set holds the senders of every out_sms row up to this seq". Inside each batch transaction,
holding the lock (so out_sms cannot grow meanwhile), `members_for_judgement` compares the marker
with `max(seq)`:

* marker missing, or the set missing while the marker says it has members, or the marker ahead
  of the database (another database's Redis, a restore): rebuild from out_sms, in chunks;
* marker behind: add the senders of the rows after it (a crash or a Redis error between a
  batch's commit and its write-through);
* equal: the set is complete; its answer for the batch's senders is the judgement's input.

After a commit, `write_through` adds the batch's forwarded senders and moves the marker in one
Lua script, which refuses to claim completeness it cannot prove (marker gone, set gone, or a gap
below the batch). Adding a true member is always safe; only the marker claims completeness.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from services.validator import sql
from services.validator.errors import IndexIncompleteError

logger = logging.getLogger(__name__)

SET_KEY: Final = "out_sms_numbers"
MARKER_KEY: Final = "out_sms_numbers:seq"
CHUNK: Final = 10_000

INDEX_REPAIRS = Counter(
    "sms_validator_redis_index_repairs_total",
    "Repairs of the Redis set before a judgement: rebuilt from out_sms, or caught up.",
    ["kind"],
)
INDEX_SIZE = Gauge("sms_validator_redis_set_size", "Members of out_sms_numbers (SCARD).")
WRITE_THROUGH_FAILURES = Counter(
    "sms_validator_redis_write_through_failures_total",
    "Write-throughs after a commit that did not reach Redis or could not move the marker "
    "(the next batch catches up).",
)

# KEYS: set, marker. ARGV: previous seq, new seq, TTL seconds, members...
# Returns SCARD when the marker moved (or stayed) consistently, -1 when the marker or the set is
# gone (a rebuild will come), -2 when there is a gap below this batch (a catch-up will come).
_WRITE_THROUGH: Final = """
local marker = redis.call('GET', KEYS[2])
if not marker then return -1 end
marker = tonumber(marker)
if marker > 0 and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if #ARGV > 3 then redis.call('SADD', KEYS[1], unpack(ARGV, 4)) end
if marker < tonumber(ARGV[1]) then return -2 end
if tonumber(ARGV[2]) > marker then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('SCARD', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class IndexState:
    marker: int | None
    set_exists: bool
    members: frozenset[str]


async def read_state(client: aioredis.Redis, senders: Sequence[str]) -> IndexState:
    """Marker, existence and the batch senders' membership, read atomically (MULTI)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.get(MARKER_KEY)
        pipe.exists(SET_KEY)
        if senders:
            pipe.smismember(SET_KEY, list(senders))
        replies: list[Any] = await pipe.execute()
    marker = int(replies[0]) if replies[0] is not None else None
    members = (
        frozenset(s for s, is_member in zip(senders, replies[2], strict=True) if is_member)
        if senders
        else frozenset()
    )
    return IndexState(marker, bool(replies[1]), members)


async def members_for_judgement(
    connection: asyncpg.Connection,
    client: aioredis.Redis,
    senders: Sequence[str],
    *,
    max_seq: int,
    ttl: int,
) -> frozenset[str]:
    """The batch senders that already have an out_sms row, from a set proven complete up to
    `max_seq` (call it holding the checkpoint lock, with `max_seq` read under it)."""
    state = await read_state(client, senders)
    if _must_rebuild(state, max_seq):
        await rebuild(connection, client, max_seq=max_seq, ttl=ttl)
        state = await read_state(client, senders)
    elif state.marker is not None and state.marker < max_seq:
        added = await _catch_up(connection, client, after=state.marker, upto=max_seq, ttl=ttl)
        INDEX_REPAIRS.labels(kind="catch_up").inc()
        logger.info(
            "redis index was behind out_sms, caught up",
            extra={"from_seq": state.marker, "to_seq": max_seq, "senders": added},
        )
        state = await read_state(client, senders)
    if state.marker != max_seq or _must_rebuild(state, max_seq):
        # Something changed Redis under us (a flush between the repair and the read): the batch
        # is retried rather than judged from a set that is not known to be complete.
        raise IndexIncompleteError(
            f"out_sms_numbers is not complete (marker {state.marker}, out_sms at {max_seq})"
        )
    return state.members


def _must_rebuild(state: IndexState, max_seq: int) -> bool:
    return (
        state.marker is None
        or state.marker > max_seq
        or (state.marker > 0 and not state.set_exists)
    )


async def rebuild(
    connection: asyncpg.Connection, client: aioredis.Redis, *, max_seq: int, ttl: int
) -> int:
    """Rebuild the set from out_sms in chunks into a scratch key, then swap it in with the marker
    in one MULTI. Call holding the checkpoint lock: out_sms does not grow meanwhile."""
    scratch = f"{SET_KEY}:rebuild:{secrets.token_hex(8)}"
    total = 0
    last = ""
    while True:
        rows = await connection.fetch(sql.DISTINCT_SENDERS_AFTER, last, CHUNK)
        if not rows:
            break
        chunk = [row["sender_number"] for row in rows]
        async with client.pipeline(transaction=False) as pipe:
            pipe.sadd(scratch, *chunk)
            pipe.expire(scratch, 600)  # a crash mid-rebuild leaves no litter for long
            await pipe.execute()
        total += len(chunk)
        last = chunk[-1]
    async with client.pipeline(transaction=True) as pipe:
        if total:
            pipe.rename(scratch, SET_KEY)
            pipe.expire(SET_KEY, ttl)
        else:
            pipe.delete(SET_KEY)
        pipe.set(MARKER_KEY, max_seq, ex=ttl)
        await pipe.execute()
    INDEX_REPAIRS.labels(kind="rebuild").inc()
    INDEX_SIZE.set(total)
    logger.warning("redis index rebuilt from out_sms", extra={"senders": total, "to_seq": max_seq})
    return total


async def _catch_up(
    connection: asyncpg.Connection, client: aioredis.Redis, *, after: int, upto: int, ttl: int
) -> int:
    added = 0
    while after < upto:
        rows = await connection.fetch(sql.SENDERS_AFTER_SEQ, after, upto, CHUNK)
        if not rows:  # seq values are never reused, but rolled-back inserts leave holes
            break
        last = int(rows[-1]["seq"])
        await write_through(
            client,
            [row["sender_number"] for row in rows],
            previous_seq=after,
            new_seq=last,
            ttl=ttl,
        )
        added += len(rows)
        after = last
    if after < upto:
        await write_through(client, [], previous_seq=after, new_seq=upto, ttl=ttl)
    return added


async def write_through(
    client: aioredis.Redis,
    senders: Collection[str],
    *,
    previous_seq: int,
    new_seq: int,
    ttl: int,
) -> int:
    """Add the senders of out_sms rows (previous_seq, new_seq] and move the marker; renews the
    TTL. Returns SCARD, or a negative code when completeness could not be claimed."""
    reply = await cast(
        Any,
        client.eval(_WRITE_THROUGH, 2, SET_KEY, MARKER_KEY, previous_seq, new_seq, ttl, *senders),
    )
    size = int(reply)
    if size >= 0:
        INDEX_SIZE.set(size)
    return size


async def renew_ttl(client: aioredis.Redis, ttl: int) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.expire(SET_KEY, ttl)
        pipe.expire(MARKER_KEY, ttl)
        pipe.scard(SET_KEY)
        replies: list[Any] = await pipe.execute()
    INDEX_SIZE.set(int(replies[2]))
