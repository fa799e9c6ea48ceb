"""The receiver's HTTP application (SPEC §4): `create_app(config)`.

Endpoints read their bodies themselves (size-capped by `BodyLimitMiddleware`) and validate them
in `incoming`, so that every refusal names its field and rule; domain errors become HTTP
answers in one place, `install_error_handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from opentelemetry.trace import Tracer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from services.receiver import incoming, metrics
from services.receiver.adapters import smsgate, twilio
from services.receiver.config import ReceiverConfig
from services.receiver.errors import (
    IdempotencyKeyReused,
    InvalidSms,
    SignatureRefused,
    StorageUnavailable,
)
from services.receiver.limits import REQUEST_STARTED_NS, BodyLimitMiddleware
from services.receiver.schemas import (
    SMSGATE_EXAMPLE,
    BatchReceipt,
    Ignored,
    Receipt,
    SmsGateEnvelope,
    SmsIn,
    TwilioInbound,
    inline_schema,
)
from services.receiver.store import SmsStore, StoredSms
from services.receiver.tracing import record_receive
from sms_gateway import db
from sms_gateway.http import HttpMetricsMiddleware, ops_router
from sms_gateway.problems import (
    FieldProblem,
    document_problems,
    http_exception_response,
    problem_response,
    problem_responses,
    validation_response,
)
from sms_gateway.settings import SettingsStore, keep_fresh

logger = logging.getLogger(__name__)

API_SOURCE: Final = "api"
BATCH_SOURCE: Final = "api-batch"
RETRY_AFTER_SECONDS: Final = 5
SETTINGS_REFRESH_SECONDS: Final = 2.0


@dataclass
class Receiver:
    """What the endpoints use, built in the lifespan."""

    config: ReceiverConfig
    pool: db.Pool
    settings: SettingsStore
    store: SmsStore
    tracer: Tracer

    @property
    def max_message_length(self) -> int:
        return self.settings.current.max_message_length


def _receiver(request: Request) -> Receiver:
    receiver: Receiver = request.state.receiver
    return receiver


# ---------------------------------------------------------------------------- responses


def _receipt(stored: StoredSms) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if stored.repeated else None
    return JSONResponse({"uuid": str(stored.uuid)}, status_code=202, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every domain error of the receiver becomes its HTTP answer here, and only here (a body
    over its cap is refused before it is read, by BodyLimitMiddleware). Each answer is the
    problem details body of `sms_gateway.problems`."""

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidSms)
        metrics.REFUSED.labels(reason="invalid").inc()
        return problem_response(422, str(exc), exc.problems)

    async def invalid_parameter(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        metrics.REFUSED.labels(reason="invalid").inc()
        return validation_response(exc)

    async def unsigned(_: Request, exc: Exception) -> Response:
        metrics.REFUSED.labels(reason="signature").inc()
        logger.warning("webhook signature refused", extra={"reason": str(exc)})
        return problem_response(401, f"signature refused: {exc}")

    async def key_reused(_: Request, exc: Exception) -> Response:
        metrics.REFUSED.labels(reason="key_reused").inc()
        return problem_response(409, str(exc), [FieldProblem("Idempotency-Key", str(exc))])

    async def unavailable(_: Request, exc: Exception) -> Response:
        metrics.UNAVAILABLE.inc()
        return problem_response(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # an unknown path, a wrong method
        return http_exception_response(exc)

    async def client_gone(_: Request, __: Exception) -> Response:
        # The client closed the connection, or the server closed it for reading too slowly
        # (it was answered 408 then): nobody is left to answer, and it is not a server error.
        metrics.REFUSED.labels(reason="client_gone").inc()
        return Response(status_code=408)

    app.add_exception_handler(InvalidSms, invalid)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.add_exception_handler(SignatureRefused, unsigned)
    app.add_exception_handler(IdempotencyKeyReused, key_reused)
    app.add_exception_handler(StorageUnavailable, unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)


# ---------------------------------------------------------------------------- OpenAPI

_REFUSALS: Final = problem_responses(
    {
        413: "the body is larger than 64 KiB (16 MiB for a batch)",
        422: "the request cannot be stored as sent: each problem names its field (and item) "
        "and rule",
        503: "the SMS could not be stored within the answer bound (the database is unavailable); "
        "nothing was stored; retry after Retry-After seconds",
    },
    headers={503: {"Retry-After": {"schema": {"type": "integer"}}}},
)
_UNSIGNED: Final = problem_responses({401: "the signature does not verify"})


def _json_body(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "examples": examples}},
        }
    }


