"""`BatchLedger`: the per-sender state of one batch, in memory (the `SenderLedger` of checks/base).

It is loaded for the batch's distinct senders inside the batch transaction (counters and
blacklist rows from PostgreSQL, forwarded senders from the Redis index), changed by the checks in
UUID order, and persisted with the batch. Each SMS runs between `begin_sms` and `commit_sms` or
`rollback_sms`: a journal of undo steps lets an SMS whose check raised leave no trace (SPEC §6.4
and §7), so that a requeue later counts nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class BatchLedger:
    counts: dict[str, int]
    blacklisted: set[str]
    forwarded: set[str]
    # What the batch changed, to persist: the final count of every counted sender, and the
    # count at which each sender was blacklisted by the threshold.
    counted: dict[str, int] = field(default_factory=dict)
    newly_blacklisted: dict[str, int] = field(default_factory=dict)
    _journal: list[Callable[[], None]] | None = None

    @classmethod
    def load(
        cls,
        senders: Iterable[str],
        *,
        counts: Mapping[str, int],
        blacklisted: Iterable[str],
        forwarded: Iterable[str],
    ) -> BatchLedger:
        wanted = set(senders)
        return cls(
            counts={s: c for s, c in counts.items() if s in wanted},
            blacklisted=set(blacklisted) & wanted,
            forwarded=set(forwarded) & wanted,
        )

    # ------------------------------------------------------------ SenderLedger
    def increment_count(self, sender_number: str) -> int:
        before_count = self.counts.get(sender_number)
        before_counted = self.counted.get(sender_number)
        new = (before_count or 0) + 1
        self.counts[sender_number] = new
        self.counted[sender_number] = new

        def undo() -> None:
            _restore(self.counts, sender_number, before_count)
            _restore(self.counted, sender_number, before_counted)

        self._record(undo)
        return new

    def is_blacklisted(self, sender_number: str) -> bool:
        return sender_number in self.blacklisted

    def blacklist(self, sender_number: str, message_count: int) -> None:
        was_listed = sender_number in self.blacklisted
        before = self.newly_blacklisted.get(sender_number)
        self.blacklisted.add(sender_number)
        self.newly_blacklisted[sender_number] = message_count

        def undo() -> None:
            if not was_listed:
                self.blacklisted.discard(sender_number)
            _restore(self.newly_blacklisted, sender_number, before)

        self._record(undo)

    def is_forwarded(self, sender_number: str) -> bool:
        return sender_number in self.forwarded

    # ------------------------------------------------------------ the engine's side
    def forward(self, sender_number: str) -> None:
        """A valid SMS goes to out_sms: its sender's next SMS is a duplicate."""
        was_forwarded = sender_number in self.forwarded
        self.forwarded.add(sender_number)
        if not was_forwarded:
            self._record(lambda: self.forwarded.discard(sender_number))

    def begin_sms(self) -> None:
        self._journal = []

    def commit_sms(self) -> None:
        self._journal = None

    def rollback_sms(self) -> None:
        """Undo every change since `begin_sms`, newest first."""
        journal, self._journal = self._journal or [], None
        for undo in reversed(journal):
            undo()

    def _record(self, undo: Callable[[], None]) -> None:
        if self._journal is not None:
            self._journal.append(undo)


def _restore(mapping: dict[str, int], key: str, value: int | None) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value
