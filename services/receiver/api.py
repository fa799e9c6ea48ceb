"""The receiver's HTTP application (SPEC §4): `create_app(config)`.

The four SMS endpoints are the hot path: `ReceiverApp`, a FastAPI subclass, answers them itself
as plain ASGI (read the body under its limit, one JSON decoding and validation pass in
`incoming`, the group commit, the answer, two encoded spans), without FastAPI's routing,
dependency solving, request objects or middleware. FastAPI keeps serving everything else (the
operations endpoints, /docs and the OpenAPI document, where the SMS endpoints are declared with
the same handlers). Body limits and request metrics are applied in one place, the front, for
every route; domain errors become HTTP answers in one place, `refusal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from services.receiver import incoming, metrics
from services.receiver.adapters import smsgate, twilio
from services.receiver.config import ReceiverConfig
from services.receiver.errors import (
    BodyTooLarge,
    IdempotencyKeyReused,
    InvalidSms,
    ReceiverError,
    SignatureRefused,
    StorageUnavailable,
)
from services.receiver.incoming import SmsToStore
from services.receiver.limits import BodyLimits, ClientGone, rule
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
from services.receiver.state import RECEIVER, ReceiverState
from services.receiver.store import SmsStore, StoredSms
from services.receiver.tracing import ReceiveSpans
from sms_gateway import db
from sms_gateway.http import RequestMetrics, StatusRecorder, ops_router, route_template
from sms_gateway.problems import (
    PROBLEM_MEDIA_TYPE,
    FieldProblem,
    document_problems,
    encode_problem,
    http_exception_response,
    problem_body,
    problem_responses,
    validation_response,
)
from sms_gateway.service import Supervisor
from sms_gateway.settings import SettingsStore, keep_fresh
from sms_gateway.telemetry import sms_spans

logger = logging.getLogger(__name__)

API_SOURCE: Final = "api"
BATCH_SOURCE: Final = "api-batch"
RETRY_AFTER_SECONDS: Final = 5
SETTINGS_REFRESH_SECONDS: Final = 2.0
SPAN_FLUSH_SECONDS: Final = 3.0
RECEIVE_PATH: Final = "/sms/receive"
BATCH_PATH: Final = "/sms/receive/batch"
SMSGATE_PATH: Final = "/sms/receive/smsgate"
TWILIO_PATH: Final = "/sms/receive/twilio"
_STATE_KEY: Final = RECEIVER.key


# ---------------------------------------------------------------------------- answers

_JSON: Final = b"application/json"
_PROBLEM: Final = PROBLEM_MEDIA_TYPE.encode()
_REPLAYED: Final = ((b"idempotent-replayed", b"true"),)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer of the SMS endpoints, sent as two ASGI messages."""

    status: int
    body: bytes
    media_type: bytes = _JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def send(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", self.media_type),
                    (b"content-length", str(len(self.body)).encode()),
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})

    def response(self) -> Response:
        headers = {name.decode(): value.decode() for name, value in self.headers}
        return Response(
            self.body, status_code=self.status, media_type=self.media_type.decode(), headers=headers
        )


def _json(document: Any) -> bytes:
    # As starlette's JSONResponse renders it.
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _receipt(uuid_text: str, repeated: bool) -> Answer:
    return Answer(
        202, b'{"uuid":"' + uuid_text.encode("ascii") + b'"}', headers=_REPLAYED if repeated else ()
    )


