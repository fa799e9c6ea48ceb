"""Slow and idle clients against the real `sms-receiver` process (sms_gateway.http_limits):
a client that sends its headers or its body a byte at a time, or connects and sends nothing,
is answered 408 and closed at its deadline; idle half-requests past the connection limit are
shed and the receiver answers again once they are gone. Small limits make the test quick;
the defaults are in sms_gateway.config (5 s for headers, 15 s for a body).

A test never asserts a wall-clock time: each slow client gives up by itself only after
`CLIENT_PATIENCE` seconds (Twilio's own webhook timeout), far past the limits; what is asserted
is that the receiver closed the connection first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sms_gateway.http_limits import MAX_HEADER_BYTES
from tests.conftest import FreshDatabase
from tests.fault.support import RunningService, count_rows, running_receiver, wait_ready
from tests.receiver.conftest import SMS

pytestmark = [pytest.mark.fault, pytest.mark.slow]

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 40
CLIENT_PATIENCE = 15.0
LIMITS = {
    "SMSGW_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "SMSGW_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "SMSGW_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}
REQUEST_HEAD = "POST /sms/receive HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"


@pytest.fixture(params=["1", "2"], ids=["one-process", "two-workers"])
async def receiver(
    request: pytest.FixtureRequest, database: FreshDatabase, tmp_path: Path
) -> AsyncIterator[RunningService]:
    with running_receiver(
        database, tmp_path, SMSGW_HTTP_WORKERS=request.param, **LIMITS
    ) as service:
        await wait_ready(service)
        yield service


async def _trickle_until_closed(
    service: RunningService, first: bytes, drip: bytes
) -> tuple[bytes, float]:
    """Send `first`, then `drip` a byte every 0.1 s until the server closes the connection
    (or CLIENT_PATIENCE passes); what the server answered and how long it took."""
    reader, writer = await asyncio.open_connection(service.host, service.port)
    started = time.monotonic()
    answer = b""
    try:
        writer.write(first)
        await writer.drain()
        for byte in drip * 1000:
            if time.monotonic() - started > CLIENT_PATIENCE:
                break
            with contextlib.suppress(TimeoutError):
                chunk = await asyncio.wait_for(reader.read(65536), 0.1)
                answer += chunk
                if not chunk:  # closed by the server
                    break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                answer += await reader.read()
                break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answer, time.monotonic() - started


async def test_a_slow_header_client_is_answered_408_and_closed(
    receiver: RunningService, database: FreshDatabase
) -> None:
    answer, _ = await _trickle_until_closed(
        receiver, REQUEST_HEAD.encode(), b"X-Slow-Header: " + b"a" * 50
    )
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"application/problem+json" in answer
    assert await count_rows(database) == 0


async def test_a_slow_body_client_is_answered_408_and_nothing_is_stored(
    receiver: RunningService, database: FreshDatabase
) -> None:
    head = f"{REQUEST_HEAD}Content-Length: 5000\r\n\r\n".encode()
    answer, _ = await _trickle_until_closed(receiver, head, b'{"sender_number": ')
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert await count_rows(database) == 0
    async with httpx.AsyncClient(base_url=receiver.base_url, timeout=10) as client:
        assert (await client.post("/sms/receive", json=SMS)).status_code == 202


async def test_a_silent_connection_is_closed(receiver: RunningService) -> None:
    reader, writer = await asyncio.open_connection(receiver.host, receiver.port)
    try:
        answer = await asyncio.wait_for(reader.read(), CLIENT_PATIENCE)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_oversized_headers_are_431(receiver: RunningService) -> None:
    reader, writer = await asyncio.open_connection(receiver.host, receiver.port)
    try:
        writer.write(REQUEST_HEAD.encode() + b"X-Big: " + b"a" * 70_000 + b"\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), CLIENT_PATIENCE)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer


async def test_idle_half_requests_do_not_exhaust_the_receiver(
    receiver: RunningService, database: FreshDatabase
) -> None:
    """More idle half-requests than the connection limit: those past it are refused at once
    (503), a real request meanwhile is answered (202, or 503 past the limit: never a hang), the
    rest are closed at their header deadline, and then requests are stored again."""
    idle = [
        await asyncio.open_connection(receiver.host, receiver.port)
        for _ in range(MAX_CONNECTIONS * 2 + 10)
    ]
    try:
        for _, writer in idle:
            writer.write(b"POST /sms/receive HTTP/1.1\r\nHost: recei")
        async with httpx.AsyncClient(base_url=receiver.base_url, timeout=CLIENT_PATIENCE) as c:
            during = await c.post("/sms/receive", json=SMS)
            assert during.status_code in (202, 503), during.text
            if during.status_code == 503:  # past the connection limit: refused at once
                assert during.headers["content-type"] == "application/problem+json"
                assert int(during.headers["retry-after"]) > 0
            closed = await asyncio.wait_for(
                asyncio.gather(*(reader.read() for reader, _ in idle)), CLIENT_PATIENCE
            )
            # Over the limit: 503 at once; within it: 408 at the header deadline.
            statuses = sorted(answer[9:12] for answer in closed)
            assert set(statuses) == {b"408", b"503"}, statuses
            for _, writer in idle:
                writer.close()
            for _ in range(50):  # a refused connection lingers a second before it is closed
                after = await c.post("/sms/receive", json=SMS)
                if after.status_code == 202:
                    break
                assert after.status_code == 503, after.text
                await asyncio.sleep(0.1)
            assert after.status_code == 202, after.text
            metrics = (await c.get("/metrics")).text
    finally:
        for _, writer in idle:
            writer.close()
    assert await count_rows(database) == (2 if during.status_code == 202 else 1)
    assert 'sms_http_slow_clients_total{phase="header"}' in metrics
    assert 'sms_http_slow_clients_total{phase="connections"}' in metrics


async def test_a_request_that_is_not_http_is_400_problem_details(receiver: RunningService) -> None:
    reader, writer = await asyncio.open_connection(receiver.host, receiver.port)
    try:
        writer.write(b"POST /sms/receive HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), CLIENT_PATIENCE)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"application/problem+json" in answer


async def test_a_large_batch_sent_in_one_write_is_not_taken_for_oversized_headers(
    receiver: RunningService, database: FreshDatabase
) -> None:
    """The header limit counts the request line and headers only: a batch whose body arrives
    in the same read as its headers (one write of ~150 KB, as wrk and many clients send it) is
    stored, not refused 431."""
    items = [
        {**SMS, "sender_number": f"+1 555 {index:07d}", "sms_message": f"ACME {index:0100x}"}
        for index in range(1000)
    ]
    body = json.dumps(items).encode()
    assert len(body) > 2 * MAX_HEADER_BYTES
    head = (
        "POST /sms/receive/batch HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(receiver.host, receiver.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), CLIENT_PATIENCE)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]
    assert await count_rows(database) == len(items)
