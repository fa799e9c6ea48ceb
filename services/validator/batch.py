"""One batch (or sweep) of one worker's partitions as one transaction; then the write-through.

BEGIN (read committed)
  lock this worker's partition rows     owner = me: the lease's fence; other workers'
                                        partitions go on at the same time
  reload the settings                   a change takes effect within one batch
  settle horizon, then the rows         nothing below it can still appear; the next rows
                                        of these partitions after their checkpoints
  ledger: counters, blacklist rows      locked rows, one statement
  Redis: marks + SMISMEMBER             repaired first if not provably complete
  judge in memory, in uuid order        checks/, pure
  one write statement                   sms_monitor, out_sms, forwarded_senders, count_sms,
                                        blacklist_sms, the partitions' checkpoints
COMMIT
Redis write-through (Lua: SADD, marks, TTL)
"""

from __future__ import annotations

import logging
import time
from collections import Counter as CounterDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from uuid import UUID, uuid4

import asyncpg
import redis.asyncio as aioredis

from checks import configuration_problems
from checks.base import Check, CheckResult, CheckSecrets, SmsToJudge
from services.validator import index, metrics, sql
from services.validator.errors import DoubleJudgementError
from services.validator.ledger import BatchLedger
from services.validator.partitions import Leases
from services.validator.pipeline import OverallStatus, Verdict, judge_batch, plan
from services.validator.tracing import emit_spans
from sms_gateway import db
from sms_gateway.logging import set_level
from sms_gateway.redis import TRANSIENT_REDIS_ERRORS, RedisLink
from sms_gateway.settings import RuntimeSettings, SettingsStore

logger = logging.getLogger(__name__)

Kind = Literal["batch", "sweep"]
Paused = Literal["maintenance", "configuration"]

# How long after its uuid's instant a row is left to settle, on top of the open transactions
# (see sql.START_BATCH).
DEFAULT_SETTLE_MARGIN: Final = 0.5
# How far below the checkpoint the sweeper looks for rows without a result, in seconds of uuid
# time.
# (Its cost is the rows that arrived in that window: 10 s at 30,000 SMS/s is 300,000 rows.)
DEFAULT_SWEEP_WINDOW: Final = 10.0


# Beyond the last row of a partition, its checkpoint moves up to the horizon even when no SMS
# arrives (so that `last_processed_uuid` moves), but at most this often per worker.
IDLE_ADVANCE_SECONDS: Final = 1.0

# The worker a runner acts as when it is driven by hand (`BatchRunner.run` without leases).
SOLO_WORKER: Final = "solo"

ZERO_UUID: Final = UUID(int=0)
MAX_UUID: Final = UUID(int=2**128 - 1)


@dataclass(frozen=True, slots=True)
class HeldPartition:
    checkpoint: UUID
    forwarded_seq: int


@dataclass(frozen=True, slots=True)
class NewlyForwarded:
    """A sender forwarded for the first time: its forwarded_senders row."""

    sender_number: str
    partition_no: int
    seq: int
    first_uuid: UUID


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    kind: Kind
    settings: RuntimeSettings
    batch_id: UUID | None = None
    verdicts: Sequence[Verdict] = ()
    requeued: int = 0
    paused: Paused | None = None
    newly_forwarded: Sequence[NewlyForwarded] = ()
    # Partitions this worker believed it held but that were taken over.
    lost: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        return len(self.verdicts)


@dataclass(frozen=True, slots=True)
class _Written:
    outcome: BatchOutcome
    write_ns: tuple[int, int] = (0, 0)
    # partition -> (forwarded_seq before, after) for the partitions that forwarded new senders
    moves: Mapping[int, tuple[int, int]] = field(default_factory=dict)


# A batch whose write PostgreSQL refuses for its data (SQLSTATE classes 22 and 23: a value too
# long for a column changed by hand, a constraint added by hand...) would fail the same way on
# every retry and stall its partitions for ever. Such a batch is halved until the SMS that
# cannot be written is alone, and that SMS is written `error` (SPEC §6.4), with no side effects,
# so that every other SMS is judged.
POISON_ERRORS: Final = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
UNWRITABLE: Final = "write"  # failed_at_check of an SMS whose results could not be written


