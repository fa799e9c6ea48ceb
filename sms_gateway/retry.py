"""Exponential backoff with full jitter for transient infrastructure faults (SPEC §6.4)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from prometheus_client import Counter

from sms_gateway.errors import RetriesExhaustedError

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = Counter(
    "sms_retries_total", "Retries of an operation after a transient fault.", ["operation"]
)

BASE_DELAY: Final = 0.05
MAX_DELAY: Final = 5.0


def backoff_delay(attempt: int, *, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Full jitter: a uniform draw below the exponential ceiling of this attempt (0-based)."""
    return random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311 - jitter, not crypto


async def retry_transient(
    operation: str,
    action: Callable[[], Awaitable[T]],
    *,
    retries: int,
    transient: tuple[type[BaseException], ...],
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
) -> T:
    """Run `action`, retrying up to `retries` more times on a transient fault.

    Raises `RetriesExhaustedError` (chained to the last fault) when every attempt failed; any
    other exception passes through at once: it is a bug, not weather.
    """
    for attempt in range(retries + 1):
        try:
            return await action()
        except transient as exc:
            if attempt == retries:
                raise RetriesExhaustedError(
                    f"{operation}: {type(exc).__name__} after {retries + 1} attempt(s)"
                ) from exc
            RETRIES.labels(operation=operation).inc()
            delay = backoff_delay(attempt, base=base, cap=cap)
            logger.warning(
                "transient fault, retrying",
                extra={
                    "operation": operation,
                    "attempt": attempt + 1,
                    "error": type(exc).__name__,
                    "delay_s": round(delay, 3),
                },
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
