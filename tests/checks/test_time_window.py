"""time_window: delay against the window, future skew against max skew, both references."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from checks.base import CheckResult
from checks.time_window import check as time_window
from tests.checks.support import NOW, context, seconds, settings, sms

PASS, FAIL, SKIPPED = CheckResult.PASS, CheckResult.FAIL, CheckResult.SKIPPED
TICK = timedelta(microseconds=1)


def judge(
    received: datetime,
    created: datetime = NOW,
    *,
    now: datetime = NOW,
    window: int = 3600,
    skew: int = 300,
    reference: str = "arrival",
) -> CheckResult:
    config = settings(
        validation_time_window=window, time_window_max_skew=skew, time_window_reference=reference
    )
    return time_window(sms(received=received, created=created), context(config=config, now=now))


def test_window_zero_skips_even_an_absurd_timestamp() -> None:
    assert judge(NOW - timedelta(days=3650), window=0) is SKIPPED
    assert judge(NOW + timedelta(days=3650), window=0) is SKIPPED


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (seconds(0), PASS),
        (seconds(3599), PASS),
        (seconds(3600) - TICK, PASS),
        (seconds(3600), PASS),  # exactly the window
        (seconds(3600) + TICK, FAIL),
        (seconds(3601), FAIL),
    ],
)
def test_arrival_delay_at_the_boundary(delay: timedelta, expected: CheckResult) -> None:
    # The validator may run much later: with `arrival`, its own clock does not matter.
    assert judge(NOW - delay, now=NOW + timedelta(days=2)) is expected


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (seconds(3600), PASS),
        (seconds(3600) + TICK, FAIL),
    ],
)
def test_processing_delay_counts_from_the_time_of_the_check(
    delay: timedelta, expected: CheckResult
) -> None:
    later = NOW + seconds(600)
    received = later - delay
    # Arrived in time (created_at = received), judged late: only `processing` cares.
    assert judge(received, received, now=later, reference="processing") is expected
    assert judge(received, received, now=later, reference="arrival") is PASS


@pytest.mark.parametrize(
    ("ahead", "expected"),
    [
        (seconds(0), PASS),
        (seconds(300) - TICK, PASS),
        (seconds(300), PASS),  # exactly the allowed skew
        (seconds(300) + TICK, FAIL),
        (timedelta(days=1), FAIL),
    ],
)
@pytest.mark.parametrize("reference", ["arrival", "processing"])
def test_future_skew_at_the_boundary(
    ahead: timedelta, expected: CheckResult, reference: str
) -> None:
    assert judge(NOW + ahead, now=NOW, reference=reference) is expected


def test_skew_is_measured_from_arrival_even_with_processing_reference() -> None:
    # Received "in the future" of its arrival, but not of the (later) check: still tampering.
    assert judge(NOW + seconds(301), now=NOW + seconds(900), reference="processing") is FAIL


def test_zero_skew_allows_no_future_at_all() -> None:
    assert judge(NOW, skew=0) is PASS
    assert judge(NOW + TICK, skew=0) is FAIL


def test_a_window_of_one_second() -> None:
    assert judge(NOW - seconds(1), window=1) is PASS
    assert judge(NOW - seconds(1) - TICK, window=1) is FAIL


def test_time_zones_do_not_matter() -> None:
    tokyo = timezone(timedelta(hours=9))
    received = (NOW - seconds(3600)).astimezone(tokyo)
    assert judge(received) is PASS
    assert judge(received - TICK) is FAIL


def test_mixing_naive_and_aware_times_is_a_bug_not_a_result() -> None:
    with pytest.raises(TypeError):
        judge(NOW.replace(tzinfo=None))
