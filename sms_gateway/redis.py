"""Redis access. Where Redis is comes from the settings (redis_host, redis_port), so the client
is rebuilt when they change; the password and database number come from the environment."""

from __future__ import annotations

import logging
from typing import Final

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

logger = logging.getLogger(__name__)

TRANSIENT_REDIS_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
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
            self._client = aioredis.Redis(
                host=host,
                port=port,
                db=self._db,
                password=self._password,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                health_check_interval=30,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
            )
            self._target = (host, port)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._target = None