def _error(
    status: int,
    detail: str,
    problems: list[FieldProblem] | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Answer:
    """A refusal as problem details (sms_gateway.problems), the one body of every refusal."""
    body = encode_problem(problem_body(status, detail, problems or []))
    return Answer(status, body, _PROBLEM, headers=headers)


def refusal(exc: ReceiverError) -> Answer:
    """Every domain error of the receiver becomes its HTTP answer here, and only here."""
    if isinstance(exc, InvalidSms):
        metrics.REFUSED.labels(reason="invalid").inc()
        return _error(422, str(exc), exc.problems)
    if isinstance(exc, BodyTooLarge):
        metrics.REFUSED.labels(reason="too_large").inc()
        return _error(
            413,
            str(exc),
            [FieldProblem("body", str(exc).removeprefix("body: "))],
            headers=((b"connection", b"close"),),
        )
    if isinstance(exc, SignatureRefused):
        metrics.REFUSED.labels(reason="signature").inc()
        logger.warning("webhook signature refused", extra={"reason": str(exc)})
        return _error(401, f"signature refused: {exc}")
    if isinstance(exc, IdempotencyKeyReused):
        metrics.REFUSED.labels(reason="key_reused").inc()
        return _error(409, str(exc), [FieldProblem("Idempotency-Key", str(exc))])
    if isinstance(exc, StorageUnavailable):
        metrics.UNAVAILABLE.inc()
        return _error(503, str(exc), headers=((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),))
    raise exc


_INTERNAL_ERROR: Final = Answer(500, b"Internal Server Error", b"text/plain; charset=utf-8")


def install_error_handlers(app: FastAPI) -> None:
    """The routes FastAPI serves answer the same refusals."""

    async def receiver_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ReceiverError)
        return refusal(exc).response()

    async def invalid_parameter(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        metrics.REFUSED.labels(reason="invalid").inc()
        return validation_response(exc)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # an unknown path, a wrong method
        return http_exception_response(exc)

    app.add_exception_handler(ReceiverError, receiver_error)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.add_exception_handler(StarletteHTTPException, http_error)


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


def _header_parameters(*headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": description,
                "schema": {"type": "string"},
            }
            for name, description in headers
        ]
    }


_SMSGATE_HEADERS: Final = _header_parameters(
    ("x-signature", "hex HMAC-SHA256"), ("x-timestamp", "Unix seconds")
)
_TWILIO_HEADERS: Final = _header_parameters(("x-twilio-signature", "base64 HMAC-SHA1"))


# ---------------------------------------------------------------------------- the SMS endpoints

# An endpoint: (the receiver's state, scope, body, request start in ns) -> its answer. Each
# raises the receiver's domain errors, which `refusal` answers.
Endpoint = Callable[[ReceiverState, Scope, bytes, int], Awaitable[Answer]]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


async def _store_traced(  # noqa: PLR0917 (one call shape for the three routes)
    receiver: ReceiverState,
    sms: SmsToStore,
    source: str,
    route: str,
    status: int,
    started_ns: int,
) -> StoredSms:
    """Store one SMS through the group commit, then record its spans (when tracing)."""
    stored = await receiver.store.store(sms)
    if receiver.spans is not None:
        receiver.spans.record(
            stored, source=source, route=route, status=status, request_started_ns=started_ns
        )
    return stored


async def receive_sms(
    receiver: ReceiverState, scope: Scope, body: bytes, started_ns: int
) -> Answer:
    key = incoming.idempotency_key(_header(scope, b"idempotency-key"))
    sms = incoming.single_sms(
        incoming.parse_json_body(body),
        max_message_length=receiver.max_message_length,
        source=API_SOURCE,
        client_event_id=key,
    )
    stored = await _store_traced(receiver, sms, API_SOURCE, RECEIVE_PATH, 202, started_ns)
    return _receipt(str(stored.uuid), stored.repeated)


async def receive_batch(
    receiver: ReceiverState, scope: Scope, body: bytes, started_ns: int
) -> Answer:
    key = incoming.idempotency_key(
        _header(scope, b"idempotency-key"), max_length=incoming.MAX_BATCH_KEY_LENGTH
    )
    rows = incoming.sms_batch(
        incoming.parse_json_body(body),
        max_message_length=receiver.max_message_length,
        source=BATCH_SOURCE,
        batch_key=key,
    )
    insert_started_ns = time.time_ns()
    uuids, repeated = await receiver.store.store_batch(rows)
    insert_ns = (insert_started_ns, time.time_ns())
    texts = [str(uuid) for uuid in uuids]
    if receiver.spans is not None:
        receiver.spans.record_batch(
            uuids,
            texts,
            repeated=repeated,
            source=BATCH_SOURCE,
            route=BATCH_PATH,
            status=202,
            request_started_ns=started_ns,
            insert_ns=insert_ns,
        )
    answer = b'{"uuids":["' + '","'.join(texts).encode("ascii") + b'"]}'
    return Answer(202, answer, headers=_REPLAYED if repeated else ())


