"""A reference model of SPEC §5 and §6: every SMS judged alone, in uuid order, over plain dicts.

It is the oracle of the validator's equivalence and fault tests, written from the SPEC and sharing
no code with the engine: not the ledger, the pipeline, the batch runner, the partitions or the
SQL. The four checks that are pure functions of an SMS and the settings (header, hash_length,
mobile, time_window) are the `checks/` modules, whose own tests are their oracles; the two that
carry state between SMS (blacklist, duplicate) and everything the engine writes are modelled
here, as the SPEC states them:

- blacklist: count the SMS; fail when the new count exceeds the threshold (and list the sender
  with that count; a row already there keeps its reason), or when the sender is listed;
- duplicate: fail when the sender already has a row in out_sms;
- the first failing check in `check_sequence` ends the SMS (`invalid`, `failed_at_check`); a
  disabled check records 3 and the pipeline goes on; with a pass and no fail the SMS is
  `valid`, goes to out_sms and its sender to the set; with neither it is `skipped`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import checks
from checks.base import CheckContext, CheckSecrets, MessageParts, SmsToJudge
from sms_gateway.settings import RuntimeSettings

PASS, FAIL, SKIPPED = 1, 2, 3
STATEFUL = ("blacklist", "duplicate")


class _NoLedger:
    """The pure checks never touch the ledger; any use would be a bug of the model."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a pure check used the ledger: {name}")


@dataclass
class Model:
    counts: dict[str, int] = field(default_factory=dict)
    blacklist: dict[str, tuple[str, int]] = field(default_factory=dict)  # reason, count
    out_sms: list[tuple[UUID, str, str]] = field(default_factory=list)
    forwarded: set[str] = field(default_factory=set)
    monitor: dict[UUID, tuple[Any, ...]] = field(default_factory=dict)

    def judge_all(
        self,
        rows: Iterable[SmsToJudge],
        settings: RuntimeSettings,
        secrets: CheckSecrets = CheckSecrets(),  # noqa: B008 (frozen, never mutated)
        *,
        now: datetime,
    ) -> None:
        for sms in sorted(rows, key=lambda row: row.uuid):
            self.judge(sms, settings, secrets, now=now)

    def judge(
        self, sms: SmsToJudge, settings: RuntimeSettings, secrets: CheckSecrets, *, now: datetime
    ) -> None:
        sender = sms.sender_number
        results: dict[str, int] = {}
        failed_at: str | None = None
        for name in settings.check_sequence:
            if not settings.check_enabled.get(name, True):
                results[name] = SKIPPED
                continue
            if name == "blacklist":
                count = self.counts.get(sender, 0) + 1
                self.counts[sender] = count
                if count > settings.blacklist_threshold:
                    reason = self.blacklist.get(sender, ("threshold_exceeded", 0))[0]
                    self.blacklist[sender] = (reason, count)
                    result = FAIL
                else:
                    result = FAIL if sender in self.blacklist else PASS
            elif name == "duplicate":
                result = FAIL if sender in self.forwarded else PASS
            else:
                context = CheckContext(
                    settings=settings,
                    secrets=secrets,
                    parts=MessageParts.parse(sms.sms_message, settings.message_separator),
                    now=now,
                    ledger=_NoLedger(),
                )
                result = int(checks.REGISTRY[name](sms, context))
            results[name] = result
            if result == FAIL:
                failed_at = name
                break
        if failed_at is not None:
            status = "invalid"
        elif PASS in results.values():
            status = "valid"
            self.out_sms.append((sms.uuid, sender, sms.sms_message))
            self.forwarded.add(sender)
        else:
            status = "skipped"
        columns = tuple(results.get(name, 0) for name in checks.REGISTRY)
        self.monitor[sms.uuid] = (sms.uuid, *columns, status, failed_at, 0)

    def state(self) -> dict[str, Any]:
        """In the shape of tests.validator.conftest.final_state."""
        return {
            "sms_monitor": [self.monitor[u] for u in sorted(self.monitor)],
            "out_sms": sorted(self.out_sms),
            "count_sms": sorted(self.counts.items()),
            "blacklist_sms": sorted((s, r, c) for s, (r, c) in self.blacklist.items()),
        }


def model_of(
    rows: Iterable[SmsToJudge],
    settings: RuntimeSettings,
    *,
    now: datetime,
    operator_blacklist: Mapping[str, str] | None = None,
) -> Model:
    model = Model()
    for sender, reason in (operator_blacklist or {}).items():
        model.blacklist[sender] = (reason, 0)
    model.judge_all(rows, settings, now=now)
    return model
