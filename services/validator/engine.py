"""The engine: batch workers and the sweeper as background tasks with an owned lifecycle.

Every worker runs batch after batch; they all serialise on the checkpoint row lock, so any
number of workers and processes give exactly the result of one (SPEC §6.1; docs/architecture.md
says why this simple scheme and what it costs). A transient fault (PostgreSQL, pgbouncer,
Redis) is retried with backoff and jitter up to `max_database_retries`, then the batch is
retried later: the engine never exits on weather. Anything else is a bug: the task dies, and
`run` re-raises it so that the process stops loudly instead of staying half-alive.

`stop()` lets the batch in flight finish (or, after the grace period, cancels it, which rolls
its transaction back), then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import asyncpg

from checks.base import Check, CheckSecrets
from services.validator import metrics, sql
from services.validator.batch import (
    DEFAULT_SETTLE_MARGIN,
    DEFAULT_SWEEP_WINDOW,
    BatchOutcome,
    BatchRunner,
    Kind,
)
from services.validator.errors import HorizonUnsafeError, IndexIncompleteError
from sms_gateway import db
from sms_gateway.db import TRANSIENT_DB_ERRORS
from sms_gateway.errors import RetriesExhaustedError
from sms_gateway.redis import TRANSIENT_REDIS_ERRORS, RedisLink
from sms_gateway.retry import backoff_delay, retry_transient
from sms_gateway.settings import SettingsStore

logger = logging.getLogger(__name__)

TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    *TRANSIENT_DB_ERRORS,
    *TRANSIENT_REDIS_ERRORS,
    IndexIncompleteError,
)
BACKLOG_CAP: Final = 1_000_000


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
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        """Warm-up done: the engine is claiming batches (or paused by the settings)."""
        return self._started.is_set()

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Run until `stop()`; raises if a background task died of a bug."""
        await self._start()
        if self._stopping.is_set():
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._supervise_workers(group), name="validator-workers")
            group.create_task(self._sweep_forever(), name="validator-sweeper")

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
                logger.warning(
                    "cannot start yet, retrying",
                    extra={"error": type(exc).__name__, "delay_s": round(delay, 3)},
                )
                await self._sleep(delay)
                continue
            self._started.set()
            logger.info("validator engine started")
            return

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ------------------------------------------------------------------ workers
    async def _supervise_workers(self, group: asyncio.TaskGroup) -> None:
        """Keep `parallel_workers` workers; a worker above the current number idles."""
        while not self._stopping.is_set():
            wanted = self.store.current.parallel_workers
            while len(self._workers) < wanted:
                number = len(self._workers)
                self._workers.append(
                    group.create_task(self._work(number), name=f"validator-worker-{number}")
                )
            await self._sleep(self.poll_interval * 5)

    async def _work(self, number: int) -> None:
        while not self._stopping.is_set():
            if number >= self.store.current.parallel_workers:
                await self._sleep(self.poll_interval * 5)
                continue
            outcome = await self._attempt("batch")
            if outcome is None:
                continue
            if outcome.paused is not None:
                await self._sleep(self.poll_interval * 5)
            elif outcome.size < outcome.settings.batch_size:
                # Caught up with the settle horizon: poll again shortly.
                await self._sleep(self.poll_interval)

    async def _attempt(self, kind: Kind) -> BatchOutcome | None:
        """One batch with retries; None when it was given up (it is retried later)."""
        retries = self.store.current.max_database_retries
        try:
            outcome = await retry_transient(
                f"validator {kind}",
                lambda: self.runner.run(kind),
                retries=retries,
                transient=TRANSIENT,
            )
        except RetriesExhaustedError as exc:
            metrics.BATCH_FAILURES.labels(kind).inc()
            logger.error(  # noqa: TRY400
                "%s failed after retries; retrying later",
                kind,
                extra={"error": str(exc), "cause": type(exc.__cause__).__name__},
            )
            await self._sleep(backoff_delay(retries + 2, cap=10.0) + 1.0)
            return None
        metrics.PAUSED.labels("maintenance").set(1 if outcome.paused == "maintenance" else 0)
        return outcome

    # ------------------------------------------------------------------ sweeper
    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.sweep_interval)
            if self._stopping.is_set():
                return
            outcome = await self._attempt("sweep")
            while (
                outcome is not None
                and not self._stopping.is_set()
                and outcome.size == outcome.settings.batch_size
            ):
                outcome = await self._attempt("sweep")
            await self._keep_index()
            await self._measure_backlog()

    async def _keep_index(self) -> None:
        """Repair the Redis index even when no SMS arrives, and renew its TTL (SPEC §5.4)."""
        try:
            await retry_transient(
                "validator index",
                self.runner.warm_up,
                retries=self.store.current.max_database_retries,
                transient=TRANSIENT,
            )
        except RetriesExhaustedError as exc:
            logger.warning(
                "cannot check the redis index; the next batch will", extra={"error": str(exc)}
            )

    async def _measure_backlog(self) -> None:
        # The checkpoint as the last batch read it (a bad stored value was refused there).
        checkpoint = self.store.current.last_processed_uuid
        try:
            async with db.transaction(self.pool, readonly=True) as connection:
                size, oldest = await connection.fetchrow(sql.BACKLOG, checkpoint, BACKLOG_CAP)
        except TRANSIENT as exc:
            logger.warning("cannot measure the backlog", extra={"error": type(exc).__name__})
            return
        metrics.BACKLOG_SIZE.set(size)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        metrics.BACKLOG_AGE.set(max(0.0, age))
