"""The Redis set `out_sms_numbers`: an index of forwarded senders, never the truth (SPEC §5.4).

The truth is `forwarded_senders` (db/init/0008), one row per sender ever forwarded, numbered per
partition: a row's `seq` is handed out by the batch holding its partition's lease, so within a
partition seq order is commit order and "every row of partition p up to seq N" is a prefix.
Completeness is explicit, per partition, in the hash `out_sms_numbers:marks`:

    db      the token of the database the set mirrors (validator_identity)
    n       the number of partitions the marks refer to
    p<k>    the set holds the senders of every row of partition k up to this seq

Inside each batch, holding its partitions' locks (so their rows cannot grow meanwhile),
`members_for_judgement` reads the marks, the set's type and the batch senders' membership in one
MULTI and compares each partition's mark with its `forwarded_seq`:

* a token of another database, another partition count, a missing mark, a set or hash of the
  wrong type, the set gone while a mark says it has members, or a mark ahead of the database (a
  database restored under a newer Redis): the set may hold senders that are not forwarded, so it
  is rebuilt whole (`rebuild`: one worker at a time, under a Redis lock, streamed from one COPY
  into a scratch set in bounded chunks);
* a mark behind: the partition catches up, adding the senders of its rows after the mark in
  bounded chunks (a crash or a Redis error between a commit and its write-through, or a Redis
  restored from an older snapshot);
* equal: the set is complete for that partition, and its answer is the judgement's input.

After a commit, `write_through` adds the batch's new senders and moves the marks in one Lua
script, which refuses to claim completeness it cannot prove (another database, marks gone, set
gone, or a gap below the batch). Adding a true member is always safe; only a mark claims
completeness. No call sends Redis an argument list that grows with a lag: catch-up and rebuild
go in chunks of `CHUNK` senders, and the script adds at most `LUA_UNPACK` members per SADD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from services.validator import sql
from services.validator.errors import IndexIncompleteError
from sms_gateway import db

logger = logging.getLogger(__name__)

SET_KEY: Final = "out_sms_numbers"
MARKS_KEY: Final = "out_sms_numbers:marks"
REBUILD_LOCK_KEY: Final = "out_sms_numbers:rebuild"
CHUNK: Final = 5_000
REBUILD_LOCK_SECONDS: Final = 30
REBUILD_IN_FLIGHT: Final = 2  # SADDs under way at once: one in Redis, the next already sent
REBUILD_SECONDS: Final = 600  # the COPY of every sender (3,000,000 take ~10 s on a busy machine)

INDEX_REPAIRS = Counter(
    "sms_validator_redis_index_repairs_total",
    "Repairs of the Redis set before a judgement: rebuilt whole, or a partition caught up.",
    ["kind"],
)
INDEX_SIZE = Gauge(
    "sms_validator_redis_set_size", "Members of out_sms_numbers (SCARD).", multiprocess_mode="max"
)
WRITE_THROUGH_FAILURES = Counter(
    "sms_validator_redis_write_through_failures_total",
    "Write-throughs after a commit that did not reach Redis or could not move a mark "
    "(the next batch of the partition catches up).",
)

# KEYS: set, marks. ARGV: token, partitions, ttl, k, then k triples (partition, previous seq,
# new seq), then the members to add. Returns SCARD when every mark moved (or stayed)
# consistently, -1 when the marks are not this database's or the set is gone (a rebuild will
# come), -2 when a mark was behind a triple's previous seq (a catch-up will come).
_WRITE_THROUGH: Final = """
local marks = redis.call('HGETALL', KEYS[2])
local field = {}
for i = 1, #marks, 2 do field[marks[i]] = marks[i + 1] end
if field['db'] ~= ARGV[1] or field['n'] ~= ARGV[2] then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  for name, value in pairs(field) do
    if string.sub(name, 1, 1) == 'p' and tonumber(value) > 0 then return -1 end
  end
end
local k = tonumber(ARGV[4])
local first = 5 + 3 * k
for i = first, #ARGV, 4000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
local result = 0
for j = 0, k - 1 do
  local name = 'p' .. ARGV[5 + 3 * j]
  local previous = tonumber(ARGV[6 + 3 * j])
  local new = tonumber(ARGV[7 + 3 * j])
  local mark = tonumber(field[name] or '-1')
  if mark < 0 then
    result = -1
  elseif mark < previous then
    if result == 0 then result = -2 end
  elseif new > mark then
    redis.call('HSET', KEYS[2], name, new)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if result < 0 then return result end
