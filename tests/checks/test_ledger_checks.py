"""blacklist and duplicate: the two checks that carry state between SMS, through the ledger."""

from __future__ import annotations

import pytest

from checks.base import CheckResult
from checks.blacklist import check as blacklist
from checks.duplicate import check as duplicate
from tests.checks.support import SENDER, MemoryLedger, context, settings, sms

OTHER = "33612345678"


def run_blacklist(ledger: MemoryLedger, threshold: int = 10, sender: str = SENDER) -> CheckResult:
    return blacklist(
        sms(sender=sender),
        context(config=settings(blacklist_threshold=threshold), ledger=ledger),
    )


def test_threshold_10_passes_the_tenth_and_fails_and_blacklists_the_eleventh() -> None:
    ledger = MemoryLedger()
    results = [run_blacklist(ledger) for _ in range(10)]
    assert results == [CheckResult.PASS] * 10
    assert ledger.counts == {SENDER: 10}
    assert ledger.blacklisted == {}

    assert run_blacklist(ledger) is CheckResult.FAIL
    assert ledger.counts == {SENDER: 11}
    assert ledger.blacklisted == {SENDER: 11}


def test_past_the_threshold_every_sms_counts_fails_and_updates_the_blacklist_count() -> None:
    ledger = MemoryLedger(counts={SENDER: 11}, blacklisted={SENDER: 11})
    assert run_blacklist(ledger) is CheckResult.FAIL
    assert ledger.counts[SENDER] == 12
    assert ledger.blacklisted[SENDER] == 12


def test_an_already_blacklisted_sender_fails_and_still_counts() -> None:
    ledger = MemoryLedger(blacklisted={SENDER: 3})
    assert run_blacklist(ledger) is CheckResult.FAIL
    assert ledger.counts == {SENDER: 1}
    # Below the threshold: the existing row is left as it is.
    assert ledger.blacklisted == {SENDER: 3}


def test_senders_are_counted_apart() -> None:
    ledger = MemoryLedger(counts={SENDER: 10})
    assert run_blacklist(ledger, sender=OTHER) is CheckResult.PASS
    assert ledger.counts == {SENDER: 10, OTHER: 1}


@pytest.mark.parametrize(("threshold", "passes"), [(1, 1), (2, 2), (10, 10)])
def test_exactly_threshold_sms_pass(threshold: int, passes: int) -> None:
    ledger = MemoryLedger()
    results = [run_blacklist(ledger, threshold) for _ in range(threshold + 2)]
    assert results == [CheckResult.PASS] * passes + [CheckResult.FAIL] * 2


def test_duplicate_fails_a_forwarded_sender_and_passes_others() -> None:
    ledger = MemoryLedger(forwarded={SENDER})
    assert duplicate(sms(sender=SENDER), context(ledger=ledger)) is CheckResult.FAIL
    assert duplicate(sms(sender=OTHER), context(ledger=ledger)) is CheckResult.PASS


def test_duplicate_sees_a_sender_forwarded_earlier_in_the_batch() -> None:
    ledger = MemoryLedger()
    assert duplicate(sms(), context(ledger=ledger)) is CheckResult.PASS
    ledger.forwarded.add(SENDER)  # what the validator does when the first SMS is valid
    assert duplicate(sms(), context(ledger=ledger)) is CheckResult.FAIL
    # duplicate only reads the ledger.
    assert ledger.counts == {}
    assert ledger.blacklisted == {}
