"""Limits on slow and idle HTTP clients, as uvicorn options (`uvicorn_options`).

uvicorn bounds an idle kept-alive connection (`timeout_keep_alive`), but it has no deadline for
reading a request: a client that sends its headers or body a byte at a time, or connects and
sends nothing, holds its connection (and, past the headers, a request task and its memory) for
as long as it likes. `SlowClientProtocol` is uvicorn's httptools protocol with a connection
limit and two deadlines:

* at most `max_connections` connections at once: one more is answered 503 with Retry-After at
  once and closed (uvicorn's own `limit_concurrency` answers plain text, and only once the
  headers are in);

* the request line and headers must arrive within `header_timeout` of the connection (or of
  the first byte of a kept-alive connection's next request), and be at most
  `MAX_HEADER_BYTES`;
* the body must arrive within `body_timeout` of the end of the headers.

A client that misses a deadline is answered 408 (problem details; 431 for oversized headers)
when no answer has started, and its connection is closed; the request, if the app was reading
it, sees the client gone (`http.disconnect`) and stores nothing. Each closing is logged and
counted (`sms_http_slow_clients_total{phase}`). A refused connection lingers for
`LINGER_SECONDS`, its input discarded, before it is closed: closing a socket with unread input
resets it, and the client would lose the answer that says why.
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sms_gateway.problems import raw_problem

if TYPE_CHECKING:
    from prometheus_client import Counter

    from sms_gateway.config import BootstrapConfig

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES: Final = 64 * 1024
LINGER_SECONDS: Final = 1.0


@cache
def _slow_clients() -> Counter:
    # Made on first use, not at import: gunicorn's master imports this module before the
    # workers' multiprocess metrics directory is set (services/receiver/gunicorn_app.py).
    from prometheus_client import Counter  # noqa: PLC0415

    return Counter(
        "sms_http_slow_clients_total",
        "Connections closed because the client did not send its request in time, by phase "
        "(header, body), because its headers were too large (header_size) or because the "
        "connection limit was reached (connections).",
        ["phase"],
    )


class SlowClientProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines (see the module docstring); the
    deadlines are class attributes, set by `slow_client_protocol`."""

    header_timeout: float = 5.0
    body_timeout: float = 15.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._reading_headers = False
        self._header_bytes = 0
        self._refused = False

    # ------------------------------------------------------------------ uvicorn's callbacks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._close(
                "connections",
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the receiver serves at most {self.max_connections} connections at once",
                retry_after=1,
            )
            return
        self._expect_headers()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered already: the rest of the request is not read
            return
        if self._reading_headers:
            room = MAX_HEADER_BYTES - self._header_bytes
            if len(data) > room:
                # One read may hold the end of the headers and the body after them (a batch
                # sent in one write): the parser sees the bytes the headers may still take, and
                # only headers that do not end within them are too large.
                self._header_bytes = MAX_HEADER_BYTES
                headers_ended = self._parse(data[:room])
                if self._refused or self.transport.is_closing():
                    return
                if not headers_ended:
                    self._close(
                        "header_size",
                        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                        f"the request line and headers must be at most {MAX_HEADER_BYTES} bytes",
                    )
                    return
                self.data_received(data[room:])  # the body, or a pipelined request's headers
                return
            self._header_bytes += len(data)
        super().data_received(data)

    def _parse(self, data: bytes) -> bool:
        """Feed `data` to the parser; whether the headers being read have ended."""
        super().data_received(data)
        return not self._reading_headers

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_headers:  # the next request on a kept-alive connection
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._arm(self.body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Not HTTP at all (the parser gave up): the same problem details body as every other
        refusal, where uvicorn answers plain text."""
        headers, body = raw_problem(HTTPStatus.BAD_REQUEST, f"not a valid HTTP/1.1 request: {msg}")
        lines = [b"HTTP/1.1 400 Bad Request", *(name + b": " + value for name, value in headers)]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        self.transport.close()

    # ------------------------------------------------------------------ deadlines

    def _expect_headers(self) -> None:
        self._reading_headers = True
        self._header_bytes = 0
        self._arm(self.header_timeout, "header")

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(seconds, self._too_slow, phase, seconds)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self, phase: str, seconds: float) -> None:
        self._read_deadline = None
        part = "request line and headers" if phase == "header" else "body"
        self._close(
            phase, HTTPStatus.REQUEST_TIMEOUT, f"the {part} did not arrive within {seconds:g} s"
        )

    def _close(
        self, phase: str, status: HTTPStatus, detail: str, *, retry_after: int | None = None
    ) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        _slow_clients().labels(phase=phase).inc()
        client = "%s:%d" % self.client if self.client else None  # noqa: UP031 - uvicorn's form
        logger.warning(
            "closing the connection of a client too slow or too large",
            extra={"phase": phase, "client": client, "status": int(status)},
        )
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()  # the app is answering: there is no room for ours
            return
        self._refused = True
        self._reading_headers = False
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app, if it is reading this request, sees it gone
            cycle.message_event.set()
        headers, body = raw_problem(status, detail, retry_after=retry_after)
        lines = [f"HTTP/1.1 {status.value} {status.phrase}".encode()]
        lines += [name + b": " + value for name, value in headers]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._shut)

    def _shut(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def slow_client_protocol(
    *, header_timeout: float, body_timeout: float, max_connections: int
) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn as `http`, with these limits."""
    return type(
        "SlowClientProtocol",
        (SlowClientProtocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
        },
    )


def uvicorn_options(config: BootstrapConfig) -> dict[str, Any]:
    """The uvicorn options that bound slow, idle and too many clients (`config.http_*`)."""
    return {
        "http": slow_client_protocol(
            header_timeout=config.http_header_timeout,
            body_timeout=config.http_body_timeout,
            max_connections=config.http_max_connections,
        ),
        "timeout_keep_alive": config.http_keep_alive_timeout,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,  # the same bound under h11
    }