@dataclass(slots=True)
class _Attempt:
    """How the next try of a batch is made after the database refused a write for its data."""

    limit: int | None = None  # fetch at most this many (None: batch_size)
    isolate: bool = False  # write the one SMS fetched as error, unjudged
    cause: BaseException | None = None
    fetched: int = 0

    def narrowed(self, error: BaseException) -> _Attempt:
        if self.isolate or self.fetched == 0:
            raise error  # even the error row cannot be written: a bug, stop loudly
        logger.warning(
            "the database refused a batch's write for its data; narrowing it",
            extra={"sms": self.fetched, "error": type(error).__name__},
        )
        if self.fetched == 1:
            return _Attempt(limit=1, isolate=True, cause=error)
        return _Attempt(limit=self.fetched // 2)


def _unwritable(sms: SmsToJudge, attempt: _Attempt, batch_id: UUID) -> Verdict:
    logger.error(
        "SMS marked error: the database refused its results",
        extra={
            "sms_uuid": str(sms.uuid),
            "batch_id": str(batch_id),
            "error": type(attempt.cause).__name__,
            "sqlstate": getattr(attempt.cause, "sqlstate", None),
        },
    )
    now = datetime.now(UTC)
    return Verdict(
        sms=sms,
        results={},
        overall_status=OverallStatus.ERROR,
        failed_at_check=UNWRITABLE,
        retry_count=1,
        started_at=now,
        completed_at=now,
    )


class BatchRunner:
    """Runs batches and sweeps of a worker's partitions against one database and the Redis
    index. One runner serves every worker of a process; `Leases` says whose batch it is."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis_link: RedisLink,
        checks: Mapping[str, Check],
        secrets: CheckSecrets,
        store: SettingsStore,
        *,
        settle_margin: float = DEFAULT_SETTLE_MARGIN,
        sweep_window: float = DEFAULT_SWEEP_WINDOW,
        tracing: bool = False,
    ) -> None:
        self.pool = pool
        self.redis_link = redis_link
        self.checks = checks
        self.secrets = secrets
        self.store = store
        self.settle_margin = settle_margin
        self.sweep_window = sweep_window
        self.tracing = tracing
        self._columns: Final = tuple(checks)
        self._reported_problems: tuple[str, ...] = ()
        # The settings object and partition count the problems were last found for: a store
        # hands out the same object until a setting changes.
        self._problems_of: tuple[RuntimeSettings, int] | None = None
        self._identity: tuple[str, int] | None = None
        self._idle_advanced: dict[str, float] = {}
        self._solo = Leases(pool, SOLO_WORKER)

    # ------------------------------------------------------------------ batches
    async def run(
        self, kind: Kind, leases: Leases | None = None, *, look_back: bool = True
    ) -> BatchOutcome:
        """One batch or sweep of the partitions `leases` holds; a sweep without `look_back`
        takes only requeued SMS (cheap), with it also rows missed in the last `sweep_window`
        seconds below the checkpoints (a range scan). Without leases the runner acts
        as the worker `SOLO_WORKER` (tools and tests that drive batches by hand): every runner
        without leases is that one worker, so such runners take turns on the same partition
        locks, as the engine's workers never do."""
        if leases is None:
            leases = self._solo
        if leases is self._solo and leases.due:
            await leases.heartbeat()
        started = time.perf_counter()
        attempt = _Attempt()
        while True:
            try:
                async with db.transaction(self.pool, isolation="read_committed") as connection:
                    written = await self._in_transaction(
                        connection, kind, leases, look_back, attempt
                    )
                break
            except POISON_ERRORS as exc:
                attempt = attempt.narrowed(exc)
        outcome = written.outcome
        if outcome.lost:
            leases.lost(outcome.lost)
        if outcome.size == 0:
            return outcome
        metrics.BATCH_SECONDS.labels(kind).observe(time.perf_counter() - started)
        redis_ns, redis_failed = await self._write_through(outcome, written.moves)
        self._count(outcome)
        if self.tracing and outcome.batch_id is not None:
            emit_spans(
                outcome.verdicts,
                batch_id=outcome.batch_id,
                write_ns=written.write_ns,
                redis_ns=redis_ns,
                redis_failed=redis_failed,
            )
        return outcome

    async def _in_transaction(
        self,
        connection: asyncpg.Connection,
        kind: Kind,
        leases: Leases,
        look_back: bool,
        attempt: _Attempt,
    ) -> _Written:
        start = await connection.fetchrow(sql.START_BATCH, leases.worker_id, self.settle_margin)
        assert start is not None
        held = {
            number: HeldPartition(checkpoint, seq)
            for number, checkpoint, seq in zip(
                start["partition_nos"], start["checkpoints"], start["forwarded_seqs"], strict=True
            )
        }
        if held:
            leases.count_workers(start["workers"], start["rank"])
        lost = leases.held - held.keys()
        settings = self.store.apply(
            zip(start["setting_keys"] or (), start["setting_values"] or (), strict=True)
        )
        set_level(settings.log_level)
        if settings.maintenance_mode:
            return _Written(BatchOutcome(kind, settings, paused="maintenance", lost=lost))
        token, partitions = await self._database_identity(connection)
        if self._configuration_problems(settings, partitions=partitions):
            return _Written(BatchOutcome(kind, settings, paused="configuration", lost=lost))
        if not held:
            return _Written(BatchOutcome(kind, settings, lost=lost))

        rows, new_checkpoints = await self._fetch(
            connection,
            kind,
            held,
            (start["horizon"], start["first_unsettled"]),
            partitions,
            look_back=look_back,
            limit=attempt.limit or settings.batch_size,
        )
        attempt.fetched = len(rows)
        if not rows:
            if kind == "batch":
                await self._advance_idle(connection, leases.worker_id, held, new_checkpoints)
            return _Written(BatchOutcome(kind, settings, lost=lost))

        batch = [
            SmsToJudge(
                row["uuid"],
                row["sender_number"],
                row["sms_message"],
                row["received_timestamp"],
                row["created_at"],
            )
            for row in rows
        ]
        partition_of = {row["sender_number"]: row["partition_no"] for row in rows}
        senders = list(partition_of)
        client = await self._redis(settings)
        seqs = {number: partition.forwarded_seq for number, partition in held.items()}
        context = index.IndexContext(self.pool, token, partitions, settings.out_sms_cache_ttl)
        forwarded = await index.members_for_judgement(connection, client, context, seqs, senders)
        ledger = BatchLedger.load(
            senders,
            counts={
                row["sender_number"]: row["sender_count"]
                for row in rows
                if row["sender_count"] is not None
            },
            blacklisted=[row["sender_number"] for row in rows if row["sender_blacklisted"]],
            forwarded=forwarded,
        )

        batch_id = uuid4()
        if attempt.isolate:
            verdicts = [_unwritable(batch[0], attempt, batch_id)]
            ledger = BatchLedger.load([], counts={}, blacklisted=[], forwarded=[])
        else:
            verdicts = judge_batch(
                batch,
                checks=self.checks,
                settings=settings,
                secrets=self.secrets,
                ledger=ledger,
                batch_id=batch_id,
                trace_runs=self.tracing,
            )
        newly = _newly_forwarded(verdicts, forwarded, partition_of, seqs)
        next_seqs = dict(seqs)
        for first in newly:
            next_seqs[first.partition_no] = first.seq
        write_started = time.time_ns()
        written = await connection.fetchrow(
            sql.write_statement(self._columns),
            *self._write_parameters(
                verdicts,
                ledger,
                batch_id=batch_id,
                worker_id=leases.worker_id,
                newly=newly,
                checkpoints=new_checkpoints,
                seqs=next_seqs,
            ),
        )
        write_ns = (write_started, time.time_ns())
        assert written is not None
        if written["judged"] != len(verdicts):
            raise DoubleJudgementError(
                f"batch {batch_id}: {len(verdicts) - written['judged']} of {len(verdicts)} SMS "
                "already had a final result; rolled back"
            )
        requeued = sum(1 for row in rows if kind == "sweep" and row["requeued"])
        outcome = BatchOutcome(
            kind,
            settings,
            batch_id,
            verdicts,
            requeued=requeued,
            newly_forwarded=newly,
            lost=lost,
        )
        moves = {p: (seqs[p], next_seqs[p]) for p in next_seqs if next_seqs[p] != seqs[p]}
        return _Written(outcome, write_ns, moves)

    async def _fetch(
        self,
        connection: asyncpg.Connection,
        kind: Kind,
        held: Mapping[int, HeldPartition],
        horizon: tuple[datetime, UUID],
        partitions: int,
        *,
        look_back: bool,
        limit: int,
    ) -> tuple[list[asyncpg.Record], dict[int, UUID]]:
        """The rows of a batch or sweep, each with its sender's ledger (sql.with_ledger), and
        the partitions' checkpoints after it. `horizon`: the settle horizon START_BATCH read,
        and the first uuid it leaves unsettled."""
        # One checkpoint per partition; other workers' partitions hold a value that lets none of
        # their rows through.
        checkpoints = [MAX_UUID if kind == "batch" else ZERO_UUID] * partitions
        for number, partition in held.items():
            checkpoints[number] = partition.checkpoint
        if kind == "sweep":
            highest = max(partition.checkpoint for partition in held.values())
            # The look-back's window ends at the lowest checkpoint of all partitions (every
            # worker's); without it the window is the zero uuid alone, where no row is.
            lowest_of_all = ZERO_UUID
            if look_back:
                lowest_of_all = await connection.fetchval(sql.LOWEST_CHECKPOINT) or ZERO_UUID
            rows = await connection.fetch(
                sql.FETCH_SWEEP_WITH_LEDGER,
                highest,
                self.sweep_window if look_back else 0.0,
                limit,
                checkpoints,
                partitions,
                lowest_of_all,
            )
            return rows, {number: partition.checkpoint for number, partition in held.items()}
        settled_before, first_unsettled = horizon
        lowest = min(partition.checkpoint for partition in held.values())
        rows = await connection.fetch(
            sql.FETCH_BATCH_WITH_LEDGER, lowest, settled_before, limit, checkpoints, partitions
        )
        # Every unjudged row of these partitions up to `reach` is in `rows` (the scan is in uuid
        # order and stopped by LIMIT), or, when it stopped short, every one below the horizon.
        reach = rows[-1]["uuid"] if len(rows) == limit else UUID(int=first_unsettled.int - 1)
        return rows, {
            number: max(partition.checkpoint, reach) for number, partition in held.items()
        }

    async def _advance_idle(
        self,
        connection: asyncpg.Connection,
        worker_id: str,
        held: Mapping[int, HeldPartition],
        new_checkpoints: Mapping[int, UUID],
    ) -> None:
        """No row to judge: move the checkpoints up to the horizon, at most once a second."""
        now = time.monotonic()
        if now - self._idle_advanced.get(worker_id, 0.0) < IDLE_ADVANCE_SECONDS:
            return
        moved = [p for p in held if new_checkpoints[p] > held[p].checkpoint]
        if moved:
            await connection.execute(
                sql.ADVANCE_CHECKPOINTS, worker_id, moved, [new_checkpoints[p] for p in moved]
            )
        self._idle_advanced[worker_id] = now

    def _write_parameters(
        self,
        verdicts: Sequence[Verdict],
        ledger: BatchLedger,
        *,
        batch_id: UUID,
        worker_id: str,
        newly: Sequence[NewlyForwarded],
        checkpoints: Mapping[int, UUID],
        seqs: Mapping[int, int],
    ) -> list[Any]:
        forwarded = [v.sms for v in verdicts if v.forwarded]
        partitions = sorted(checkpoints)
        return [
            [v.sms.uuid for v in verdicts],
            *(
                [int(v.results.get(name, CheckResult.NOT_RUN)) for v in verdicts]
                for name in self._columns
            ),
            [v.overall_status.value for v in verdicts],
            [v.started_at for v in verdicts],
            [v.completed_at for v in verdicts],
            [v.failed_at_check for v in verdicts],
            batch_id,
            [v.retry_count for v in verdicts],
            [sms.uuid for sms in forwarded],
            [sms.sender_number for sms in forwarded],
            [sms.sms_message for sms in forwarded],
            list(ledger.counted),
            list(ledger.counted.values()),
            list(ledger.newly_blacklisted),
            list(ledger.newly_blacklisted.values()),
            worker_id,
            [f.sender_number for f in newly],
            [f.partition_no for f in newly],
            [f.seq for f in newly],
            [f.first_uuid for f in newly],
            partitions,
            [checkpoints[p] for p in partitions],
            [seqs[p] for p in partitions],
        ]

    async def _write_through(
        self, outcome: BatchOutcome, moves: Mapping[int, tuple[int, int]]
    ) -> tuple[tuple[int, int] | None, bool]:
        """Add the batch's new senders to the set; returns when it ran (None: nothing to add)
        and whether it failed (the partitions' next batches catch up)."""
        if not moves:
            return None, False
        started = time.time_ns()
        settings = outcome.settings
        try:
            client = await self._redis(settings)
            token, partitions = self._identity or ("", 0)
            context = index.IndexContext(self.pool, token, partitions, settings.out_sms_cache_ttl)
            reply = await index.write_through(
                client, context, [f.sender_number for f in outcome.newly_forwarded], moves
            )
        except TRANSIENT_REDIS_ERRORS as exc:
            reply = None
            logger.warning(
                "write-through to redis failed; the next batch catches up",
                extra={"batch_id": str(outcome.batch_id), "error": type(exc).__name__},
            )
        failed = reply is None or reply < 0
        if failed:
            index.WRITE_THROUGH_FAILURES.inc()
        return (started, time.time_ns()), failed

    # ------------------------------------------------------------------ the index
    async def warm_up(self) -> None:
        """At start: make the Redis index trustworthy as a whole (rebuilt when it belongs to
        another database, is of the wrong type, or is ahead of the database) and renew its TTL.
        A partition that is merely behind catches up in its next batch."""
        async with db.transaction(self.pool, readonly=True) as connection:
            settings = await self.store.reload(connection)
            token, partitions = await self._database_identity(connection)
        client = await self._redis(settings)
        # Redis first, then the database: a mark is never ahead of a seq read after it.
        state = await index.read_state(client, [])
        async with db.transaction(self.pool, readonly=True) as connection:
            seqs = {
                row["partition_no"]: row["forwarded_seq"]
                for row in await connection.fetch(sql.PARTITION_SEQS)
            }
        reason = state.needs_rebuild(token, partitions, seqs)
        if reason is not None:
            context = index.IndexContext(self.pool, token, partitions, settings.out_sms_cache_ttl)
            await index.rebuild(client, context, reason=reason)
        await index.renew_ttl(client, settings.out_sms_cache_ttl)

    async def keep_index(self, leases: Leases | None = None) -> None:
        """Repair the index for this worker's partitions even when no SMS arrives, and renew its
        TTL (SPEC §5.4)."""
        worker_id = (leases or self._solo).worker_id
        async with db.transaction(self.pool, isolation="read_committed") as connection:
            rows = await connection.fetch(sql.LOCK_PARTITIONS, worker_id)
            if not rows:
                return
            settings = await self.store.reload(connection)
            token, partitions = await self._database_identity(connection)
            client = await self._redis(settings)
            context = index.IndexContext(self.pool, token, partitions, settings.out_sms_cache_ttl)
            seqs = {row["partition_no"]: row["forwarded_seq"] for row in rows}
            await index.members_for_judgement(connection, client, context, seqs, [])
        await index.renew_ttl(client, settings.out_sms_cache_ttl)

    async def _database_identity(self, connection: asyncpg.Connection) -> tuple[str, int]:
        """The database's token and partition count (fixed while validators run: changing the
        count is an offline operation)."""
        if self._identity is None:
            token = await connection.fetchval(sql.DATABASE_TOKEN)
            partitions = int(await connection.fetchval(sql.PARTITION_COUNT))
            self._identity = (str(token), partitions)
        return self._identity

    async def _redis(self, settings: RuntimeSettings) -> aioredis.Redis:
        """The client for the current `redis_host`/`redis_port` (it has no retries of its own:
        `max_database_retries` with the engine's backoff is the one retry policy, SPEC §6.4)."""
        return await self.redis_link.for_target(settings.redis_host, settings.redis_port)

    def _configuration_problems(
        self, settings: RuntimeSettings, *, partitions: int
    ) -> tuple[str, ...]:
        """What would make an enabled check raise on every SMS, or batches unsafe; the engine
        pauses rather than mark every SMS `error` (logged once per distinct set of problems)."""
        if self._problems_of is not None:
            known_settings, known_partitions = self._problems_of
            if known_settings is settings and known_partitions == partitions:
                return self._reported_problems
        problems: list[str] = []
        if partitions == 0:
            problems.append(
                "validator_partitions has no rows; re-run the migrations (db/init/0008)"
            )
        enabled = [step.name for step in plan(self.checks, settings) if step.enabled]
        problems.extend(
            configuration_problems(settings, self.secrets, enabled, registry=self.checks)
        )
        found = tuple(problems)
        if found != self._reported_problems:
            self._reported_problems = found
            if found:
                logger.error(
                    "checks cannot run with this configuration; claiming no batch",
                    extra={"problems": list(found)},
                )
            else:
                logger.info("check configuration usable again")
        metrics.PAUSED.labels("configuration").set(1 if found else 0)
        self._problems_of = (settings, partitions)
        return found

    @staticmethod
    def _count(outcome: BatchOutcome) -> None:
        """Metrics of a batch: counted in memory first, then one increment per label set (a
        label look-up per SMS and check was a measurable share of a batch's CPU)."""
        metrics.BATCHES.labels(outcome.kind).inc()
        statuses: CounterDict[OverallStatus] = CounterDict()
        results: CounterDict[tuple[str, CheckResult]] = CounterDict()
        for verdict in outcome.verdicts:
            statuses[verdict.overall_status] += 1
            results.update(verdict.results.items())
        for status, count in statuses.items():
            metrics.SMS_JUDGED.labels(status.value).inc(count)
        for (name, result), count in results.items():
            metrics.CHECK_RESULTS.labels(name, result.name.lower()).inc(count)
        if outcome.kind == "sweep":
            metrics.SWEEPER_FOUND.labels("requeued").inc(outcome.requeued)
            missed = outcome.size - outcome.requeued
            if missed:
                metrics.SWEEPER_FOUND.labels("missed").inc(missed)
                logger.error(
                    "sweeper found committed SMS below the checkpoint without a "
                    "result, processed them",
                    extra={"count": missed},
                )


def _newly_forwarded(
    verdicts: Sequence[Verdict],
    already: frozenset[str],
    partition_of: Mapping[str, int],
    seqs: Mapping[int, int],
) -> list[NewlyForwarded]:
    """The senders forwarded for the first time in this batch, numbered per partition in uuid
    order after the partition's forwarded_seq."""
    next_seq = dict(seqs)
    seen = set(already)
    newly: list[NewlyForwarded] = []
    for verdict in verdicts:
        sender = verdict.sms.sender_number
        if verdict.forwarded and sender not in seen:
            seen.add(sender)
            partition = partition_of[sender]
            next_seq[partition] += 1
            newly.append(NewlyForwarded(sender, partition, next_seq[partition], verdict.sms.uuid))
    return newly
