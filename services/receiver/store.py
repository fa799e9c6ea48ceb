"""Storing SMS in input_sms: group commit for single requests, one transaction per batch.

Group commit: inserting one row per request and transaction makes the commit (a WAL flush) the
cost of every request. Concurrent requests instead join a pending group; a flusher sends each
group as one multi-row INSERT in one transaction, and each request is answered only once that
transaction has committed. A group waits at most `max_wait` for company and holds at most
`max_rows` rows; at most `max_flushes` groups are in flight, and while they are, newcomers gather
into the next group, so the batching grows with load by itself. Every SMS is validated before
it joins a group, so a group fails only as a whole (the database is gone): exactly its requests
get the error, and no other group is affected.

Bounded answer time: every request is answered within `answer_within` seconds of joining (SPEC
§4.1 and a client's own timeout: Twilio gives up after 15 s). The retries of its group stop at
the deadline of the group's oldest request, and a request still waiting at its own deadline
(its group queued behind busy flushes) is answered 503 and leaves the queue. Every case where
a row cannot be stored (an outage that outlasts the retries or the deadline, a read-only
database, an unexpected error) is `StorageUnavailable`: 503 with Retry-After, never a 500.

A retried flush whose first COMMIT did reach the database but whose answer was lost stores its
rows twice; deliveries with an idempotency key are protected from that by the unique index, the
others are "at least once" as every client delivery is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import asyncpg
import orjson

from services.receiver import metrics
from services.receiver.errors import IdempotencyKeyReused, StorageUnavailable
from services.receiver.incoming import SmsToStore
from services.receiver.queries import INSERT_ITEMS, INSERT_SMS, SELECT_DELIVERIES
from sms_gateway import db
from sms_gateway.errors import RetriesExhaustedError
from sms_gateway.retry import retry_transient

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredSms:
    """The answer for one SMS: its uuid, whether it repeats an earlier delivery, and when its
    insert ran (for the trace's "input_sms.insert" span)."""

    uuid: UUID
    repeated: bool
    insert_started_ns: int
    insert_ended_ns: int


@dataclass(slots=True)
class _Waiting:
    sms: SmsToStore
    answer: asyncio.Future[StoredSms]
    deadline: float  # event loop time by which the request must be answered


def _columns(rows: Sequence[SmsToStore]) -> tuple[list[object], ...]:
    return (
        [row.sender_number for row in rows],
        [row.sms_message for row in rows],
        [row.received_timestamp for row in rows],
        [row.source for row in rows],
        [row.client_event_id for row in rows],
    )


async def _insert(connection: asyncpg.Connection, rows: Sequence[SmsToStore]) -> list[UUID | None]:
    """Insert `rows` in one statement; the uuid of each row, None where its key was taken."""
    records = await connection.fetch(INSERT_SMS, *_columns(rows))
    uuids: list[UUID | None] = [None] * len(rows)
    for record in records:
        uuids[record["position"] - 1] = record["uuid"]
    return uuids


async def _insert_batch(
    connection: asyncpg.Connection, rows: Sequence[SmsToStore]
) -> list[UUID | None]:
    """Insert an unkeyed batch (one source, nothing can conflict); the uuids in input order.
    The items go as one JSON document, each [sender, message, time in UTC]: orjson writes a
    datetime in RFC 3339, which PostgreSQL reads back to the microsecond."""
    items = orjson.dumps(
        [(row.sender_number, row.sms_message, row.received_timestamp) for row in rows]
    )
    uuids: list[UUID | None] = await connection.fetchval(
        INSERT_ITEMS, items.decode("utf-8"), rows[0].source
    )
    return uuids


async def _earlier_deliveries(
    pool: asyncpg.Pool, keys: Sequence[tuple[str, str]]
) -> list[UUID | None]:
    async with db.transaction(pool, readonly=True) as connection:
        records = await connection.fetch(
            SELECT_DELIVERIES, [source for source, _ in keys], [key for _, key in keys]
        )
    found: list[UUID | None] = [None] * len(keys)
    for record in records:
        found[record["position"] - 1] = record["uuid"]
    return found


class SmsStore:
    """input_sms for the receiver: `store` (group-committed) and `store_batch` (atomic)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retries: Callable[[], int],
        attempt_timeout: float,
        answer_within: float = 5.0,
        max_wait: float,
        max_rows: int,
        max_flushes: int,
    ) -> None:
        self._pool = pool
        self._retries = retries  # max_database_retries, read at each use (it changes at run time)
        self._attempt_timeout = attempt_timeout
        self._answer_within = answer_within
        self._max_wait = max_wait
        self._max_rows = max_rows
        self._slots = asyncio.Semaphore(max_flushes)
        self._waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._flushes: set[asyncio.Task[None]] = set()
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> asyncio.Task[None]:
        """Start the flusher; the caller supervises the returned task (sms_gateway.service)."""
        self._flusher = asyncio.create_task(self._run(), name="group-commit")
        self._flusher.add_done_callback(self._flusher_ended)
        return self._flusher

    def _flusher_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # A flusher that dies would leave every request waiting: fail loudly instead.
            logger.critical("group commit flusher died", exc_info=task.exception())
            self._closing = True
            self._fail(self._take(len(self._waiting)), StorageUnavailable())

    async def close(self) -> None:
        """Stop taking SMS, commit every one already taken, wait for the flushes in flight."""
        self._closing = True
        self._arrived.set()
        if self._flusher is not None:
            await self._flusher
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    # ------------------------------------------------------------------ single SMS

    async def store(self, sms: SmsToStore) -> StoredSms:
        """Commit `sms` together with whatever else arrives meanwhile; its uuid once committed.

        Raises `StorageUnavailable` when the database cannot be reached after the retries.
        """
        if self._closing:
            raise StorageUnavailable("the receiver is shutting down; try again")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[StoredSms] = loop.create_future()
        deadline = loop.time() + self._answer_within
        self._waiting.append(_Waiting(sms, answer, deadline))
        self._arrived.set()
        try:
            async with asyncio.timeout_at(deadline):
                # On timeout `answer` is cancelled: a group not yet taken drops it (_take),
                # and a group in flight, whose retries stop at this same deadline, ignores it.
                return await answer
        except TimeoutError:
            metrics.STORE_FAILURES.labels(cause="deadline").inc()
            raise StorageUnavailable(
                f"the SMS could not be stored within {self._answer_within:g} s; try again"
            ) from None

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._waiting:
                if self._closing:
                    return
                self._arrived.clear()
                continue
            if len(self._waiting) < self._max_rows and self._max_wait > 0 and not self._closing:
                await asyncio.sleep(self._max_wait)  # let concurrent requests join this group
            await self._slots.acquire()  # while every slot is busy, the group keeps growing
            group = self._take(self._max_rows)
            if not self._waiting and not self._closing:
                # While closing the event stays set, so that the loop comes round to see the
                # queue empty and ends (clearing it here left close() waiting for ever).
                self._arrived.clear()
            if not group:  # every request taken had been cancelled
                self._slots.release()
                continue
            flush = asyncio.create_task(self._flush(group))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)

    def _take(self, count: int) -> list[_Waiting]:
        """The next `count` requests, less those cancelled while they waited: such a client
        got no answer and will deliver again, so storing its row would only duplicate it."""
        group, self._waiting = self._waiting[:count], self._waiting[count:]
        return [waiting for waiting in group if not waiting.answer.cancelled()]

    async def _flush(self, group: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            await self._commit_group(group)
        except Exception as exc:  # a bug: answer 503 (never a 500, never a hang), log loudly
            metrics.STORE_FAILURES.labels(cause="error").inc()
            logger.exception("group commit failed", extra={"rows": len(group)})
            unavailable = StorageUnavailable()
            unavailable.__cause__ = exc
            self._fail(group, unavailable)
        finally:
            metrics.FLUSH_ROWS.observe(len(group))
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            self._slots.release()

    async def _commit_group(self, group: list[_Waiting]) -> None:
        """One transaction with one INSERT for the group. New rows are answered as soon as it
        commits; repeated deliveries (their key was taken) once their earlier row is read back."""
        rows = [waiting.sms for waiting in group]
        deadline = min(waiting.deadline for waiting in group)
        started_ns = time.time_ns()
        try:
            uuids = await self._with_retries(
                "input_sms.insert", lambda: self._insert_once(rows), deadline
            )
        except RetriesExhaustedError as exc:
            logger.error(  # noqa: TRY400
                "cannot store SMS: database unavailable",
                extra={"rows": len(rows), "error": str(exc), "cause": _cause(exc)},
            )
            self._fail(group, StorageUnavailable())
            return
        ended_ns = time.time_ns()
        repeats: list[_Waiting] = []
        for waiting, uuid in zip(group, uuids, strict=True):
            if uuid is None:
                repeats.append(waiting)
                continue
            metrics.SMS_STORED.labels(source=waiting.sms.source).inc()
            self._answer(waiting, StoredSms(uuid, False, started_ns, ended_ns))
        if not repeats:
            return
        try:
            earlier = await self._read_back([waiting.sms for waiting in repeats], deadline)
        except RetriesExhaustedError:
            self._fail(repeats, StorageUnavailable())
            return
        for waiting, uuid in zip(repeats, earlier, strict=True):
            metrics.IDEMPOTENT_REPEATS.labels(source=waiting.sms.source).inc()
            self._answer(waiting, StoredSms(uuid, True, started_ns, ended_ns))

    @staticmethod
    def _answer(waiting: _Waiting, stored: StoredSms) -> None:
        if not waiting.answer.done():  # the client may have gone away
            waiting.answer.set_result(stored)

    @staticmethod
    def _fail(group: list[_Waiting], error: BaseException) -> None:
        for waiting in group:
            if not waiting.answer.done():
                waiting.answer.set_exception(error)

    async def _insert_once(self, rows: Sequence[SmsToStore]) -> list[UUID | None]:
        async with asyncio.timeout(self._attempt_timeout), db.transaction(self._pool) as connection:
            return await _insert(connection, rows)

    async def _read_back(self, rows: Sequence[SmsToStore], deadline: float) -> list[UUID]:
        keys = [(row.source, row.client_event_id) for row in rows if row.client_event_id]
        assert len(keys) == len(rows), "only a keyed row can be skipped by ON CONFLICT"

        async def read() -> list[UUID | None]:
            async with asyncio.timeout(self._attempt_timeout):
                return await _earlier_deliveries(self._pool, keys)

        found = await self._with_retries("input_sms.read_back", read, deadline)
        missing = [key for key, uuid in zip(keys, found, strict=True) if uuid is None]
        if missing:
            # Only possible if the earlier row vanished between our INSERT and this read.
            raise RuntimeError(f"earlier deliveries not found: {missing}")
        return [uuid for uuid in found if uuid is not None]

    async def _with_retries(
        self, operation: str, action: Callable[[], Awaitable[T]], deadline: float
    ) -> T:
        """`action` with the retries of `max_database_retries`, all of them before `deadline`
        (event loop time); `RetriesExhaustedError` when they fail or the deadline passes."""
        try:
            async with asyncio.timeout_at(deadline):
                return await retry_transient(
                    operation, action, retries=self._retries(), transient=db.TRANSIENT_DB_ERRORS
                )
        except RetriesExhaustedError:
            metrics.STORE_FAILURES.labels(cause="outage").inc()
            raise
        except TimeoutError as exc:
            metrics.STORE_FAILURES.labels(cause="deadline").inc()
            raise RetriesExhaustedError(
                f"{operation}: not done within {self._answer_within:g} s"
            ) from exc

    # ------------------------------------------------------------------ a batch

    async def store_batch(self, rows: list[SmsToStore]) -> tuple[list[UUID], bool]:
        """All of `rows` in one transaction of their own, or none (SPEC §4.2).

        With a batch key (every row keyed), a repeat of the whole batch stores nothing and
        answers the earlier uuids (True); a batch that reuses a key for different items is
        refused with `IdempotencyKeyReused` and nothing is stored.
        """
        if self._closing:
            raise StorageUnavailable("the receiver is shutting down; try again")
        keyed = rows[0].client_event_id is not None
        deadline = asyncio.get_running_loop().time() + self._answer_within

        async def attempt() -> list[UUID | None]:
            async with (
                asyncio.timeout(self._attempt_timeout),
                db.transaction(self._pool) as connection,
            ):
                if not keyed:
                    return await _insert_batch(connection, rows)
                uuids = await _insert(connection, rows)
                inserted = sum(uuid is not None for uuid in uuids)
                if 0 < inserted < len(rows):
                    raise IdempotencyKeyReused()  # rolls the partial insert back
                return uuids

        try:
            uuids = await self._with_retries("input_sms.insert_batch", attempt, deadline)
            if any(uuid is None for uuid in uuids):
                assert keyed
                return await self._earlier_batch(rows, deadline), True
        except IdempotencyKeyReused:
            raise
        except RetriesExhaustedError as exc:
            logger.error(  # noqa: TRY400
                "cannot store a batch: database unavailable",
                extra={"rows": len(rows), "error": str(exc), "cause": _cause(exc)},
            )
            raise StorageUnavailable() from None
        except Exception:  # a bug: 503 (never a 500) and a loud log
            metrics.STORE_FAILURES.labels(cause="error").inc()
            logger.exception("cannot store a batch", extra={"rows": len(rows)})
            raise StorageUnavailable() from None
        metrics.SMS_STORED.labels(source=rows[0].source).inc(len(rows))
        return [uuid for uuid in uuids if uuid is not None], False

    async def _earlier_batch(self, rows: list[SmsToStore], deadline: float) -> list[UUID]:
        """The uuids of the earlier batch under the same key, which must have had exactly these
        items: a row for one item more means the key named a longer batch."""
        first = rows[0]
        assert first.client_event_id is not None
        batch_key = first.client_event_id.rsplit("#", 1)[0]
        keys = [(row.source, row.client_event_id or "") for row in rows]
        keys.append((first.source, f"{batch_key}#{len(rows)}"))

        async def read() -> list[UUID | None]:
            async with asyncio.timeout(self._attempt_timeout):
                return await _earlier_deliveries(self._pool, keys)

        found = await self._with_retries("input_sms.read_back", read, deadline)
        if found[-1] is not None or any(uuid is None for uuid in found[:-1]):
            raise IdempotencyKeyReused()
        metrics.IDEMPOTENT_REPEATS.labels(source=first.source).inc(len(rows))
        return [uuid for uuid in found[:-1] if uuid is not None]


def _cause(exc: BaseException) -> str:
    """The class of the fault behind `exc` (e.g. ReadOnlySQLTransactionError), for the log."""
    return type(exc.__cause__ or exc).__name__