_SMS_EXAMPLE: Final = {
    "sender_number": "+44 7700 900123",
    "sms_message": "ACME 0123456789abcdef +447700900123",
    "received_timestamp": "2024-06-22T15:46:11+01:00",
}
_SINGLE_BODY: Final = _json_body(
    inline_schema(SmsIn),
    {
        "number": {"summary": "an international number", "value": _SMS_EXAMPLE},
        "alphanumeric": {
            "summary": "an alphanumeric sender, stored as sent",
            "value": {
                "sender_number": "AB-CTAXKR",
                "sms_message": "Your code is 1234 🔐",
                "received_timestamp": "2024-06-22T14:46:11Z",
            },
        },
    },
)
_BATCH_BODY: Final = _json_body(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": incoming.MAX_BATCH_ITEMS,
        "items": inline_schema(SmsIn),
    },
    {
        "two": {
            "summary": "two SMS",
            "value": [
                _SMS_EXAMPLE,
                {
                    "sender_number": "72404",
                    "sms_message": "Привет, мир",
                    "received_timestamp": "2024-06-22T15:47:00+03:00",
                },
            ],
        }
    },
)
_SMSGATE_BODY: Final = _json_body(
    inline_schema(SmsGateEnvelope),
    {
        "current": {"summary": "sms:received from a current app version", "value": SMSGATE_EXAMPLE},
        "older": {
            "summary": "sms:received from an older app version",
            "value": {
                "deviceId": "ffffffffceb0b1db0000018e937c815b",
                "event": "sms:received",
                "id": "Ey6ECgOkVVFjz3CL48B8C",
                "webhookId": "LreFUt-Z3sSq0JufY9uWB",
                "payload": {
                    "message": "Android is always a sweet treat!",
                    "phoneNumber": "6505551212",
                    "receivedAt": "2024-06-22T15:46:11.000+07:00",
                },
            },
        },
    },
)
_TWILIO_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": inline_schema(TwilioInbound)}},
    }
}
_KEY_HEADER: Final = "Idempotency-Key"
_KEY_DOC: Final = (
    "Makes the delivery idempotent: a repeat with the same key stores nothing and "
    "answers the first delivery's status and uuid (with Idempotent-Replayed: true)."
)
_BATCH_KEY_DOC: Final = (
    "Names the whole batch (at most 60 characters): a repeat of the same batch stores nothing "
    "and answers the same uuids; a different batch under a used key is refused with 409."
)


def _key_parameter(description: str, max_length: int) -> dict[str, Any]:
    # Documented here rather than declared as a FastAPI Header parameter: the endpoint reads
    # and validates the header once, itself (incoming.idempotency_key), instead of having
    # FastAPI's dependency solver validate it with pydantic on every request first.
    return {
        "parameters": [
            {
                "name": _KEY_HEADER,
                "in": "header",
                "required": False,
                "description": description,
                "schema": {"type": "string", "minLength": 1, "maxLength": max_length},
            }
        ]
    }


_SINGLE_KEY: Final = _key_parameter(_KEY_DOC, incoming.MAX_IDEMPOTENCY_KEY_LENGTH)
_BATCH_KEY: Final = _key_parameter(_BATCH_KEY_DOC, incoming.MAX_BATCH_KEY_LENGTH)


# ---------------------------------------------------------------------------- the app


