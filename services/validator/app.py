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
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
        task = supervisor.start(engine.run(), name="validator-engine")

        async def ready() -> dict[str, bool]:
            return {
                "database": await db.is_ready(pool),
                "engine": engine.started and supervisor.healthy,
                # False while a batch, lease or index operation waits out a transient fault
                # (Redis full or gone, a read-only database...): the log names it.
                "judging": not engine.waiting,
            }

        app.state.engine = engine
        app.state.engine_task = task
        app.state.ready = ready
        try:
            yield
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

    async def ready() -> dict[str, bool]:
        check: Callable[[], asyncio.Future[dict[str, bool]]] = app.state.ready
        return await check()

    app.include_router(ops_router(ready))
    app.add_middleware(HttpMetricsMiddleware, service=config.service_name)
    return app
