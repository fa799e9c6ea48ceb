"""What the check tests share: an in-memory `SenderLedger` and builders of SMS and contexts.

`MemoryLedger` is a test double of the `SenderLedger` protocol (the validator's own ledger is
filled from PostgreSQL and Redis; the checks only see the protocol), not a database mock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from checks.base import CheckContext, CheckSecrets, MessageParts, SmsToJudge
from sms_gateway.settings import RuntimeSettings

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SENDER = "447400123456"
SENDER_NUMBER = "+447400123456"
HASH_KEY = b"operators-hash-key"
AES_KEY = bytes(range(32))


@dataclass
class MemoryLedger:
    counts: dict[str, int] = field(default_factory=dict)
    blacklisted: dict[str, int] = field(default_factory=dict)
    forwarded: set[str] = field(default_factory=set)

    def increment_count(self, sender_number: str) -> int:
        self.counts[sender_number] = self.counts.get(sender_number, 0) + 1
        return self.counts[sender_number]

    def is_blacklisted(self, sender_number: str) -> bool:
        return sender_number in self.blacklisted

    def blacklist(self, sender_number: str, message_count: int) -> None:
        self.blacklisted[sender_number] = message_count

    def is_forwarded(self, sender_number: str) -> bool:
        return sender_number in self.forwarded


def settings(**changes: Any) -> RuntimeSettings:
    """The default settings with `changes`, validated by the settings model."""
    return RuntimeSettings(**changes)


def sms(
    message: str = "",
    *,
    sender: str = SENDER,
    received: datetime = NOW,
    created: datetime = NOW,
) -> SmsToJudge:
    return SmsToJudge(UUID(int=1), sender, message, received, created)


def context(
    message: str = "",
    *,
    config: RuntimeSettings | None = None,
    secrets: CheckSecrets | None = None,
    now: datetime = NOW,
    ledger: MemoryLedger | None = None,
) -> CheckContext:
    config = config or settings()
    return CheckContext(
        settings=config,
        secrets=secrets or CheckSecrets(),
        parts=MessageParts.parse(message, config.message_separator),
        now=now,
        ledger=ledger if ledger is not None else MemoryLedger(),
    )


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
