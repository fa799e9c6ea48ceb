"""The validator's HTTP face: `/health`, `/ready`, `/metrics` (SPEC §4.4), and the engine's
lifecycle in the lifespan: pools and the engine are made at start-up, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

from fastapi import FastAPI

import checks
from checks.base import Check
from services.validator.config import ValidatorConfig
from services.validator.engine import Engine
from services.validator.state import VALIDATOR, ValidatorState
from sms_gateway import db
from sms_gateway.http import HttpMetricsMiddleware, ops_router
from sms_gateway.redis import RedisLink
from sms_gateway.service import Supervisor, fail_process

logger = logging.getLogger(__name__)

# SIGTERM: the batch in flight gets this long to finish before it is cancelled (rolled back);
# within SPEC §6.5's 30 s with room for closing the pools.
STOP_GRACE: Final = 20.0


def create_app(
    config: ValidatorConfig,
    *,
    checks_by_name: Mapping[str, Check] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    settle_margin: float | None = None,
) -> FastAPI:
    """The validator app; `on_fatal` is told when the engine died of a bug (by default the
    process stops and exits non-zero, sms_gateway/service.py)."""
    registry = checks.REGISTRY if checks_by_name is None else checks_by_name

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, ValidatorState]]:
        # min_size=0: start even while the database is away; the engine retries by itself.
        pool = await db.create_pool(
            config.database_url.get_secret_value(),
            min_size=0,
            max_size=config.db_pool_max_size,
            command_timeout=config.db_command_timeout,
        )
        password = config.redis_password.get_secret_value() if config.redis_password else None
        redis_link = RedisLink(password=password, db=config.redis_db)
        options = {} if settle_margin is None else {"settle_margin": settle_margin}
        engine = Engine(
            pool,
            redis_link,
            registry,
            config.check_secrets(),
            tracing=bool(config.otlp_endpoint),
            archive_dir=config.archive_dir,
            **options,
        )
        supervisor = Supervisor(on_fatal or fail_process)
        task: asyncio.Task[None] = supervisor.start(engine.run(), name="validator-engine")
        try:
            yield VALIDATOR.for_requests(ValidatorState(pool, engine, task, supervisor))
        finally:
            await engine.stop()
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
            except TimeoutError:
                logger.warning("batch in flight did not finish in time; rolling it back")
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await redis_link.close()
            await db.close_pool(pool, grace=5.0)

    app = FastAPI(title="SMS gateway validator", lifespan=lifespan)
    app.include_router(ops_router(VALIDATOR))
    app.add_middleware(HttpMetricsMiddleware, service=config.service_name)
    return app
