"""A service's typed state (sms_gateway/lifespan.py): made by the lifespan, read by each request
through its `TypedState`, reported by `/ready`; refused when it is not what the key names."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Final

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from sms_gateway.errors import NotStartedError
from sms_gateway.http import ops_router
from sms_gateway.lifespan import TypedState


@dataclass(frozen=True)
class CounterState:
    greeting: str
    database_answers: bool

    async def ready(self) -> dict[str, bool]:
        return {"database": self.database_answers}


@dataclass(frozen=True)
class OtherState:
    async def ready(self) -> dict[str, bool]:
        return {}


COUNTER: Final = TypedState(CounterState)
OTHER: Final = TypedState(OtherState)


def counter_app(*, database_answers: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, CounterState]]:
        yield COUNTER.for_requests(CounterState("hello", database_answers))

    app = FastAPI(lifespan=lifespan)
    app.include_router(ops_router(COUNTER))

    @app.get("/greeting")
    async def greeting(
        request: Request, state: Annotated[CounterState, Depends(COUNTER.of)]
    ) -> dict[str, str]:
        # A request's own state is a copy: what it adds does not reach the next request.
        seen = getattr(request.state, "note", None)
        request.state.note = "written by an earlier request"
        return {"greeting": state.greeting, "note": str(seen)}

    return app


async def test_handlers_and_ready_read_the_lifespan_s_state() -> None:
    app = counter_app()
    async with (
        COUNTER.serving(app) as (served, state),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://t") as client,
    ):
        assert state == CounterState("hello", database_answers=True)
        for _ in range(2):
            answer = await client.get("/greeting")
            assert answer.json() == {"greeting": "hello", "note": "None"}
        ready = await client.get("/ready")
        assert (ready.status_code, ready.json()["checks"]) == (200, {"database": True})


async def test_ready_is_false_when_a_check_fails_or_before_the_lifespan() -> None:
    async with (
        COUNTER.serving(counter_app(database_answers=False)) as (served, _),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://t") as client,
    ):
        ready = await client.get("/ready")
        assert (ready.status_code, ready.json()["checks"]) == (503, {"database": False})
    # Served without its lifespan (no state at all): not ready, and says why.
    transport = httpx.ASGITransport(app=counter_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ready = await client.get("/ready")
        assert (ready.status_code, ready.json()["checks"]) == (503, {"started": False})


def test_a_state_of_the_wrong_type_or_missing_is_refused() -> None:
    with pytest.raises(TypeError, match="OtherState"):
        COUNTER.for_requests(OtherState())  # type: ignore[arg-type]
    yielded = OTHER.for_requests(OtherState())
    with pytest.raises(NotStartedError, match="CounterState"):
        COUNTER.of_lifespan(yielded)  # another service's state is not this one's
    with pytest.raises(NotStartedError, match="CounterState"):
        COUNTER.of_scope({"type": "http"})
