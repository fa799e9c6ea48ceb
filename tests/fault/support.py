"""Running hypothesis (and schemathesis, which is built on it) against an app that lives in the
test's event loop: the property runs in a worker thread and hands each request back to the loop.

hypothesis drives a synchronous function; the apps (their pools, their lifespans) belong to the
running loop of the async test. `in_thread` runs the property while the loop stays free to serve
the requests that `LoopBridge.run` submits to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from hypothesis import strategies as st

from tests.conftest import FreshDatabase

T = TypeVar("T")


@dataclass(frozen=True)
class HugeNumber:
    """An integer literal longer than Python will convert from text (4300 digits): what a
    client can send, but not what `json.dumps` can write or `int()` can read."""

    digits: int


# Any character at all, lone surrogates, NUL and controls included.
ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHARACTER, max_size=40)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=4301, max_value=6000).map(HugeNumber)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


def json_text(document: Any) -> str:
    """As a client would send it: lone surrogates as \\uXXXX escapes, huge integers in full."""
    if isinstance(document, HugeNumber):
        return "9" * document.digits
    if isinstance(document, list):
        return "[" + ", ".join(json_text(item) for item in document) + "]"
    if isinstance(document, dict):
        members = (f"{json_text(str(k))}: {json_text(v)}" for k, v in document.items())
        return "{" + ", ".join(members) + "}"
    return json.dumps(document, ensure_ascii=True)


def as_python(document: Any) -> Any:
    """The document as Python data (a HugeNumber as the integer it would be)."""
    if isinstance(document, HugeNumber):
        return 10**document.digits - 1
    if isinstance(document, list):
        return [as_python(item) for item in document]
    if isinstance(document, dict):
        return {key: as_python(value) for key, value in document.items()}
    return document


def json_bytes(document: Any) -> bytes:
    return json_text(document).encode()


class LoopBridge:
    """Runs coroutines on the test's event loop from the property's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def request(self, client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Any:
        response: httpx.Response = self.run(client.request(method, url, **kwargs))
        return response


async def in_thread(property_test: Callable[[LoopBridge], None]) -> None:
    bridge = LoopBridge(asyncio.get_running_loop())
    await asyncio.to_thread(property_test, bridge)


# ---------------------------------------------------------------------------- real processes


def free_port() -> int:
    """A port the system has free now (the services' own test ranges are shared)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class RunningService:
    process: subprocess.Popen[bytes]
    base_url: str
    host: str
    port: int


@contextlib.contextmanager
def running_receiver(
    database: FreshDatabase, tmp_path: Path, **environment: str
) -> Iterator[RunningService]:
    """The real `sms-receiver` entry point on a free port, as the sms_receiver role through
    pgbouncer; `environment` adds SMSGW_* variables. Its log is shown when the test fails."""
    port = free_port()
    log_path = tmp_path / f"receiver-{port}.log"
    variables = {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(tmp_path),
        "SMSGW_ENVIRONMENT": "development",
        "SMSGW_DATABASE_URL": database.url("sms_receiver"),
        "SMSGW_DB_POOL_MAX_SIZE": "4",
        "SMSGW_HTTP_PORT": str(port),
        "SMSGW_LOG_FORMAT": "text",
        **environment,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "sms-receiver")],
            env=variables,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield RunningService(process, f"http://127.0.0.1:{port}", "127.0.0.1", port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])  # shown on failure


async def wait_ready(service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
        while service.process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError(f"the service exited with {service.process.returncode} before ready")


async def pgbouncer_console(database: FreshDatabase, *commands: str) -> None:
    """Commands to this test stack's own pgbouncer, about this test's database only."""
    console = await asyncpg.connect(
        host="127.0.0.1",
        port=database.stack.pgbouncer_port,
        user="sms_owner",
        password=database.stack.owner_password,
        database="pgbouncer",
        statement_cache_size=0,
    )
    try:
        for command in commands:
            await console.execute(command)  # the console speaks the simple protocol only
    finally:
        await console.close()


@contextlib.asynccontextmanager
async def read_only_database(database: FreshDatabase) -> AsyncIterator[None]:
    """The database refuses writes in every new session, as a standby after a failover would;
    its sessions are ended so that pgbouncer's next server connections are read-only."""
    admin = await asyncpg.connect(database.stack.pg_admin_url)
    try:
        await admin.execute(
            f'ALTER DATABASE "{database.name}" SET default_transaction_read_only = on'
        )
        await _end_sessions(admin, database.name)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{database.name}" RESET default_transaction_read_only')
        await _end_sessions(admin, database.name)
        await admin.close()


async def _end_sessions(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )


async def count_rows(database: FreshDatabase, table: str = "input_sms") -> int:
    connection = await asyncpg.connect(database.direct_url())
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await connection.close()
