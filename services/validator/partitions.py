"""Leases on partitions: which worker judges which senders (docs/architecture.md, "Partitions").

Every batch worker of every validator process and host is a member of one group, kept in
PostgreSQL (pgbouncer's transaction mode allows no session advisory lock, and a lease row with an
expiry also says who holds what). A worker renews its membership and its leases every
`HEARTBEAT_SECONDS`; a lease not renewed within `LEASE_SECONDS` (a killed process, a host cut
off) may be taken by any other worker. Each worker holds a fair share: the live workers, in the
order of their ids, hold floor(partitions / workers) each, and the first `partitions % workers`
of them one more, so the shares add up to the partitions exactly. Above its share a worker gives
partitions back between its own batches; below it, it takes free or expired ones.

A hand-over must be quick, or a worker that joins a backlog idles while another judges its
share alone, and the partitions handed over late stay behind to the end of the backlog. Every
batch learns how many workers are alive (with its partitions' locks), and a worker that holds
more than its share gives the surplus back right after that batch; a worker below its share
that found nothing free asks again after `CLAIM_RETRY_SECONDS`, not a whole heartbeat later. So
a worker that joins holds its share within a few batches, and a killed worker's partitions are
taken over within about `LEASE_SECONDS`.

A lease alone does not make judging safe: a worker that stalled past its lease may wake up
after another took over. Every batch therefore locks its partitions' rows `FOR UPDATE WHERE
owner = me` and writes their checkpoints under that lock; a taken-over partition is simply not
among the rows it locks. Taking over skips rows locked by a batch in flight.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from typing import Final

import asyncpg
from prometheus_client import Counter, Gauge

from services.validator import sql
from sms_gateway import db

logger = logging.getLogger(__name__)

LEASE_SECONDS: Final = 6.0
HEARTBEAT_SECONDS: Final = 1.5
CLAIM_RETRY_SECONDS: Final = 0.2

PARTITIONS_HELD = Gauge(
    "sms_validator_partitions_held",
    "Partitions whose lease this process's workers hold.",
    multiprocess_mode="livesum",
)
LEASE_CHANGES = Counter(
    "sms_validator_partition_lease_changes_total",
    "Partitions taken (free, released or expired) or given back by this process's workers.",
    ["change"],
)


def fair_share(partitions: int, workers: int, rank: int) -> int:
    """The partitions the live worker of this rank (0 = the lowest id) should hold."""
    if workers <= 0:
        return partitions
    share, rest = divmod(partitions, workers)
    return share + (1 if rank < rest else 0)


def new_worker_id(number: int) -> str:
    """host/pid/worker/random: unique even when two containers run as pid 1 on one host name."""
    return f"{socket.gethostname()}/{os.getpid()}/{number}/{secrets.token_hex(3)}"


class Leases:
    """One worker's membership and the partitions it holds."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        worker_id: str,
        *,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.held: frozenset[int] = frozenset()
        self._partitions = 0
        self._next_heartbeat = 0.0

    @property
    def due(self) -> bool:
        return time.monotonic() >= self._next_heartbeat

    async def heartbeat(self) -> frozenset[int]:
        """Renew, then take or give partitions to hold a fair share; returns what is held."""
        async with db.transaction(self.pool) as connection:
            row = await connection.fetchrow(sql.HEARTBEAT, self.worker_id, self.lease_seconds)
            assert row is not None
            workers, partitions = int(row["workers"]), int(row["partitions"])
            held = list(row["held"])
            share = fair_share(partitions, workers, int(row["rank"]))
            if len(held) > share:
                given = held[share:]
                await connection.execute(sql.RELEASE_PARTITIONS, self.worker_id, given)
                held = held[:share]
                LEASE_CHANGES.labels("given").inc(len(given))
            elif len(held) < share:
                taken = [
                    r["partition_no"]
                    for r in await connection.fetch(
                        sql.CLAIM_PARTITIONS, self.worker_id, self.lease_seconds, share - len(held)
                    )
                ]
                held.extend(taken)
                LEASE_CHANGES.labels("taken").inc(len(taken))
        self._partitions = partitions
        # Short of its share, nothing was free: the workers above theirs give the surplus back
        # after their current batch, so ask again soon.
        wait = self.heartbeat_seconds
        if len(held) < share:
            wait = min(wait, CLAIM_RETRY_SECONDS)
        self._next_heartbeat = time.monotonic() + wait
        now_held = frozenset(held)
        if now_held != self.held:
            PARTITIONS_HELD.inc(len(now_held) - len(self.held))
            logger.info(
                "partitions held changed",
                extra={
                    "worker": self.worker_id,
                    "held": sorted(now_held),
                    "workers": workers,
                    "partitions": partitions,
                },
            )
        self.held = now_held
        return now_held

    def count_workers(self, workers: int, rank: int) -> None:
        """A batch saw `workers` live workers, this one `rank`th by id: above its fair share,
        hand the surplus over now (at the next heartbeat, before the next batch)."""
        if self._partitions and len(self.held) > fair_share(self._partitions, workers, rank):
            self._next_heartbeat = 0.0

    def lost(self, partitions: frozenset[int]) -> None:
        """A batch found these no longer ours (taken over while this worker stalled)."""
        if partitions & self.held:
            logger.warning(
                "partitions were taken over by another worker",
                extra={"worker": self.worker_id, "partitions": sorted(partitions & self.held)},
            )
            PARTITIONS_HELD.dec(len(partitions & self.held))
            self.held -= partitions

    async def leave(self) -> None:
        """Give every partition back at once (a clean stop), so others need not wait out the
        lease."""
        async with db.transaction(self.pool) as connection:
            await connection.execute(sql.RELEASE_PARTITIONS, self.worker_id, sorted(self.held))
            await connection.execute(sql.FORGET_WORKER, self.worker_id)
            await connection.execute(sql.FORGET_EXPIRED_WORKERS)
        PARTITIONS_HELD.dec(len(self.held))
        self.held = frozenset()