async def receive_smsgate(
    receiver: ReceiverState, scope: Scope, body: bytes, started_ns: int
) -> Answer:
    key = receiver.config.smsgate_signing_key
    if key is not None:
        smsgate.verify_signature(
            key.get_secret_value().encode("utf-8"),
            body,
            _header(scope, b"x-signature"),
            _header(scope, b"x-timestamp"),
        )
    envelope = incoming.parse_json_body(body)
    event = smsgate.event_name(envelope)
    if event != smsgate.RECEIVED_EVENT:
        return Answer(200, _json({"ignored": event}))
    sms = smsgate.received_sms(envelope, max_message_length=receiver.max_message_length)
    stored = await _store_traced(receiver, sms, smsgate.SOURCE, SMSGATE_PATH, 202, started_ns)
    return _receipt(str(stored.uuid), stored.repeated)


_TWIML: Final = Answer(200, twilio.EMPTY_TWIML, twilio.TWIML_MEDIA_TYPE.encode())


async def receive_twilio(
    receiver: ReceiverState, scope: Scope, body: bytes, started_ns: int
) -> Answer:
    arrived_at = datetime.now(UTC)
    params = twilio.parse_form(body)
    token = receiver.config.twilio_auth_token
    if token is not None:
        url = twilio.request_url(
            scope.get("scheme", "http"),
            Headers(scope=scope),
            _target_path(scope),
            scope.get("query_string", b"").decode("latin-1"),
        )
        twilio.verify_signature(
            token.get_secret_value().encode("utf-8"),
            url,
            params,
            _header(scope, b"x-twilio-signature"),
        )
    sms = twilio.inbound_sms(
        params, arrived_at=arrived_at, max_message_length=receiver.max_message_length
    )
    await _store_traced(receiver, sms, twilio.SOURCE, TWILIO_PATH, 200, started_ns)
    return _TWIML


def _target_path(scope: Scope) -> str:
    """The path as the client sent it. ASGI's `path` already holds the root_path (so adding
    root_path doubled a proxy's prefix) and is percent-decoded; `raw_path` is neither."""
    raw_path: bytes | None = scope.get("raw_path")
    if raw_path is None:  # optional in ASGI
        return quote(scope["path"], safe="/:@!$&'()*+,;=-._~")
    return raw_path.split(b"?", 1)[0].decode("latin-1")


SMS_ENDPOINTS: Final[dict[str, Endpoint]] = {
    RECEIVE_PATH: receive_sms,
    BATCH_PATH: receive_batch,
    SMSGATE_PATH: receive_smsgate,
    TWILIO_PATH: receive_twilio,
}


# ---------------------------------------------------------------------------- the front


