"""The pipeline of SPEC §5.2: each SMS of a batch, in UUID order, through the checks of
`check_sequence` with early exit, against the batch's ledger.

Pure and synchronous: no I/O happens here, which is what makes a batch equivalent to processing
its SMS one at a time (SPEC §6.1). A check that raises is a bug (checks return FAIL to say
"invalid"): the SMS's ledger changes are rolled back and it is tried again, up to
`max_database_retries` attempts, then judged `error` with no side effects (SPEC §6.4).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from checks.base import Check, CheckContext, CheckResult, CheckSecrets, MessageParts, SmsToJudge
from services.validator.ledger import BatchLedger
from sms_gateway.settings import RuntimeSettings

logger = logging.getLogger(__name__)


class OverallStatus(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CheckRun:
    """One check's run on one SMS, for its trace span (wall-clock nanoseconds)."""

    check: str
    result: CheckResult
    started_ns: int
    ended_ns: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The final judgement of one SMS: what its sms_monitor row says."""

    sms: SmsToJudge
    results: Mapping[str, CheckResult]
    overall_status: OverallStatus
    failed_at_check: str | None
    retry_count: int
    started_at: datetime
    completed_at: datetime
    # With `trace_runs`: the wall clock (ns) before the first check of `results` and after each
    # one, in order (checks run back to back: the i-th ran from run_marks[i] to run_marks[i+1]).
    run_marks: tuple[int, ...] = ()

    @property
    def forwarded(self) -> bool:
        return self.overall_status is OverallStatus.VALID

    @property
    def runs(self) -> tuple[CheckRun, ...]:
        """Each check's run, with its times, when they were recorded."""
        if not self.run_marks:
            return ()
        marks = self.run_marks
        return tuple(
            CheckRun(check, result, marks[i], marks[i + 1])
            for i, (check, result) in enumerate(self.results.items())
        )


@dataclass(frozen=True, slots=True)
class PlannedCheck:
    name: str
    check: Check
    enabled: bool


class CheckRaisedError(Exception):
    """Internal: which check raised, around the original exception."""

    def __init__(self, check: str, cause: Exception) -> None:
        super().__init__(check)
        self.check = check
        self.cause = cause


_NO_RESULTS: Final[Mapping[str, CheckResult]] = {}


def plan(checks: Mapping[str, Check], settings: RuntimeSettings) -> tuple[PlannedCheck, ...]:
    """The checks of `check_sequence`, in order, with their enabled flag (absent = enabled)."""
    return tuple(
        PlannedCheck(name, checks[name], settings.check_enabled.get(name, True))
        for name in settings.check_sequence
    )


def judge_batch(
    batch: Sequence[SmsToJudge],
    *,
    checks: Mapping[str, Check],
    settings: RuntimeSettings,
    secrets: CheckSecrets,
    ledger: BatchLedger,
    batch_id: object = None,
    trace_runs: bool = False,
) -> list[Verdict]:
    """Judge every SMS of `batch` in order; the ledger ends as the last SMS left it."""
    planned = plan(checks, settings)
    attempts = max(1, settings.max_database_retries)
    verdicts: list[Verdict] = []
    for sms in batch:
        parts = MessageParts.parse(sms.sms_message, settings.message_separator)
        started_at = datetime.now(UTC)
        raised: CheckRaisedError | None = None
        for attempt in range(1, attempts + 1):
            ledger.begin_sms()
            try:
                verdict = _judge_once(
                    sms,
                    planned=planned,
                    settings=settings,
                    secrets=secrets,
                    parts=parts,
                    ledger=ledger,
                    started_at=started_at,
                    retries=attempt - 1,
                    trace_runs=trace_runs,
                )
            except CheckRaisedError as exc:
                ledger.rollback_sms()
                raised = exc
                logger.warning(
                    "check raised, SMS left unchanged",
                    exc_info=exc.cause,
                    extra={
                        "sms_uuid": str(sms.uuid),
                        "batch_id": str(batch_id),
                        "check": exc.check,
                        "attempt": attempt,
                    },
                )
                continue
            if verdict.forwarded:
                ledger.forward(sms.sender_number)
            ledger.commit_sms()
            verdicts.append(verdict)
            break
        else:
            assert raised is not None
            logger.error(
                "check raised on every attempt, SMS marked error",
                extra={
                    "sms_uuid": str(sms.uuid),
                    "batch_id": str(batch_id),
                    "check": raised.check,
                    "attempts": attempts,
                },
            )
            verdicts.append(
                Verdict(
                    sms=sms,
                    results=_NO_RESULTS,
                    overall_status=OverallStatus.ERROR,
                    failed_at_check=raised.check,
                    retry_count=attempts,
                    started_at=started_at,
                    completed_at=datetime.now(UTC),
                )
            )
    return verdicts


def _judge_once(
    sms: SmsToJudge,
    *,
    planned: Sequence[PlannedCheck],
    settings: RuntimeSettings,
    secrets: CheckSecrets,
    parts: MessageParts,
    ledger: BatchLedger,
    started_at: datetime,
    retries: int,
    trace_runs: bool,
) -> Verdict:
    results: dict[str, CheckResult] = {}
    marks = [time.time_ns()] if trace_runs else None
    failed_at: str | None = None
    context = CheckContext(
        settings=settings, secrets=secrets, parts=parts, now=datetime.now(UTC), ledger=ledger
    )
    for step in planned:
        if step.enabled:
            try:
                result = step.check(sms, context)
                if result.__class__ is not CheckResult:
                    # A result outside the enum (None, 7) is a bug of the check like a raise.
                    result = CheckResult(result)
            except Exception as exc:
                raise CheckRaisedError(step.name, exc) from exc
        else:
            result = CheckResult.SKIPPED
        results[step.name] = result
        if marks is not None:
            marks.append(time.time_ns())
        if result is CheckResult.FAIL:
            failed_at = step.name
            break
    if failed_at is not None:
        status = OverallStatus.INVALID
    elif CheckResult.PASS in results.values():
        status = OverallStatus.VALID
    else:
        status = OverallStatus.SKIPPED
    return Verdict(
        sms=sms,
        results=results,
        overall_status=status,
        failed_at_check=failed_at,
        retry_count=retries,
        started_at=started_at,
        completed_at=datetime.now(UTC),
        run_marks=() if marks is None else tuple(marks),
    )
