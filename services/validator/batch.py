"""One batch (or sweep) as one transaction: claim, judge, write, commit; then the write-through.

BEGIN (read committed)
  lock the checkpoint row               serialises every batch of every validator process
  reload the settings                   a change takes effect within one batch
  settle horizon, then the rows         nothing below the checkpoint can still appear
  ledger: counters, blacklist, max(seq) locked rows, one statement
  Redis: marker + SMISMEMBER            repaired first if not provably complete
  judge in memory, in uuid order        checks/, pure
  one write statement                   sms_monitor, out_sms, count_sms, blacklist_sms,
                                        the checkpoint
COMMIT
Redis write-through (Lua: SADD, marker, TTL)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from uuid import UUID, uuid4

import asyncpg
import redis.asyncio as aioredis

from checks import configuration_problems
from checks.base import Check, CheckResult, CheckSecrets, SmsToJudge
from services.validator import index, metrics, sql
from services.validator.errors import DoubleJudgementError
from services.validator.ledger import BatchLedger
from services.validator.pipeline import Verdict, judge_batch, plan
from services.validator.tracing import emit_spans
from sms_gateway import db
from sms_gateway.logging import set_level
from sms_gateway.redis import TRANSIENT_REDIS_ERRORS, RedisLink
from sms_gateway.settings import RuntimeSettings, SettingsStore

logger = logging.getLogger(__name__)

Kind = Literal["batch", "sweep"]
Paused = Literal["maintenance", "configuration"]

# How long after its uuid's instant a row is left to settle, on top of the open transactions
# (see sql.SETTLE_HORIZON).
DEFAULT_SETTLE_MARGIN: Final = 0.5
# How far below the checkpoint the sweeper looks for rows without a result, in seconds of uuid
# time.
DEFAULT_SWEEP_WINDOW: Final = 60.0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    kind: Kind
    settings: RuntimeSettings
    batch_id: UUID | None = None
    verdicts: Sequence[Verdict] = ()
    requeued: int = 0
    paused: Paused | None = None
    forwarded_senders: Sequence[str] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        return len(self.verdicts)


class BatchRunner:
    """Runs batches and sweeps against one database and the Redis index."""

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

    async def run(self, kind: Kind) -> BatchOutcome:
        started = time.perf_counter()
        async with db.transaction(self.pool, isolation="read_committed") as connection:
            outcome, write_ns, seqs = await self._in_transaction(connection, kind)
        if outcome.size == 0:
            return outcome
        metrics.BATCH_SECONDS.labels(kind).observe(time.perf_counter() - started)
        redis_ns = await self._write_through(outcome, seqs)
        self._count(outcome)
        if self.tracing and outcome.batch_id is not None:
            emit_spans(
                outcome.verdicts, batch_id=outcome.batch_id, write_ns=write_ns, redis_ns=redis_ns
            )
        return outcome

    async def warm_up(self) -> None:
        """Make the Redis index complete and renew its TTL (at start; SPEC §5.4)."""
        async with db.transaction(self.pool, isolation="read_committed") as connection:
            if await connection.fetchval(sql.LOCK_CHECKPOINT) is None:
                return  # no lock to repair under; batches are paused until the row is back
            settings = await self.store.reload(connection)
            set_level(settings.log_level)
            max_seq = int(await connection.fetchval(sql.MAX_SEQ))
            client = await self._redis(settings)
            await index.members_for_judgement(
                connection, client, [], max_seq=max_seq, ttl=settings.out_sms_cache_ttl
            )
            await index.renew_ttl(client, settings.out_sms_cache_ttl)

    async def _in_transaction(
        self, connection: asyncpg.Connection, kind: Kind
    ) -> tuple[BatchOutcome, tuple[int, int], tuple[int, int]]:
        locked = await connection.fetchval(sql.LOCK_CHECKPOINT) is not None
        settings = await self.store.reload(connection)
        set_level(settings.log_level)
        nothing = ((0, 0), (0, 0))
        if settings.maintenance_mode:
            return BatchOutcome(kind, settings, paused="maintenance"), *nothing
        if self._configuration_problems(settings, checkpoint_locked=locked):
            return BatchOutcome(kind, settings, paused="configuration"), *nothing
        # Read under the lock through the settings store: a value that is not a uuid keeps this
        # process's last good one (SPEC §3), which is never above the true checkpoint, and a
        # lower checkpoint is safe: judged rows are never fetched again. The batch's write
        # then replaces the bad text.
        checkpoint = settings.last_processed_uuid

        if kind == "batch":
            settled_before = await connection.fetchval(sql.SETTLE_HORIZON, self.settle_margin)
            rows = await connection.fetch(
                sql.FETCH_BATCH, checkpoint, settled_before, settings.batch_size
            )
        else:
            rows = await connection.fetch(
                sql.FETCH_SWEEP, checkpoint, self.sweep_window, settings.batch_size
            )
        if not rows:
            return BatchOutcome(kind, settings), *nothing

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
        senders = list(dict.fromkeys(sms.sender_number for sms in batch))
        counts: dict[str, int] = {}
        blacklisted: list[str] = []
        max_seq = 0
        for row in await connection.fetch(sql.LOAD_LEDGER, senders):
            if row["kind"] == "count":
                counts[row["sender_number"]] = int(row["value"])
            elif row["kind"] == "blacklisted":
                blacklisted.append(row["sender_number"])
            else:
                max_seq = int(row["value"])
        client = await self._redis(settings)
        forwarded = await index.members_for_judgement(
            connection, client, senders, max_seq=max_seq, ttl=settings.out_sms_cache_ttl
        )
        ledger = BatchLedger.load(
            senders, counts=counts, blacklisted=blacklisted, forwarded=forwarded
        )

        batch_id = uuid4()
        verdicts = judge_batch(
            batch,
            checks=self.checks,
            settings=settings,
            secrets=self.secrets,
            ledger=ledger,
            batch_id=batch_id,
            trace_runs=self.tracing,
        )
        new_checkpoint = batch[-1].uuid if kind == "batch" else None
        write_started = time.time_ns()
        written = await connection.fetchrow(
            sql.write_statement(self._columns),
            *self._write_parameters(verdicts, ledger, batch_id, new_checkpoint),
        )
        write_ns = (write_started, time.time_ns())
        assert written is not None
        if written["judged"] != len(verdicts):
            raise DoubleJudgementError(
                f"batch {batch_id}: {len(verdicts) - written['judged']} of {len(verdicts)} SMS "
                "already had a final result; rolled back"
            )
        new_seq = max(max_seq, int(written["max_seq"]))
        forwarded_senders = [v.sms.sender_number for v in verdicts if v.forwarded]
        requeued = sum(1 for row in rows if kind == "sweep" and row["requeued"])
        outcome = BatchOutcome(
            kind,
            settings,
            batch_id,
            verdicts,
            requeued=requeued,
            forwarded_senders=forwarded_senders,
        )
        return outcome, write_ns, (max_seq, new_seq)

    def _write_parameters(
        self,
        verdicts: Sequence[Verdict],
        ledger: BatchLedger,
        batch_id: UUID,
        new_checkpoint: UUID | None,
    ) -> list[Any]:
        forwarded = [v.sms for v in verdicts if v.forwarded]
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
            [batch_id] * len(verdicts),
            [v.retry_count for v in verdicts],
            [sms.uuid for sms in forwarded],
            [sms.sender_number for sms in forwarded],
            [sms.sms_message for sms in forwarded],
            list(ledger.counted),
            list(ledger.counted.values()),
            list(ledger.newly_blacklisted),
            list(ledger.newly_blacklisted.values()),
            str(new_checkpoint) if new_checkpoint is not None else None,
        ]

    async def _write_through(
        self, outcome: BatchOutcome, seqs: tuple[int, int]
    ) -> tuple[int, int] | None:
        previous_seq, new_seq = seqs
        if new_seq == previous_seq:
            return None
        started = time.time_ns()
        settings = outcome.settings
        try:
            client = await self._redis(settings)
            reply = await index.write_through(
                client,
                outcome.forwarded_senders,
                previous_seq=previous_seq,
                new_seq=new_seq,
                ttl=settings.out_sms_cache_ttl,
            )
        except TRANSIENT_REDIS_ERRORS as exc:
            reply = None
            logger.warning(
                "write-through to redis failed; the next batch catches up",
                extra={"batch_id": str(outcome.batch_id), "error": type(exc).__name__},
            )
        if reply is None or reply < 0:
            index.WRITE_THROUGH_FAILURES.inc()
        return started, time.time_ns()

    async def _redis(self, settings: RuntimeSettings) -> aioredis.Redis:
        """The client for the current `redis_host`/`redis_port` (it has no retries of its own:
        `max_database_retries` with the engine's backoff is the one retry policy, SPEC §6.4)."""
        return await self.redis_link.for_target(settings.redis_host, settings.redis_port)

    def _configuration_problems(
        self, settings: RuntimeSettings, *, checkpoint_locked: bool
    ) -> tuple[str, ...]:
        """What would make an enabled check raise on every SMS, or batches unsafe; the engine
        pauses rather than mark every SMS `error` (logged once per distinct set of problems)."""
        problems: list[str] = []
        if not checkpoint_locked:
            problems.append(
                "system_settings has no last_processed_uuid row, the lock that "
                "serialises batches; restore it (all zeros is safe)"
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
        return found

    @staticmethod
    def _count(outcome: BatchOutcome) -> None:
        metrics.BATCHES.labels(outcome.kind).inc()
        for verdict in outcome.verdicts:
            metrics.SMS_JUDGED.labels(verdict.overall_status.value).inc()
            for name, result in verdict.results.items():
                metrics.CHECK_RESULTS.labels(name, result.name.lower()).inc()
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
