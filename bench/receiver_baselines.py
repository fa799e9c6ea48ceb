"""Baselines for the receiver benchmark, served beside it in the same run (never in the
production service):

* `naive_app`: the same endpoint, but one INSERT and one commit per request: what group
  commit is measured against.
* `no_database_app`: the same endpoint that validates the body and answers without touching
  the database: the ceiling of this HTTP stack on this machine.

Both parse and validate with the receiver's own code, so that only the storage differs.
Run with `uvicorn --factory bench.receiver_baselines:naive_app` (SMSGW_DATABASE_URL set).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.receiver import incoming
from services.receiver.errors import InvalidSms
from sms_gateway import db

NAIVE_INSERT = """
INSERT INTO input_sms (sender_number, sms_message, received_timestamp, source)
VALUES ($1, $2, $3, 'api')
RETURNING uuid
"""


def _parse(body: bytes) -> incoming.SmsToStore:
    return incoming.single_sms(
        incoming.parse_json_body(body), max_message_length=1600, source="api", client_event_id=None
    )


def _invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidSms)
    return JSONResponse({"detail": str(exc)}, status_code=422)


def naive_app() -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        pool = await db.create_pool(os.environ["SMSGW_DATABASE_URL"], min_size=8, max_size=8)
        try:
            yield {"pool": pool}
        finally:
            await db.close_pool(pool)

    app = FastAPI(lifespan=lifespan)
    app.add_exception_handler(InvalidSms, _invalid)

    @app.post("/sms/receive", status_code=202)
    async def receive(request: Request) -> Response:
        sms = _parse(await request.body())
        async with db.transaction(request.state.pool) as connection:
            stored = await connection.fetchval(
                NAIVE_INSERT, sms.sender_number, sms.sms_message, sms.received_timestamp
            )
        return JSONResponse({"uuid": str(stored)}, status_code=202)

    return app


def no_database_app() -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(InvalidSms, _invalid)

    @app.post("/sms/receive", status_code=202)
    async def receive(request: Request) -> Response:
        _parse(await request.body())
        return JSONResponse({"uuid": str(uuid.uuid4())}, status_code=202)

    return app