return redis.call('SCARD', KEYS[1])
"""


# KEYS: scratch set, set, marks. ARGV: members the scratch set must hold, TTL, token, partition
# count, then field/seq pairs. Swaps the rebuilt set in with its marks only if it still holds
# every member written to it; returns 1, or 0 (nothing changed). The set it replaces (another
# database's, say, of millions of members) is unlinked: freed in the background, where RENAME
# over it or DEL would block Redis meanwhile (2.1 s for 3,000,000 members here, load 9).
_SWAP_IN: Final = """
if redis.call('SCARD', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[3])
redis.call('UNLINK', KEYS[2])
if tonumber(ARGV[1]) > 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('HSET', KEYS[3], 'db', ARGV[3], 'n', ARGV[4], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class IndexState:
    """What Redis says, read atomically: the marks, the keys' types, the senders' membership."""

    token: str | None
    partitions: int | None
    marks: Mapping[int, int]
    set_type: str
    marks_type: str
    members: frozenset[str]

    def needs_rebuild(self, token: str, partitions: int, wanted: Mapping[int, int]) -> str | None:
        """Why the set cannot be trusted for these partitions (None: it can, maybe after a
        catch-up). `wanted` maps each partition to its forwarded_seq in the database."""
        if self.set_type not in ("set", "none") or self.marks_type not in ("hash", "none"):
            return "wrong type"
        if self.token is None:
            return "no marks"
        if self.token != token:
            return "marks of another database"
        if self.partitions != partitions:
            return "marks of another partition count"
        if self.set_type == "none" and any(mark > 0 for mark in self.marks.values()):
            return "set gone"
        for partition, seq in wanted.items():
            mark = self.marks.get(partition)
            if mark is None:
                return "a partition's mark is missing"
            if mark > seq:
                return "marks ahead of the database"
        return None


def _mark_field(partition: int) -> str:
    return f"p{partition}"


async def read_state(client: aioredis.Redis, senders: Sequence[str]) -> IndexState:
    async with client.pipeline(transaction=True) as pipe:
        pipe.type(SET_KEY)
        pipe.type(MARKS_KEY)
        pipe.hgetall(MARKS_KEY)
        if senders:
            pipe.smismember(SET_KEY, list(senders))
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    set_type, marks_type = str(replies[0]), str(replies[1])
    if isinstance(replies[2], Exception) or (senders and isinstance(replies[3], Exception)):
        # A key of the wrong type answers WRONGTYPE; the types above say which.
        return IndexState(None, None, {}, set_type, marks_type, frozenset())
    fields: dict[str, str] = replies[2]
    try:
        marks = {int(name[1:]): int(value) for name, value in fields.items() if name[:1] == "p"}
        partitions = int(fields["n"]) if "n" in fields else None
    except ValueError:  # not marks this code wrote
        return IndexState(None, None, {}, set_type, "corrupt", frozenset())
    members = (
        frozenset(s for s, is_member in zip(senders, replies[3], strict=True) if is_member)
        if senders
        else frozenset()
    )
    return IndexState(fields.get("db"), partitions, marks, set_type, marks_type, members)


@dataclass(frozen=True, slots=True)
class IndexContext:
    """What a repair needs besides the batch's own connection: the pool for a rebuild's
    snapshot, the database's token and partition count, and the TTL."""

    pool: asyncpg.Pool
    token: str
    partitions: int
    ttl: int


async def members_for_judgement(
    connection: asyncpg.Connection,
    client: aioredis.Redis,
    context: IndexContext,
    held: Mapping[int, int],
    senders: Sequence[str],
) -> frozenset[str]:
    """The senders among `senders` that were ever forwarded, from a set proven complete for the
    partitions `held` (partition → forwarded_seq, read under their locks)."""
    state = await read_state(client, senders)
    reason = state.needs_rebuild(context.token, context.partitions, held)
    if reason is not None:
        await rebuild(client, context, reason=reason)
        state = await read_state(client, senders)
    behind = {p: seq for p, seq in held.items() if state.marks.get(p, seq) < seq}
    for partition, seq in behind.items():
        added = await _catch_up(
            connection, client, context, partition, after=state.marks[partition], upto=seq
        )
        INDEX_REPAIRS.labels(kind="catch_up").inc()
        logger.info(
            "redis index was behind forwarded_senders, caught up",
            extra={
                "partition": partition,
                "from_seq": state.marks[partition],
                "to_seq": seq,
                "senders": added,
            },
        )
    if behind:
        state = await read_state(client, senders)
    if state.needs_rebuild(context.token, context.partitions, held) is not None or any(
        state.marks.get(p) != seq for p, seq in held.items()
    ):
        # Something changed Redis under us (a flush between the repair and the read): the batch
        # is retried rather than judged from a set that is not known to be complete.
        raise IndexIncompleteError(
            "out_sms_numbers is not complete for this batch's partitions; retrying"
        )
    return state.members


async def _catch_up(
    connection: asyncpg.Connection,
    client: aioredis.Redis,
    context: IndexContext,
    partition: int,
    *,
    after: int,
    upto: int,
) -> int:
    added = 0
    while after < upto:
        rows = await connection.fetch(sql.FORWARDED_AFTER_SEQ, partition, after, upto, CHUNK)
        if not rows:
            raise IndexIncompleteError(
                f"forwarded_senders of partition {partition} has no seq in ({after}, {upto}]"
            )
        last = int(rows[-1]["seq"])
        reply = await write_through(
            client,
            context,
            [row["sender_number"] for row in rows],
            {partition: (after, last)},
        )
        if reply < 0:
            raise IndexIncompleteError(f"catch-up of partition {partition} refused ({reply})")
        added += len(rows)
        after = last
    return added


# The rebuild lock is renewed and released only by its holder (the value it set): a rebuild that
# stalled past the lock's expiry must neither extend nor delete the lock another worker took
# since. (Two rebuilds at once would still be correct, each swap-in claiming what its own
# snapshot holds; the lock only saves the work.)
_RENEW_IF_HELD: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_IF_HELD: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextlib.asynccontextmanager
async def _rebuild_lock(client: aioredis.Redis) -> AsyncIterator[str]:
    """One rebuild at a time across every worker; the holder renews it per chunk. A worker that
    finds it taken retries its batch later (the holder's rebuild will serve it)."""
    value = secrets.token_hex(16)
    if not await client.set(REBUILD_LOCK_KEY, value, nx=True, ex=REBUILD_LOCK_SECONDS):
        raise IndexIncompleteError("another worker is rebuilding out_sms_numbers")
    try:
        yield value
    finally:
        with contextlib.suppress(Exception):
            await cast(Any, client.eval(_RELEASE_IF_HELD, 1, REBUILD_LOCK_KEY, value))


async def rebuild(client: aioredis.Redis, context: IndexContext, *, reason: str) -> int:
    """Rebuild the set from forwarded_senders into a scratch key, then swap it in with fresh
    marks in one script. The rows and every partition's forwarded_seq come from one REPEATABLE
    READ snapshot, so each mark claims exactly what the scratch set holds; partitions that
    commit meanwhile find their marks behind and catch up.

    The senders leave PostgreSQL by one COPY, as text, and go into the scratch set while it
    runs (`_ScratchWriter`): no row objects, no round trip per chunk, and Redis, the slowest
    stage (~1 µs a member), always has the next SADD waiting."""
    scratch = f"{SET_KEY}:rebuild:{secrets.token_hex(8)}"
    async with _rebuild_lock(client) as lock:
        async with db.transaction(
            context.pool, isolation="repeatable_read", readonly=True
        ) as snapshot:
            seqs = {
                row["partition_no"]: row["forwarded_seq"]
                for row in await snapshot.fetch(sql.PARTITION_SEQS)
            }
            async with _ScratchWriter(client, scratch, lock=lock) as writer:
                # One statement for the whole table: it gets the rebuild's time, not one
                # statement's (db_command_timeout).
                await snapshot.copy_from_query(
                    sql.EVERY_FORWARDED_SENDER, output=writer.write, timeout=REBUILD_SECONDS
                )
        total = writer.written
        if not await _swap_in(client, context, scratch, total, seqs):
            # The scratch set lost members on the way (a flush mid-rebuild): never claim it.
            raise IndexIncompleteError("the rebuilt set changed before it was swapped in")
    INDEX_REPAIRS.labels(kind="rebuild").inc()
    INDEX_SIZE.set(total)
    logger.warning(
        "redis index rebuilt from forwarded_senders",
        extra={"reason": reason, "senders": total, "partitions": len(seqs)},
    )
    return total


async def _swap_in(
    client: aioredis.Redis,
    context: IndexContext,
    scratch: str,
    written: int,
    seqs: Mapping[int, int],
) -> bool:
    """The scratch set becomes the set, with `seqs` as its marks, if it holds the `written`
    members it was given; False (nothing changed) if it does not."""
    marks: list[str | int] = [context.token, context.partitions]
    for partition, seq in seqs.items():
        marks += [_mark_field(partition), seq]
    swapped = await cast(
        Any, client.eval(_SWAP_IN, 3, scratch, SET_KEY, MARKS_KEY, written, context.ttl, *marks)
    )
    return int(swapped) == 1


class _ScratchWriter:
    """COPY's output (`write` is its callback), added to the scratch set as it arrives: whole
    lines only (a line may straddle two buffers), in SADDs of at most CHUNK members, at most
    REBUILD_IN_FLIGHT of them under way. `write` waits while that many are, and asyncpg reads
    no further meanwhile, so memory stays bounded whatever the table's size. Leaving waits for
    every SADD and raises the first failure; after an error, the SADDs under way are cancelled.
    """

    def __init__(self, client: aioredis.Redis, scratch: str, *, lock: str) -> None:
        self._client = client
        self._scratch = scratch
        self._lock = lock  # the rebuild lock's value, renewed with each SADD
        self._partial_line = b""
        self._under_way: set[asyncio.Task[None]] = set()
        self.written = 0

    async def write(self, data: bytes) -> None:
        text = self._partial_line + data
        lines = text.split(b"\n")
        self._partial_line = lines.pop()
        if b"\\" in text:
            lines = [_copy_text_value(line) for line in lines]
        for start in range(0, len(lines), CHUNK):
            members = lines[start : start + CHUNK]
            while len(self._under_way) >= REBUILD_IN_FLIGHT:
                await self._one_done()
            self._under_way.add(
                asyncio.create_task(
                    _add_to_scratch(self._client, self._scratch, members, self._lock)
                )
            )
            self.written += len(members)

    async def _one_done(self) -> None:
        done, self._under_way = await asyncio.wait(
            self._under_way, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            task.result()

    async def __aenter__(self) -> _ScratchWriter:
        return self

    async def __aexit__(self, error: type[BaseException] | None, *_: object) -> None:
        try:
            if error is None:
                if self._partial_line:
                    # COPY ends every row with a newline: a sender would be missing unnoticed.
                    raise RuntimeError("COPY's output ended inside a line")
                while self._under_way:
                    await self._one_done()
        finally:
            for task in self._under_way:
                task.cancel()
            await asyncio.gather(*self._under_way, return_exceptions=True)


# COPY's text format escapes a backslash and the control characters \b \f \n \r \t \v with a
# backslash, and emits no other escape (PostgreSQL's documentation of COPY, "File Formats").
_COPY_ESCAPE: Final = re.compile(rb"\\(.)", re.DOTALL)
_COPY_ESCAPED: Final = {
    b"\\": b"\\",
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"v": b"\v",
}


def _copy_text_value(field: bytes) -> bytes:
    return _COPY_ESCAPE.sub(lambda escape: _COPY_ESCAPED[escape[1]], field)


async def _add_to_scratch(
    client: aioredis.Redis, scratch: str, members: list[bytes], lock: str
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        pipe.sadd(scratch, *members)
        pipe.expire(scratch, 600)  # a crash mid-rebuild leaves no litter for long
        pipe.eval(_RENEW_IF_HELD, 1, REBUILD_LOCK_KEY, lock, REBUILD_LOCK_SECONDS)
        await pipe.execute()


async def write_through(
    client: aioredis.Redis,
    context: IndexContext,
    senders: Collection[str],
    moves: Mapping[int, tuple[int, int]],
) -> int:
    """Add `senders` and move each partition's mark from its previous to its new seq; renews
    the TTL. Returns SCARD, or a negative code when completeness could not be claimed."""
    triples = [value for p, (previous, new) in moves.items() for value in (p, previous, new)]
    reply = await cast(
        Any,
        client.eval(
            _WRITE_THROUGH,
            2,
            SET_KEY,
            MARKS_KEY,
            context.token,
            context.partitions,
            context.ttl,
            len(moves),
            *triples,
            *senders,
        ),
    )
    size = int(reply)
    if size >= 0:
        INDEX_SIZE.set(size)
    return size


async def renew_ttl(client: aioredis.Redis, ttl: int) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.expire(SET_KEY, ttl)
        pipe.expire(MARKS_KEY, ttl)
        pipe.scard(SET_KEY)
        replies: list[Any] = await pipe.execute()
    INDEX_SIZE.set(int(replies[2]))
