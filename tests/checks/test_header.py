"""header: full match of header_pattern, membership of header_allowed, and the skip."""

from __future__ import annotations

import pytest

from checks.base import CheckResult
from checks.header import check as header
from tests.checks.support import context, settings, sms

PASS, FAIL, SKIPPED = CheckResult.PASS, CheckResult.FAIL, CheckResult.SKIPPED


def judge(message: str, pattern: str, allowed: tuple[str, ...] = ()) -> CheckResult:
    config = settings(header_pattern=pattern, header_allowed=allowed)
    return header(sms(message), context(message, config=config))


@pytest.mark.parametrize(
    ("message", "pattern", "allowed", "expected"),
    [
        # Both empty: skipped, whatever the header, even a missing one.
        ("otp x y", "", (), SKIPPED),
        ("", "", (), SKIPPED),
        # Pattern only (the default pattern).
        ("OTP x y", r"^[A-Z][A-Z0-9]{1,10}$", (), PASS),
        ("O x y", r"^[A-Z][A-Z0-9]{1,10}$", (), FAIL),
        ("OTP12345678 x y", r"^[A-Z][A-Z0-9]{1,10}$", (), PASS),
        ("OTP123456789 x y", r"^[A-Z][A-Z0-9]{1,10}$", (), FAIL),
        ("otp x y", r"^[A-Z][A-Z0-9]{1,10}$", (), FAIL),
        # Full match, with or without anchors in the pattern.
        ("OTPX x y", "OTP", (), FAIL),
        ("XOTP x y", "OTP", (), FAIL),
        ("OTP x y", "OTP", (), PASS),
        ("OTP x y", "OTP|BANK", (), PASS),
        ("BANK x y", "OTP|BANK", (), PASS),
        # Allowed only.
        ("OTP x y", "", ("OTP", "BANK"), PASS),
        ("BANK x y", "", ("OTP", "BANK"), PASS),
        ("SHOP x y", "", ("OTP", "BANK"), FAIL),
        ("otp x y", "", ("OTP",), FAIL),
        # Both: the header must satisfy both.
        ("OTP x y", r"[A-Z]+", ("OTP",), PASS),
        ("SHOP x y", r"[A-Z]+", ("OTP",), FAIL),
        ("otp x y", r"[a-z]+", ("OTP",), FAIL),
        ("otp x y", r"[A-Z]+", ("otp",), FAIL),
        # A missing header fails when anything is required of it.
        ("", r".*", (), FAIL),
        ("", "", ("OTP",), FAIL),
    ],
)
def test_header(
    message: str, pattern: str, allowed: tuple[str, ...], expected: CheckResult
) -> None:
    assert judge(message, pattern, allowed) is expected


def test_header_is_taken_as_it_is_with_a_non_space_separator() -> None:
    config = settings(message_separator="|", header_pattern="OTP")
    assert header(sms(), context("OTP|x|y", config=config)) is PASS
    assert header(sms(), context("OTP |x|y", config=config)) is FAIL


def test_a_trailing_newline_does_not_slip_through_a_dollar_anchor() -> None:
    config = settings(message_separator="|", header_pattern=r"^OTP$")
    assert header(sms(), context("OTP\n|x|y", config=config)) is FAIL


def test_pattern_change_takes_effect_at_once() -> None:
    assert judge("OTP x y", "OTP") is PASS
    assert judge("OTP x y", "BANK") is FAIL
    assert judge("OTP x y", "OTP") is PASS
