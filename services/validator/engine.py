"""The engine: batch workers on leased partitions, and the process's upkeep, as background tasks
with an owned lifecycle.

Each of the `parallel_workers` workers of a process is a member of the validators' group
(services/validator/partitions.py): it holds a fair share of the partitions by lease and runs
batch after batch over them, independently of every other worker of this and every other
process, since partitions share no sender (SPEC §6.1, §6.3). Between batches it renews its
leases, sweeps its partitions (requeued SMS) and checks the Redis index for them. Once per
`sweep_interval` the process publishes `last_processed_uuid` (the smallest partition checkpoint)
and measures the backlog, and once per `lifecycle_interval` it looks after the time partitions
of the SMS tables (services/validator/lifecycle.py: made ahead, dropped after the retention).

A transient fault (PostgreSQL, pgbouncer, Redis) is retried with backoff and jitter up to
`max_database_retries`, then the batch is retried later: the engine never exits on weather, and
`/ready` and `sms_validator_waiting` say while it waits. Anything else is a bug: the task dies,
and `run` re-raises it so that the process stops loudly instead of staying half-alive.

`stop()` lets the batch in flight finish (or, after the grace period, cancels it, which rolls its
transaction back), gives the partitions back so that other processes take them at once, and
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import asyncpg

from checks.base import Check, CheckSecrets
from services.validator import lifecycle, metrics, sql
from services.validator.batch import (
    DEFAULT_SETTLE_MARGIN,
    DEFAULT_SWEEP_WINDOW,
    BatchOutcome,
    BatchRunner,
    Kind,
)
from services.validator.errors import HorizonUnsafeError, IndexIncompleteError
from services.validator.partitions import HEARTBEAT_SECONDS, LEASE_SECONDS, Leases, new_worker_id
from sms_gateway import db
from sms_gateway.db import TRANSIENT_DB_ERRORS
from sms_gateway.errors import RetriesExhaustedError
from sms_gateway.redis import TRANSIENT_REDIS_ERRORS, RedisLink
from sms_gateway.retry import backoff_delay, retry_transient
from sms_gateway.settings import SettingsStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    *TRANSIENT_DB_ERRORS,
    *TRANSIENT_REDIS_ERRORS,
    IndexIncompleteError,
)
# The backlog gauge counts rows after the checkpoint up to this many, as GET /stats does: an
# index-only scan of the cap's rows, in every process every 5 s (a million took 0.3-1 s of
# PostgreSQL's CPU each time behind a backlog of millions).
BACKLOG_CAP: Final = 100_000
# The sweep's look-back for rows missed below the checkpoints (a range scan of
# `sweep_window` seconds of rows, which the horizon makes impossible to find anything in) runs
# on every this-many sweeps; requeued SMS are looked for on every sweep.
LOOK_BACK_EVERY: Final = 12
LIFECYCLE_INTERVAL: Final = 60.0


class Engine:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis_link: RedisLink,
        checks: Mapping[str, Check],
        secrets: CheckSecrets,
        *,
        tracing: bool = False,
        poll_interval: float = 0.1,
        sweep_interval: float = 5.0,
        settle_margin: float = DEFAULT_SETTLE_MARGIN,
        sweep_window: float = DEFAULT_SWEEP_WINDOW,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        lifecycle_interval: float = LIFECYCLE_INTERVAL,
        archive_dir: Path | None = None,
    ) -> None:
        self.pool = pool
        self.store = SettingsStore(known_checks=checks)
        self.runner = BatchRunner(
            pool,
            redis_link,
            checks,
            secrets,
            self.store,
            settle_margin=settle_margin,
            sweep_window=sweep_window,
            tracing=tracing,
        )
        self.poll_interval = poll_interval
        self.sweep_interval = sweep_interval
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.lifecycle_interval = lifecycle_interval
        self.keeper = lifecycle.PartitionKeeper(pool, archive_dir)
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        # The transient fault the engine is waiting out, by the operation that met it.
        self._waiting: dict[str, str] = {}

    @property
    def started(self) -> bool:
        """Warm-up done: the engine is claiming batches (or paused by the settings)."""
        return self._started.is_set()

    @property
    def waiting(self) -> Mapping[str, str]:
        """Operations currently failing on a transient fault, and the fault: empty when all is
        well."""
        return dict(self._waiting)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Run until `stop()`; raises if a background task died of a bug."""
        await self._start()
        if self._stopping.is_set():
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._supervise_workers(group), name="validator-workers")
            group.create_task(self._upkeep_forever(), name="validator-upkeep")

    async def stop(self) -> None:
        self._stopping.set()

    async def _start(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                async with db.transaction(self.pool, readonly=True) as connection:
                    if not await connection.fetchval(sql.CAN_SEE_OTHER_SESSIONS):
                        raise HorizonUnsafeError
                await self.runner.warm_up()
            except TRANSIENT as exc:
                delay = backoff_delay(attempt)
                attempt = min(attempt + 1, 10)
                self._note_waiting("start", exc)
                logger.warning(
                    "cannot start yet, retrying",
                    extra={"error": type(exc).__name__, "delay_s": round(delay, 3)},
                )
                await self._sleep(delay)
                continue
            self._note_waiting("start", None)
            self._started.set()
            logger.info("validator engine started")
            return

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _note_waiting(self, operation: str, fault: BaseException | None) -> None:
        if fault is None:
            if self._waiting.pop(operation, None) is not None:
                logger.info("recovered", extra={"operation": operation})
        else:
            self._waiting[operation] = type(fault).__name__
        metrics.WAITING.set(1 if self._waiting else 0)

    # ------------------------------------------------------------------ workers
    async def _supervise_workers(self, group: asyncio.TaskGroup) -> None:
        """Keep `parallel_workers` workers; a worker above the current number gives its
        partitions back and idles."""
        while not self._stopping.is_set():
            wanted = self.store.current.parallel_workers
            while len(self._workers) < wanted:
                number = len(self._workers)
                self._workers.append(
                    group.create_task(self._work(number), name=f"validator-worker-{number}")
                )
            await self._sleep(self.poll_interval * 5)

    async def _work(self, number: int) -> None:
        leases = Leases(
            self.pool,
            new_worker_id(number),
            lease_seconds=self.lease_seconds,
            heartbeat_seconds=self.heartbeat_seconds,
        )
        next_sweep = time.monotonic() + self.sweep_interval
        sweeps = 0
        try:
            while not self._stopping.is_set():
                if number >= self.store.current.parallel_workers:
                    if leases.held:
                        await self._attempt("leave", leases.leave)
                    await self._sleep(self.poll_interval * 5)
                    continue
                if leases.due and await self._attempt("leases", leases.heartbeat) is None:
                    continue
                if not leases.held:
                    await self._sleep(self.poll_interval * 5)
                    continue
                if time.monotonic() >= next_sweep:
                    await self._sweep(leases, look_back=sweeps % LOOK_BACK_EVERY == 0)
                    sweeps += 1
                    next_sweep = time.monotonic() + self.sweep_interval
                    continue
                outcome = await self._batch("batch", leases)
                if outcome is None:
                    continue
                if outcome.paused is not None:
                    await self._sleep(self.poll_interval * 5)
                elif outcome.size < outcome.settings.batch_size:
                    # Caught up with the settle horizon: poll again shortly.
                    await self._sleep(self.poll_interval)
        finally:
            if leases.held:
                # A clean stop gives the partitions back at once; after a crash their leases
                # run out instead.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(leases.leave()), 5.0)

    async def _batch(
        self, kind: Kind, leases: Leases, *, look_back: bool = False
    ) -> BatchOutcome | None:
        outcome = await self._attempt(
            kind, lambda: self.runner.run(kind, leases, look_back=look_back)
        )
        if outcome is None:
            metrics.BATCH_FAILURES.labels(kind).inc()
            return None
        metrics.PAUSED.labels("maintenance").set(1 if outcome.paused == "maintenance" else 0)
        return outcome

    async def _attempt(self, operation: str, action: Callable[[], Awaitable[T]]) -> T | None:
        """`action` with retries; None when it was given up (it is tried again later)."""
        retries = self.store.current.max_database_retries
        try:
            result = await retry_transient(
                f"validator {operation}", action, retries=retries, transient=TRANSIENT
            )
        except RetriesExhaustedError as exc:
            self._note_waiting(operation, exc.__cause__ or exc)
            logger.error(  # noqa: TRY400 (a transient fault: no traceback wanted)
                "%s failed after retries; retrying later",
                operation,
                extra={"error": str(exc), "cause": type(exc.__cause__).__name__},
            )
            await self._sleep(backoff_delay(retries + 2, cap=10.0) + 1.0)
            return None
        self._note_waiting(operation, None)
        return result

    async def _sweep(self, leases: Leases, *, look_back: bool) -> None:
        """Requeued SMS of this worker's partitions (and now and then rows missed below their
        checkpoints), then the Redis index for them."""
        outcome = await self._batch("sweep", leases, look_back=look_back)
        while (
            outcome is not None
            and not self._stopping.is_set()
            and outcome.size == outcome.settings.batch_size
        ):
            outcome = await self._batch("sweep", leases, look_back=look_back)
        await self._attempt("index", lambda: self.runner.keep_index(leases))

    # ------------------------------------------------------------------ upkeep
    async def _upkeep_forever(self) -> None:
        next_lifecycle = time.monotonic()  # at once: a fresh deployment gets its partitions
        while not self._stopping.is_set():
            if time.monotonic() >= next_lifecycle:
                await self._keep_partitions()
                next_lifecycle = time.monotonic() + self.lifecycle_interval
            await self._sleep(self.sweep_interval)
            if self._stopping.is_set():
                return
            await self._publish_and_measure()

    async def _keep_partitions(self) -> None:
        """Time partition upkeep with the retention read now. Retention deletes data, so it acts
        only on a value the table holds and accepts: a missing row or a refused value (the
        store would stand in the default or the last good value) keeps every day."""
        try:
            async with db.transaction(self.pool, readonly=True) as connection:
                settings = await self.store.reload(connection)
        except TRANSIENT as exc:
            logger.warning("time partition upkeep postponed", extra={"error": type(exc).__name__})
            return
        retention_days = settings.retention_days
        if retention_days and not self.store.holds_valid("retention_days"):
            logger.error(
                "retention_days is missing or refused in system_settings: no day is dropped "
                "until it holds a valid value"
            )
            retention_days = 0
        await self.keeper.run(retention_days)

    async def _publish_and_measure(self) -> None:
        """Publish `last_processed_uuid` (SPEC §6.3) and measure the backlog behind it."""
        try:
            async with db.transaction(self.pool) as connection:
                await connection.execute(sql.PUBLISH_CHECKPOINT)
                partitions = await connection.fetch(sql.PARTITION_STATES)
                checkpoint = await connection.fetchval(sql.LOWEST_CHECKPOINT)
                if checkpoint is None:
                    return
                size, oldest = await connection.fetchrow(sql.BACKLOG, checkpoint, BACKLOG_CAP)
        except TRANSIENT as exc:
            logger.warning("cannot measure the backlog", extra={"error": type(exc).__name__})
            return
        for row in partitions:
            metrics.PARTITION_LAG.labels(str(row["partition_no"])).set(float(row["lag_seconds"]))
        metrics.PARTITIONS_UNHELD.set(sum(1 for row in partitions if not row["held"]))
        metrics.BACKLOG_SIZE.set(size)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        metrics.BACKLOG_AGE.set(max(0.0, age))
