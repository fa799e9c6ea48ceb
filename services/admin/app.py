"""The admin service's HTTP app (SPEC §7): `create_app(config)` builds it; the pool and the
settings refresher live in its lifespan, nothing is created at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ExceptionHandler

import checks
from checks.base import Check
from services.admin import ui
from services.admin.auth import BearerAuthMiddleware, TokenVerifier
from services.admin.config import AdminConfig
from services.admin.errors import (
    InvalidParameters,
    NotAuthenticated,
    SenderNotBlacklisted,
    SmsNotFound,
    SmsNotInError,
    UnknownQueryParameters,
)
from services.admin.queries import SmsStatements
from services.admin.routes import blacklist, settings, sms, stats
from services.admin.state import ADMIN, AdminState, known_query_parameters_only, operator
from sms_gateway import db
from sms_gateway.errors import SettingValueError, UnknownSettingError
from sms_gateway.http import HttpMetricsMiddleware, ops_router
from sms_gateway.problems import (
    ProblemResponse,
    document_problems,
    http_exception_response,
    problem_response,
    validation_response,
)
from sms_gateway.service import Supervisor
from sms_gateway.settings import SettingsStore, keep_fresh

logger = logging.getLogger(__name__)

SETTINGS_REFRESH_SECONDS: Final = 2.0
RETRY_AFTER_SECONDS: Final = 2
# Answered without a token: operations (SPEC §7), the API's own description and the operator
# page, none of which holds data.
PUBLIC_PATHS: Final = (
    frozenset({"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
    | ui.PUBLIC_PATHS
)


def create_app(
    config: AdminConfig, *, checks_by_name: Mapping[str, Check] | None = None
) -> FastAPI:
    """The admin app. `checks_by_name` (default: `checks.REGISTRY`) is the registry whose checks
    check_sequence and check_enabled may name (SPEC §3) and whose results an SMS shows; the
    validator's `create_app` takes the same, so a test can run both with an extended registry."""
    verifier = TokenVerifier(config.operator_tokens())
    check_names = tuple(checks.REGISTRY if checks_by_name is None else checks_by_name)
    sms_statements = SmsStatements.for_columns(checks.result_columns(check_names))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, AdminState]]:
        pool = await db.create_pool(
            config.database_url.get_secret_value(),
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            command_timeout=config.db_command_timeout,
        )
        store = SettingsStore(known_checks=check_names)
        supervisor = Supervisor()
        # A refresher that dies (a bug) would freeze the settings silently: supervised, it turns
        # /ready false and stops the process instead (sms_gateway/service.py).
        refresher = supervisor.start(
            keep_fresh(
                pool, store, interval=SETTINGS_REFRESH_SECONDS, transient=db.TRANSIENT_DB_ERRORS
            ),
            name="admin-settings-refresh",
        )
        state = AdminState(config, pool, store, verifier, check_names, sms_statements, supervisor)
        logger.info("admin service started", extra={"operators": list(verifier.names)})
        try:
            yield ADMIN.for_requests(state)
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await db.close_pool(pool)

    app = FastAPI(
        title="SMS gateway admin",
        version="1",
        summary="Run-time settings with their audit, inspection of SMS, blacklist, stats.",
        description=(
            "Every endpoint but /health, /ready and /metrics needs "
            "`Authorization: Bearer <token>` with a token of `SMSGW_ADMIN_TOKENS`; "
            "the token's name is what the settings audit records. This description "
            "(/docs, /openapi.json) is open too: it holds no data, and a browser must be "
            "able to load it before the operator enters a token. So is the operator page at "
            "`/`, which asks these endpoints for everything it shows."
        ),
        lifespan=lifespan,
        redoc_url=None,  # /docs is the one place (SPEC §7)
    )

    app.include_router(ops_router(ADMIN))
    app.include_router(ui.ui_router())
    # The middleware refuses unauthenticated requests; the dependency documents the scheme in
    # OpenAPI and hands the operator's name to the handlers that record it.
    protected = [Depends(operator), Depends(known_query_parameters_only)]
    for router in (settings.router, sms.router, blacklist.router, stats.router):
        app.include_router(router, dependencies=protected)
    install_error_handlers(app)
    document_problems(app)
    app.add_middleware(
        BearerAuthMiddleware, verifier=verifier, public_paths=PUBLIC_PATHS, refuse=unauthorized
    )
    # Added last, so outermost: refused requests are counted too.
    app.add_middleware(HttpMetricsMiddleware, service=config.service_name)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="health,ready,metrics")
    return app


def unauthorized(refused: NotAuthenticated) -> ProblemResponse:
    """401 with the challenge of RFC 6750; the body never says which token was close."""
    response = problem_response(401, str(refused))
    error = "" if refused.reason == "missing" else ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = f'Bearer realm="sms-admin"{error}'
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Every domain error to its HTTP answer, in one place; each answer is the problem details
    body of `sms_gateway.problems`."""

    async def not_authenticated(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotAuthenticated)
        return unauthorized(exc)

    async def setting_value(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, SettingValueError)
        return problem_response(422, str(exc), key=exc.key, rule=exc.rule)

    async def unknown_setting(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, UnknownSettingError)
        return problem_response(404, str(exc), key=exc.key)

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def unknown_query_parameters(_: Request, exc: Exception) -> Response:
        return problem_response(422, str(exc))

    async def invalid_parameters(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidParameters)
        return problem_response(422, str(exc), exc.problems)

    async def not_found(_: Request, exc: Exception) -> Response:
        return problem_response(404, str(exc))

    async def conflict(_: Request, exc: Exception) -> Response:
        return problem_response(409, str(exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return http_exception_response(exc)

    async def data_error(_: Request, exc: Exception) -> Response:
        # A value the database cannot take (out of a column's range, a bad encoding): the
        # request's fault, and nothing was written (the transaction rolled back).
        logger.warning("request refused by the database", extra={"error": type(exc).__name__})
        return problem_response(
            422, "a value of the request is out of the database's range or type"
        )

    async def database_unavailable(_: Request, exc: Exception) -> Response:
        logger.warning("database unavailable", extra={"error": type(exc).__name__})
        return problem_response(
            503,
            "the database does not answer; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    handlers: dict[type[Exception], ExceptionHandler] = {
        NotAuthenticated: not_authenticated,
        SettingValueError: setting_value,
        UnknownSettingError: unknown_setting,
        SmsNotFound: not_found,
        SenderNotBlacklisted: not_found,
        SmsNotInError: conflict,
        UnknownQueryParameters: unknown_query_parameters,
        InvalidParameters: invalid_parameters,
        RequestValidationError: invalid_request,
        StarletteHTTPException: http_error,
    }
    for transient in db.TRANSIENT_DB_ERRORS:
        if issubclass(transient, Exception):
            handlers[transient] = database_unavailable
    # Looked up along the exception's class hierarchy, nearest first: asyncpg's client-side
    # DataError (an InterfaceError, which is transient) is still a 422.
    for data in (asyncpg.DataError, asyncpg.exceptions._base.DataError):
        handlers[data] = data_error
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
