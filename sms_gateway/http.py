"""What every HTTP service shares: request metrics (`RequestMetrics`, applied by a pure ASGI
middleware, so that trace context variables survive, or by the receiver's own front) and the
operational endpoints of SPEC §4.4."""

from __future__ import annotations

import os
import time
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sms_gateway.errors import NotStartedError
from sms_gateway.lifespan import TypedState

HTTP_REQUESTS = Counter(
    "sms_http_requests_total",
    "HTTP requests by route and status.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "sms_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


# The methods a label may name; any other (a client may send any token as a method) is counted
# as "OTHER", so that no client can grow the metrics' label sets.
KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


class RequestMetrics:
    """A service's requests, counted and timed per method, route template (never the raw path)
    and status: the one way every service records them. The labelled children are cached, so
    an observation costs two dictionary lookups more than the samples themselves."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._observers: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "OTHER"
        key = (method, route, status)
        observers = self._observers.get(key)
        if observers is None:
            observers = self._observers[key] = (
                HTTP_REQUESTS.labels(self.service, method, route, str(status)),
                HTTP_LATENCY.labels(self.service, method, route),
            )
        observers[0].inc()
        observers[1].observe(seconds)


class StatusRecorder:
    """An ASGI `send` that passes every message on and keeps the response's status (500 until
    the response starts: what a request that failed before answering is counted as)."""

    __slots__ = ("_send", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


def route_template(scope: Scope) -> str:
    """The matched route's template (never the raw path), for metrics and spans."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


class HttpMetricsMiddleware:
    """`RequestMetrics` for every request of a FastAPI app."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.metrics = RequestMetrics(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            self.metrics.observe(
                scope["method"],
                route_template(scope),
                recorder.status,
                time.perf_counter() - started,
            )


def metrics_payload() -> bytes:
    """The exposition text; in multiprocess mode (gunicorn workers) the merged view."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def ops_router(service_state: TypedState[Any]) -> APIRouter:
    """`/health` (the process answers), `/ready` (what it depends on answers), `/metrics`.

    `/ready` reports the service state's `ready()`, a map of dependency (or background task)
    name to whether it answers (runs); all must be true. Before the lifespan has made the state,
    the one check is "started", false.
    """
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        summary="Every dependency answers",
        responses={503: {"description": "a dependency does not answer"}},
    )
    async def readiness(request: Request) -> Any:
        try:
            checks = await service_state.of(request).ready()
        except NotStartedError:
            checks = {"started": False}
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(metrics_payload(), media_type=CONTENT_TYPE_LATEST)

    return router
