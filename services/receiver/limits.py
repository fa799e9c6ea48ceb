"""A pure ASGI middleware that caps request bodies while they are read (SPEC §4.1: 413 over
64 KiB), so that no request can make the receiver buffer an unbounded body.

A batch (SPEC §4.2, up to 1000 SMS) cannot fit in 64 KiB (a minimal item is ~80 bytes), so its
path has a larger cap of its own: 1000 SMS of 1600 characters in any script fit in 16 MiB.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.receiver import metrics
from sms_gateway.problems import FieldProblem, raw_problem

REQUEST_STARTED_NS = "request_started_ns"


class _BodyTooLarge(Exception):  # internal: it never leaves this middleware
    """Ends the app's request once the 413 is sent."""


class BodyLimitMiddleware:
    """Refuses a declared `Content-Length` over the limit at once; otherwise counts the bytes
    as the app reads them and refuses past the limit: the one place where a 413 is made. It
    also stamps the request's start time into the scope state (the start of the "sms.receive"
    span).
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[REQUEST_STARTED_NS] = time.time_ns()
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(send, limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The app has not answered (it is still reading): answer for it, then
                    # end it. Its handlers do not know this exception, so it comes back here.
                    await self._refuse(send, limit)
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            return

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        metrics.REFUSED.labels(reason="too_large").inc()
        rule = FieldProblem("body", f"must be at most {limit} bytes")
        headers, body = raw_problem(413, rule.describe(), [rule])
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
