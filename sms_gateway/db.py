"""PostgreSQL access through pgbouncer in transaction pooling mode.

pgbouncer 1.18 (Debian 12) hands a server connection to a client for one transaction only, and
it cannot track prepared statements. So, deliberately:

* `statement_cache_size=0`: asyncpg never creates named prepared statements.
* Every statement runs inside an explicit transaction (`transaction()`). asyncpg still prepares
  each query as the unnamed statement, in two exchanges (Parse/Describe/Sync, then
  Bind/Execute/Sync); outside a transaction pgbouncer may hand the second exchange to another
  server connection, where the unnamed statement does not exist. Inside BEGIN ... COMMIT the
  server connection is pinned.
* No session state: no `SET` (use `SET LOCAL` or role defaults), no `LISTEN`, no session
  advisory locks; transaction-scoped advisory locks are fine.
* So nothing to reset when a connection returns to the pool: asyncpg's default reset
  (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) would cost one more round trip
  and statement per transaction, on whichever server connection pgbouncer lends it, which is
  not the one the transaction used anyway. The pool keeps only asyncpg's local clean-up (and its
  ROLLBACK of a transaction left open).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg

# What is worth waiting out, by SQLSTATE class through asyncpg's exception classes (a message is
# never parsed): the database, pgbouncer or the network is unwell, not our SQL. Everything else
# (a constraint, a type, a syntax error, a permission) is a bug or bad data and passes through.
TRANSIENT_DB_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,  # refused or reset connections
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,  # e.g. the connection was closed under us
    # 08: connection exceptions, including pgbouncer's own refusals (08P01).
    asyncpg.exceptions.PostgresConnectionError,
    # 25006: a read-only transaction, what a failover to a standby behind pgbouncer looks like
    # (or default_transaction_read_only during maintenance).
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # 40001, 40P01: the transaction lost a race; running it again is the documented remedy.
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # 53: insufficient resources (disk full, out of memory, too many connections).
    asyncpg.exceptions.InsufficientResourcesError,
    # 57014 and 57P*: a cancelled statement (statement_timeout, pgbouncer's query_timeout),
    # a shutdown, a crash, a server not yet accepting connections, an idle session closed.
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.DatabaseDroppedError,
    asyncpg.exceptions.IdleSessionTimeoutError,
)


Connection = asyncpg.Connection
Pool = asyncpg.Pool


async def _no_session_state(connection: asyncpg.Connection) -> None:
    """The pool's reset: there is no session state behind pgbouncer (see the module docstring)."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 8,
    command_timeout: float = 10.0,
    **kwargs: Any,
) -> asyncpg.Pool:
    """A pool that is safe behind pgbouncer's transaction mode (see the module docstring)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        statement_cache_size=0,
        max_cached_statement_lifetime=0,
        # pgbouncer may close idle server links; do not keep client links forever either.
        max_inactive_connection_lifetime=60.0,
        reset=_no_session_state,
        **kwargs,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def transaction(pool: asyncpg.Pool, **options: Any) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside an explicit transaction: the only way the services run SQL."""
    async with pool.acquire() as connection, connection.transaction(**options):
        yield connection


async def close_pool(pool: asyncpg.Pool, *, grace: float = 10.0) -> None:
    """Close gracefully, then terminate whatever is still busy after `grace` seconds."""
    try:
        await asyncio.wait_for(pool.close(), grace)
    except TimeoutError:
        pool.terminate()


async def is_ready(pool: asyncpg.Pool, *, writable: bool = False) -> bool:
    """The database answers through pgbouncer; with `writable`, it also takes writes (a
    standby after a failover, or default_transaction_read_only, answers but refuses them)."""
    try:
        async with transaction(pool, readonly=not writable) as connection:
            if writable:
                return bool(
                    await connection.fetchval(
                        "SELECT current_setting('transaction_read_only') = 'off'"
                    )
                )
            return bool(await connection.fetchval("SELECT true"))
    except TRANSIENT_DB_ERRORS:
        return False
