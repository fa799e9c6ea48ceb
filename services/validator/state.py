"""What the validator's endpoints use, built in its lifespan (`app.create_app`) and read by each
request through `VALIDATOR` (sms_gateway/lifespan.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from services.validator.engine import Engine
from sms_gateway import db
from sms_gateway.lifespan import TypedState
from sms_gateway.service import Supervisor


@dataclass(frozen=True, slots=True)
class ValidatorState:
    pool: db.Pool
    engine: Engine
    engine_task: asyncio.Task[None]  # the engine's run(), under `supervisor`
    supervisor: Supervisor

    async def ready(self) -> dict[str, bool]:
        return {
            "database": await db.is_ready(self.pool),
            "engine": self.engine.started and self.supervisor.healthy,
            # False while a batch, lease or index operation waits out a transient fault (Redis
            # full or gone, a read-only database...): the log names it.
            "judging": not self.engine.waiting,
        }


VALIDATOR: Final = TypedState(ValidatorState)
