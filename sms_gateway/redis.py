"""Redis access. Where Redis is comes from the settings (redis_host, redis_port), so the client
is rebuilt when they change; the password and database number come from the environment."""

from __future__ import annotations

import logging
from typing import Any, Final

import redis.asyncio as aioredis
import redis.exceptions
from redis._parsers import _AsyncHiredisParser
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer

logger = logging.getLogger(__name__)


class RedisMisconfiguredError(redis.exceptions.ResponseError):
    """MISCONF: Redis refuses writes because its last snapshot failed (a full or read-only
    disk); it accepts them again once a snapshot succeeds."""


class RedisBusyError(redis.exceptions.ResponseError):
    """BUSY: a script or function has run past busy-reply-threshold; Redis answers again once
    it ends or is killed."""


class _GatewayParser(_AsyncHiredisParser):
    """redis-py's hiredis parser (replies parsed in C: a batch's SMISMEMBER answers a thousand
    members), plus the two error kinds redis-py has no class for (MISCONF, BUSY), so that every
    Redis outage is told apart by its class, as redis-py does for OOM, READONLY and LOADING: the
    kind is the reply's first word, the protocol's equivalent of a SQLSTATE."""

    EXCEPTION_CLASSES = {  # noqa: RUF012 (redis-py's own class attribute)
        **_AsyncHiredisParser.EXCEPTION_CLASSES,
        "MISCONF": RedisMisconfiguredError,
        "BUSY": RedisBusyError,
    }


class _GatewayConnection(aioredis.Connection):
    """redis-py's asyncio connection, packing commands with hiredis as its synchronous
    connection does when hiredis is installed. The asyncio one packs them in Python, ~1 µs an
    argument: a rebuild of the validator's index sends millions of members, and each batch's
    write-through thousands. Same bytes and the same DataError for what cannot be sent."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:  # pipelines pack through it too
        packed: list[bytes] = self._packer.pack(*args)
        return packed


# What is worth waiting out: Redis unreachable, or up but refusing for a while. Anything else
# (a wrong type, an unknown command, a refused password) is a bug or a configuration error.
TRANSIENT_REDIS_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    redis.exceptions.ConnectionError,  # includes LOADING (BusyLoadingError)
    redis.exceptions.TimeoutError,
    redis.exceptions.TryAgainError,
    redis.exceptions.OutOfMemoryError,  # OOM: at maxmemory with noeviction (SPEC §5.4)
    redis.exceptions.ReadOnlyError,  # READONLY: a replica, e.g. during a failover
    RedisMisconfiguredError,
    RedisBusyError,
)

Redis = aioredis.Redis


class RedisLink:
    """One client for the current (host, port); `for_target` reconnects when they change.

    The client does not retry on its own. By default redis-py retries a failed command three
    times with up to 10 s of backoff, hidden beneath the caller's retries: a Redis outage then
    held a validator batch (and the checkpoint lock) for seconds per command. Callers retry with
    `sms_gateway.retry` and the `max_database_retries` setting, the one retry policy.
    """

    def __init__(self, *, password: str | None, db: int, timeout: float = 5.0) -> None:
        self._password = password
        self._db = db
        self._timeout = timeout
        self._target: tuple[str, int] | None = None
        self._client: aioredis.Redis | None = None

    async def for_target(self, host: str, port: int) -> aioredis.Redis:
        if self._client is None or self._target != (host, port):
            if self._client is not None:
                logger.info(
                    "redis location changed, reconnecting",
                    extra={"redis_host": host, "redis_port": port},
                )
                await self._client.aclose()
            pool = aioredis.ConnectionPool(
                host=host,
                port=port,
                db=self._db,
                password=self._password,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                health_check_interval=30,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
                parser_class=_GatewayParser,
                connection_class=_GatewayConnection,
                protocol=2,
            )
            self._client = aioredis.Redis.from_pool(pool)
            self._target = (host, port)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._target = None
