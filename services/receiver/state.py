"""What the receiver's endpoints use, built in its lifespan (`api.create_app`) and read by each
request through `RECEIVER` (sms_gateway/lifespan.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from services.receiver.config import ReceiverConfig
from services.receiver.store import SmsStore
from services.receiver.tracing import ReceiveSpans
from sms_gateway import db
from sms_gateway.lifespan import TypedState
from sms_gateway.service import Supervisor
from sms_gateway.settings import SettingsStore


@dataclass(frozen=True, slots=True)
class ReceiverState:
    config: ReceiverConfig
    pool: db.Pool
    settings: SettingsStore
    store: SmsStore
    spans: ReceiveSpans | None  # None: tracing is off
    supervisor: Supervisor  # the settings refresher and the group-commit flusher

    @property
    def max_message_length(self) -> int:
        return self.settings.current.max_message_length

    async def ready(self) -> dict[str, bool]:
        # Writable: a read-only database (a standby) answers, but no SMS can be stored.
        return {
            "database": await db.is_ready(self.pool, writable=True),
            "background": self.supervisor.healthy,
        }


RECEIVER: Final = TypedState(ReceiverState)