def create_app(config: ReceiverConfig) -> FastAPI:
    """The receiver. Its pool, settings refresher and group-commit flusher live in the lifespan;
    on shutdown the flusher commits what it has taken, then the pool closes."""
    runtime: dict[str, Receiver] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        pool = await db.create_pool(
            config.database_url.get_secret_value(),
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            command_timeout=config.db_command_timeout,
        )
        settings = SettingsStore()
        refresher = asyncio.create_task(
            keep_fresh(
                pool, settings, interval=SETTINGS_REFRESH_SECONDS, transient=db.TRANSIENT_DB_ERRORS
            ),
            name="settings-refresh",
        )
        store = SmsStore(
            pool,
            retries=lambda: settings.current.max_database_retries,
            attempt_timeout=config.db_command_timeout,
            answer_within=config.answer_within_seconds,
            max_wait=config.group_commit_max_wait_ms / 1000,
            max_rows=config.group_commit_max_rows,
            max_flushes=config.group_commit_max_flushes,
        )
        store.start()
        receiver = Receiver(config, pool, settings, store, trace.get_tracer("sms-receiver"))
        runtime["receiver"] = receiver
        try:
            yield {"receiver": receiver}
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await store.close()
            await db.close_pool(pool)
            logger.info("receiver stopped: every SMS taken was committed or answered")

    async def ready() -> dict[str, bool]:
        receiver = runtime.get("receiver")
        # Writable: a read-only database (a standby) answers, but no SMS can be stored.
        return {
            "database": receiver is not None and await db.is_ready(receiver.pool, writable=True)
        }

    app = FastAPI(
        title="SMS gateway receiver",
        version="1.0",
        description="Stores every SMS it is sent and answers only once the row is committed "
        "(SPEC §4). Strict on shape, lenient on content.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry makes the HTTP server span that "sms.receive" links
        # to; its OTel metrics and logs are off: metrics are Prometheus' and logs ours, and
        # each would look up its provider again on every request.
        telemetry={"metrics": False, "logs": False},
    )
    install_error_handlers(app)
    document_problems(app)
    app.include_router(ops_router(ready))
    _add_sms_routes(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=incoming.MAX_BODY_BYTES,
        path_limits={"/sms/receive/batch": incoming.MAX_BATCH_BODY_BYTES},
    )
    app.add_middleware(HttpMetricsMiddleware, service=config.service_name)
    return app


def _trace(receiver: Receiver, request: Request, stored: StoredSms, source: str) -> None:
    record_receive(
        receiver.tracer,
        stored,
        source=source,
        request_started_ns=getattr(request.state, REQUEST_STARTED_NS),
        http_span=trace.get_current_span().get_span_context(),
    )


def _target_path(scope: Scope) -> str:
    """The path as the client sent it. ASGI's `path` already holds the root_path (so adding
    root_path doubled a proxy's prefix) and is percent-decoded; `raw_path` is neither."""
    raw_path: bytes | None = scope.get("raw_path")
    if raw_path is None:  # optional in ASGI
        return quote(scope["path"], safe="/:@!$&'()*+,;=-._~")
    return raw_path.split(b"?", 1)[0].decode("latin-1")


