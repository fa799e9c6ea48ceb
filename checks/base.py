"""What a check is: a function of one SMS and a context that returns a `CheckResult`.

A check returns PASS, FAIL or SKIPPED; it raises only for a bug or an infrastructure fault
(SPEC §6.4 marks such an SMS `error`). Checks are synchronous and do no I/O: the validator
loads everything a batch needs first (settings, secrets, and for the two checks that carry
state between SMS, the `SenderLedger`), runs the checks in memory in UUID order, and writes the
outcome in one transaction. That is what makes a batch equivalent to processing its SMS one at
a time (SPEC §6.1): the k-th SMS of a sender sees the ledger as the (k-1)-th left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Protocol, runtime_checkable
from uuid import UUID

from sms_gateway.settings import RuntimeSettings


class CheckResult(IntEnum):
    """The value stored in each `<name>_check` column of sms_monitor (SPEC §5.2)."""

    NOT_RUN = 0
    PASS = 1
    FAIL = 2
    SKIPPED = 3


@dataclass(frozen=True, slots=True)
class MessageParts:
    """`HEADER<sep>HASH<sep>MOBILE` parsed once (SPEC §5.1); a missing part is None.

    The rules, exactly as §5.1 states them and in this order:
    1. strip leading and trailing white space from the whole message;
    2. split at the separator at most twice, from the left;
    3. `header` is the first part and `hash` the second, both as they are (not trimmed: a
       header or hash with a space in it is wrong, and the checks say so);
    4. `mobile_field` is the rest, trimmed; it may contain the separator again.
    An empty part counts as missing. A separator that is itself white space works the same
    way: two separators in a row leave an empty, so missing, part between them (they are not
    collapsed), and a separator at either end of the message is stripped away with the
    white space in step 1.
    """

    header: str | None
    hash: str | None
    mobile_field: str | None

    @classmethod
    def parse(cls, message: str, separator: str) -> MessageParts:
        if not separator:
            raise ValueError("message_separator must not be empty")
        parts = message.strip().split(separator, 2)
        header = parts[0] or None
        hash_ = (parts[1] or None) if len(parts) > 1 else None
        mobile_field = (parts[2].strip() or None) if len(parts) > 2 else None
        return cls(header, hash_, mobile_field)


@dataclass(frozen=True, slots=True)
class SmsToJudge:
    """One row of input_sms as the checks see it."""

    uuid: UUID
    sender_number: str
    sms_message: str
    received_timestamp: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CheckSecrets:
    """Keys from the environment (SPEC §10); None when not configured."""

    hash_key: bytes | None = None
    mobile_aes_key: bytes | None = None


class SenderLedger(Protocol):
    """Per-sender state that carries from one SMS to the next, as of the SMS being checked.

    The validator fills it for a batch's senders from PostgreSQL (counters, blacklist) and
    Redis (forwarded senders), lets the checks read and change it in UUID order, then persists
    the changes with the batch.
    """

    def increment_count(self, sender_number: str) -> int:
        """Count one more SMS from this sender; return the new count."""

    def is_blacklisted(self, sender_number: str) -> bool: ...

    def blacklist(self, sender_number: str, message_count: int) -> None:
        """Blacklist the sender for exceeding the threshold with `message_count` SMS."""

    def is_forwarded(self, sender_number: str) -> bool:
        """The sender already has an SMS in out_sms (earlier in this batch included)."""


@dataclass(frozen=True, slots=True)
class CheckContext:
    settings: RuntimeSettings
    secrets: CheckSecrets
    parts: MessageParts
    now: datetime  # the time of the check (time_window_reference = processing)
    ledger: SenderLedger


class Check(Protocol):
    """A check: `name` is its column prefix in sms_monitor and its name in check_sequence."""

    @property
    def name(self) -> str: ...

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult: ...


@runtime_checkable
class ConfigurationAware(Protocol):
    """A check that can tell in advance that settings and secrets will make it raise.

    The validator may call this whenever it loads settings, to log or refuse a configuration
    that would otherwise turn every SMS reaching the check into an `error`. The check still
    raises `checks.errors.CheckConfigurationError` when it meets such a configuration, so
    nothing depends on this being called.
    """

    def configuration_problems(
        self, settings: RuntimeSettings, secrets: CheckSecrets
    ) -> tuple[str, ...]:
        """Each problem as a sentence naming the setting or secret; empty when none."""
