"""A service's state: one typed object, made by its lifespan, read by every request.

starlette's lifespan state (its docs/lifespan.md, "Lifespan State"): the mapping a lifespan
yields is copied, shallowly, into each request's ASGI scope as `scope["state"]`, which
`request.state` wraps. Each service yields exactly one object there, a frozen dataclass of what
its handlers use (pool, settings store, supervisor of its background tasks...), and reaches it
through its `TypedState`, the same way in the three services:

    RECEIVER: Final = TypedState(ReceiverState)             # services/receiver/state.py

    async def lifespan(app):                                # services/receiver/api.py
        ...
        yield RECEIVER.for_requests(ReceiverState(...))

    State = Annotated[ReceiverState, Depends(RECEIVER.of)]  # a FastAPI handler's parameter
    RECEIVER.of_scope(scope)                                # a pure ASGI app
    state: ReceiverState = scope["state"][RECEIVER.key]     # a hot path, without the call

Nothing is put on `app.state`: the state exists only while the lifespan runs, and only the
lifespan makes it. Every state has `ready()`, the checks that `/ready` reports
(`sms_gateway.http.ops_router`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Generic, Protocol, TypeVar

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sms_gateway.errors import NotStartedError


class ServiceState(Protocol):
    """What every service's state offers besides its own fields."""

    async def ready(self) -> dict[str, bool]:
        """Each dependency and background task by name: True when it answers (runs)."""
        ...


S = TypeVar("S", bound=ServiceState)


class TypedState(Generic[S]):
    """The key under which a lifespan hands its state of type `S` to requests, and the typed
    ways to read it back. The type is checked once, when the lifespan yields the state, so a
    read is two dictionary lookups: a path that counts every 100 ns (the receiver's SMS
    endpoints) makes them itself with `key` instead of calling `of_scope`."""

    __slots__ = ("key", "kind")

    def __init__(self, kind: type[S]) -> None:
        self.kind = kind
        self.key: Final = f"{kind.__module__}.{kind.__qualname__}"

    def for_requests(self, state: S) -> dict[str, S]:
        """What the lifespan yields."""
        if not isinstance(state, self.kind):
            raise TypeError(f"the lifespan's state is a {type(state).__name__}, not {self.key}")
        return {self.key: state}

    def of_scope(self, scope: Scope) -> S:
        """The state of a request, from its ASGI scope."""
        try:
            state: S = scope["state"][self.key]
        except KeyError:
            raise NotStartedError(f"no {self.kind.__name__}: the lifespan has not run") from None
        return state

    def of(self, request: Request) -> S:
        """The state of a request: a FastAPI dependency."""
        return self.of_scope(request.scope)

    def of_lifespan(self, yielded: Mapping[str, Any] | None) -> S:
        """The state in what a lifespan yielded (in-process clients: tests, benchmarks)."""
        return self.of_scope({"state": yielded or {}})

    @asynccontextmanager
    async def serving(self, app: FastAPI) -> AsyncIterator[tuple[ASGIApp, S]]:
        """Run `app`'s lifespan in this process, and give an ASGI app that hands each request a
        copy of the lifespan's state as a server does (httpx's ASGITransport runs no lifespan),
        with the state itself."""
        async with app.router.lifespan_context(app) as yielded:
            state = dict(yielded or {})

            async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] in {"http", "websocket"}:
                    scope = {**scope, "state": dict(state)}
                await app(scope, receive, send)

            yield with_state, self.of_lifespan(state)
