"""SPEC §5.1: strip, split at the separator at most twice, the rest trimmed; empty is missing."""

from __future__ import annotations

import pytest

from checks.base import MessageParts


def parts(message: str, separator: str = " ") -> tuple[str | None, str | None, str | None]:
    parsed = MessageParts.parse(message, separator)
    return parsed.header, parsed.hash, parsed.mobile_field


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("OTP ab12 +447400123456", ("OTP", "ab12", "+447400123456")),
        ("  OTP ab12 +447400123456 \n", ("OTP", "ab12", "+447400123456")),
        ("\tOTP ab12 +447400123456\r\n", ("OTP", "ab12", "+447400123456")),
        # The rest keeps further separators; only its ends are trimmed.
        ("OTP ab12 +44 7400 123456", ("OTP", "ab12", "+44 7400 123456")),
        # Two separators in a row leave an empty (missing) part: they are not collapsed.
        ("OTP  ab12 +447400123456", ("OTP", None, "ab12 +447400123456")),
        ("OTP ab12  +447400123456", ("OTP", "ab12", "+447400123456")),
    ],
)
def test_space_separator(message: str, expected: tuple[str | None, str | None, str | None]) -> None:
    assert parts(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("", (None, None, None)),
        ("   ", (None, None, None)),
        ("OTP", ("OTP", None, None)),
        ("OTP ab12", ("OTP", "ab12", None)),
        # A trailing separator is white space, stripped with the rest: the mobile is missing.
        ("OTP ab12 ", ("OTP", "ab12", None)),
        ("OTP ab12    ", ("OTP", "ab12", None)),
    ],
)
def test_missing_parts_are_none(
    message: str, expected: tuple[str | None, str | None, str | None]
) -> None:
    assert parts(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("OTP|ab12|+447400123456", ("OTP", "ab12", "+447400123456")),
        ("OTP|ab12|+44|74", ("OTP", "ab12", "+44|74")),
        ("|ab12|+447400123456", (None, "ab12", "+447400123456")),
        ("OTP||+447400123456", ("OTP", None, "+447400123456")),
        ("OTP|ab12|", ("OTP", "ab12", None)),
        ("OTP|ab12| \t ", ("OTP", "ab12", None)),
        ("OTP|ab12|  +447400123456  ", ("OTP", "ab12", "+447400123456")),
        # Header and hash are taken as they are: white space inside them is theirs to fail on.
        ("OTP |ab12 | +447400123456", ("OTP ", "ab12 ", "+447400123456")),
        (" | |x", (None, " ", "x")),
    ],
)
def test_non_space_separator(
    message: str, expected: tuple[str | None, str | None, str | None]
) -> None:
    assert parts(message, "|") == expected


@pytest.mark.parametrize(
    ("message", "separator", "expected"),
    [
        ("OTP::ab12::+447400123456", "::", ("OTP", "ab12", "+447400123456")),
        ("OTP:ab12::+447400123456", "::", ("OTP:ab12", "+447400123456", None)),
        ("OTP:::ab12::+447400123456", "::", ("OTP", ":ab12", "+447400123456")),
        ("OTP - ab12 - +447400123456", " - ", ("OTP", "ab12", "+447400123456")),
        # The message's white space is stripped first, a separator's own spaces included.
        ("OTP - ab12 -", " - ", ("OTP", "ab12 -", None)),
        ("OTP\tab12\t+447400123456", "\t", ("OTP", "ab12", "+447400123456")),
        ("OTP\t\tab12", "\t", ("OTP", None, "ab12")),
        ("OTP  ab12  +447400123456", "  ", ("OTP", "ab12", "+447400123456")),
        ("OTP   ab12  +447400123456", "  ", ("OTP", " ab12", "+447400123456")),
    ],
)
def test_multi_character_and_white_space_separators(
    message: str, separator: str, expected: tuple[str | None, str | None, str | None]
) -> None:
    assert parts(message, separator) == expected


def test_the_separator_is_not_a_regular_expression() -> None:
    assert parts("OTP.ab12.x", ".") == ("OTP", "ab12", "x")
    assert parts("OTPxab12", ".") == ("OTPxab12", None, None)


def test_an_empty_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="message_separator"):
        MessageParts.parse("OTP ab12", "")
