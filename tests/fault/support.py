"""Running hypothesis (and schemathesis, which is built on it) against an app that lives in the
test's event loop: the property runs in a worker thread and hands each request back to the loop.

hypothesis drives a synchronous function; the apps (their pools, their lifespans) belong to the
running loop of the async test. `in_thread` runs the property while the loop stays free to serve
the requests that `LoopBridge.run` submits to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from hypothesis import strategies as st

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