def _add_sms_routes(app: FastAPI) -> None:
    @app.post(
        "/sms/receive",
        status_code=202,
        response_model=Receipt,
        tags=["sms"],
        summary="Store one SMS",
        openapi_extra={**_SINGLE_BODY, **_SINGLE_KEY},
        responses={**_REFUSALS},
    )
    async def receive_sms(request: Request) -> Response:
        receiver = _receiver(request)
        key = incoming.idempotency_key(request.headers.get(_KEY_HEADER))
        sms = incoming.single_sms(
            incoming.parse_json_body(await request.body()),
            max_message_length=receiver.max_message_length,
            source=API_SOURCE,
            client_event_id=key,
        )
        stored = await receiver.store.store(sms)
        _trace(receiver, request, stored, API_SOURCE)
        return _receipt(stored)

    @app.post(
        "/sms/receive/batch",
        status_code=202,
        response_model=BatchReceipt,
        tags=["sms"],
        summary="Store up to 1000 SMS, all or none",
        openapi_extra={**_BATCH_BODY, **_BATCH_KEY},
        responses={
            **_REFUSALS,
            **problem_responses({409: "the Idempotency-Key was used for a different batch"}),
        },
    )
    async def receive_batch(request: Request) -> Response:
        receiver = _receiver(request)
        key = incoming.idempotency_key(
            request.headers.get(_KEY_HEADER), max_length=incoming.MAX_BATCH_KEY_LENGTH
        )
        rows = incoming.sms_batch(
            incoming.parse_json_body(await request.body()),
            max_message_length=receiver.max_message_length,
            source=BATCH_SOURCE,
            batch_key=key,
        )
        started_ns = time.time_ns()
        uuids, repeated = await receiver.store.store_batch(rows)
        ended_ns = time.time_ns()
        for uuid in uuids:
            _trace(receiver, request, StoredSms(uuid, repeated, started_ns, ended_ns), BATCH_SOURCE)
        headers = {"Idempotent-Replayed": "true"} if repeated else None
        return JSONResponse(
            {"uuids": [str(uuid) for uuid in uuids]}, status_code=202, headers=headers
        )

    @app.post(
        "/sms/receive/smsgate",
        status_code=202,
        response_model=Receipt,
        tags=["adapters"],
        summary="SMS Gateway for Android: the sms:received webhook",
        description="Verifies X-Signature (HMAC-SHA256 of the raw body followed by X-Timestamp, "
        "lowercase hex; X-Timestamp within 300 s) when a signing key is configured. "
        "The envelope id is the idempotency key. Other events are answered 200 and "
        "not stored.",
        openapi_extra=_SMSGATE_BODY,
        responses={
            **_REFUSALS,
            200: {"model": Ignored, "description": "not an sms:received event: nothing stored"},
            **_UNSIGNED,
        },
    )
    async def receive_smsgate(
        request: Request,
        x_signature: Annotated[str | None, Header(description="hex HMAC-SHA256")] = None,
        x_timestamp: Annotated[str | None, Header(description="Unix seconds")] = None,
    ) -> Response:
        receiver = _receiver(request)
        body = await request.body()
        key = receiver.config.smsgate_signing_key
        if key is not None:
            smsgate.verify_signature(
                key.get_secret_value().encode("utf-8"), body, x_signature, x_timestamp
            )
        envelope = incoming.parse_json_body(body)
        event = smsgate.event_name(envelope)
        if event != smsgate.RECEIVED_EVENT:
            return JSONResponse({"ignored": event}, status_code=200)
        sms = smsgate.received_sms(envelope, max_message_length=receiver.max_message_length)
        stored = await receiver.store.store(sms)
        _trace(receiver, request, stored, smsgate.SOURCE)
        return _receipt(stored)

    @app.post(
        "/sms/receive/twilio",
        status_code=200,
        tags=["adapters"],
        summary="Twilio: the inbound SMS webhook",
        description="Verifies X-Twilio-Signature when an auth token is configured; the URL is "
        "the one Twilio called (X-Forwarded-Proto/-Host honoured). MessageSid is the "
        "idempotency key. Answers an empty TwiML <Response/>.",
        openapi_extra=_TWILIO_BODY,
        response_class=Response,
        responses={
            **_REFUSALS,
            200: {
                "content": {twilio.TWIML_MEDIA_TYPE: {"example": twilio.EMPTY_TWIML.decode()}},
                "description": "stored (or a repeat of a stored delivery)",
            },
            **_UNSIGNED,
        },
    )
    async def receive_twilio(
        request: Request,
        x_twilio_signature: Annotated[str | None, Header(description="base64 HMAC-SHA1")] = None,
    ) -> Response:
        receiver = _receiver(request)
        arrived_at = datetime.now(UTC)
        params = twilio.parse_form(await request.body())
        token = receiver.config.twilio_auth_token
        if token is not None:
            url = twilio.request_url(
                request.url.scheme,
                request.headers,
                _target_path(request.scope),
                request.scope.get("query_string", b"").decode("latin-1"),
            )
            twilio.verify_signature(
                token.get_secret_value().encode("utf-8"), url, params, x_twilio_signature
            )
        sms = twilio.inbound_sms(
            params, arrived_at=arrived_at, max_message_length=receiver.max_message_length
        )
        stored = await receiver.store.store(sms)
        _trace(receiver, request, stored, twilio.SOURCE)
        return Response(twilio.EMPTY_TWIML, media_type=twilio.TWIML_MEDIA_TYPE)