class ReceiverApp(FastAPI):
    """FastAPI with a plain ASGI front: the one place where request bodies are limited and
    requests counted and timed, and the SMS endpoints' direct path."""

    def __init__(self, *, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body_limits = BodyLimits(
            incoming.MAX_BODY_BYTES, {BATCH_PATH: incoming.MAX_BATCH_BODY_BYTES}
        )
        self.request_metrics = RequestMetrics(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        started_ns = time.time_ns()
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        endpoint = SMS_ENDPOINTS.get(path) if scope["method"] == "POST" else None
        limit = self.body_limits.limit(path)
        status, route = 500, "unmatched"
        try:
            if endpoint is not None:
                route = path
                status = await self._sms(
                    endpoint, scope, receive, send, limit=limit, started_ns=started_ns
                )
            elif self.body_limits.declared_too_large(scope, limit):
                status = 413
                await refusal(BodyTooLarge(rule(limit))).send(send)
            else:
                status, route = await self._framework(scope, receive, send, limit)
        finally:
            self.request_metrics.observe(
                scope["method"], route, status, time.perf_counter() - started
            )

    async def _sms(
        self,
        endpoint: Endpoint,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        limit: int,
        started_ns: int,
    ) -> int:
        if self.body_limits.declared_too_large(scope, limit):
            answer = refusal(BodyTooLarge(rule(limit)))
            await answer.send(send)
            return answer.status
        try:
            body = await self.body_limits.read(receive, limit)
            # The state as `RECEIVER.of_scope` reads it, without the call (sms_gateway/lifespan.py).
            state: ReceiverState = scope["state"][_STATE_KEY]
            answer = await endpoint(state, scope, body, started_ns)
        except ReceiverError as exc:
            answer = refusal(exc)
        except ClientGone:
            return 499  # nginx's code for it: nobody is left to answer
        except Exception:
            logger.exception("unexpected error", extra={"path": scope["path"]})
            answer = _INTERNAL_ERROR
        await answer.send(send)
        return answer.status

    async def _framework(
        self, scope: Scope, receive: Receive, send: Send, limit: int
    ) -> tuple[int, str]:
        recorder = StatusRecorder(send)
        await super().__call__(scope, self.body_limits.limited(receive, limit), recorder)
        return recorder.status, route_template(scope)


# ---------------------------------------------------------------------------- the app


def create_app(config: ReceiverConfig) -> ReceiverApp:
    """The receiver. Its pool, settings refresher and group-commit flusher live in the lifespan;
    on shutdown the flusher commits what it has taken, then the pool closes."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, ReceiverState]]:
        pool = await db.create_pool(
            config.database_url.get_secret_value(),
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            command_timeout=config.db_command_timeout,
        )
        settings = SettingsStore()
        supervisor = Supervisor()
        # A background task that dies (a bug) turns /ready false and stops the process, which
        # exits non-zero, rather than leave it half alive (sms_gateway/service.py).
        refresher = supervisor.start(
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
        supervisor.watch(store.start())
        pipe = sms_spans()
        spans = ReceiveSpans(pipe) if pipe is not None else None
        try:
            yield RECEIVER.for_requests(
                ReceiverState(config, pool, settings, store, spans, supervisor)
            )
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await store.close()
            if pipe is not None:
                # The process may end by re-raising SIGTERM (uvicorn), skipping atexit: the spans
                # of the last requests leave now.
                await asyncio.to_thread(pipe.flush, SPAN_FLUSH_SECONDS)
            await db.close_pool(pool)
            logger.info("receiver stopped: every SMS taken was committed or answered")

    app = ReceiverApp(
        service=config.service_name,
        title="SMS gateway receiver",
        version="1.0",
        description="Stores every SMS it is sent and answers only once the row is committed "
        "(SPEC §4). Strict on shape, lenient on content.",
        lifespan=lifespan,
        # No FastAPI telemetry: the SMS endpoints make their own spans ("sms.receive" is the
        # server span of the request), the rest are probes and docs, which are not traced;
        # metrics are Prometheus' and logs ours.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    document_problems(app)
    app.include_router(ops_router(RECEIVER))
    _add_sms_routes(app)
    return app


def _add_sms_routes(app: FastAPI) -> None:
    """The SMS endpoints as FastAPI routes: their OpenAPI description. `ReceiverApp` answers
    these paths before routing; the routes run the same handlers should a request reach them."""

    async def serve(request: Request, endpoint: Endpoint) -> Response:
        body = await request.body()
        answer = await endpoint(RECEIVER.of(request), request.scope, body, time.time_ns())
        return answer.response()

    @app.post(
        RECEIVE_PATH,
        status_code=202,
        response_model=Receipt,
        tags=["sms"],
        summary="Store one SMS",
        openapi_extra={**_SINGLE_BODY, **_SINGLE_KEY},
        responses={**_REFUSALS},
    )
    async def receive_one(request: Request) -> Response:
        return await serve(request, receive_sms)

    @app.post(
        BATCH_PATH,
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
    async def receive_many(request: Request) -> Response:
        return await serve(request, receive_batch)

    @app.post(
        SMSGATE_PATH,
        status_code=202,
        response_model=Receipt,
        tags=["adapters"],
        summary="SMS Gateway for Android: the sms:received webhook",
        description="Verifies X-Signature (HMAC-SHA256 of the raw body followed by X-Timestamp, "
        "lowercase hex; X-Timestamp within 300 s) when a signing key is configured. "
        "The envelope id is the idempotency key. Other events are answered 200 and "
        "not stored.",
        openapi_extra={**_SMSGATE_BODY, **_SMSGATE_HEADERS},
        responses={
            **_REFUSALS,
            200: {"model": Ignored, "description": "not an sms:received event: nothing stored"},
            **_UNSIGNED,
        },
    )
    async def receive_from_smsgate(request: Request) -> Response:
        return await serve(request, receive_smsgate)

    @app.post(
        TWILIO_PATH,
        status_code=200,
        tags=["adapters"],
        summary="Twilio: the inbound SMS webhook",
        description="Verifies X-Twilio-Signature when an auth token is configured; the URL is "
        "the one Twilio called (X-Forwarded-Proto/-Host honoured). MessageSid is the "
        "idempotency key. Answers an empty TwiML <Response/>.",
        openapi_extra={**_TWILIO_BODY, **_TWILIO_HEADERS},
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
    async def receive_from_twilio(request: Request) -> Response:
        return await serve(request, receive_twilio)
