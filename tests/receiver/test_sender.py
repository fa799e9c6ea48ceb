"""Sender normalisation (SPEC §4.1), for every input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_gateway.senders import normalise_sender

SEPARATORS = st.sampled_from([" ", "-", ".", "(", ")", "\t", "\u00a0"])


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("+44 7700 900123", "447700900123"),
        ("0044 7700-900-123", "447700900123"),
        ("+1 (650) 555-1212", "16505551212"),
        ("650.555.1212", "6505551212"),
        ("72404", "72404"),
        ("  Google ", "Google"),
        ("AB-CTAXKR", "AB-CTAXKR"),
        ("+Info", "+Info"),
        ("", ""),
        (" - ", ""),
    ],
)
def test_examples(raw: str, canonical: str) -> None:
    assert normalise_sender(raw) == canonical


@given(
    digits=st.text("0123456789", min_size=1, max_size=15),
    prefix=st.sampled_from(["+", "00"]),
    noise=st.lists(SEPARATORS, max_size=20),
    positions=st.lists(st.integers(0, 30), max_size=20),
)
def test_every_formatting_of_an_international_number_gives_its_digits(
    digits: str, prefix: str, noise: list[str], positions: list[int]
) -> None:
    text = list(prefix + digits)
    for separator, position in zip(noise, positions, strict=False):
        # Separators anywhere after the international prefix, or around the whole number.
        text.insert(len(prefix) + min(position, len(digits)), separator)
    assert normalise_sender(" " + "".join(text) + " ") == digits


@given(st.text(min_size=1).filter(lambda s: any(c.isalpha() for c in s)))
def test_a_sender_with_a_letter_is_kept_trimmed(raw: str) -> None:
    assert normalise_sender(raw) == raw.strip()


@given(st.text().filter(lambda s: not any(c.isalpha() for c in s)))
def test_a_number_keeps_no_separator_and_no_international_prefix(raw: str) -> None:
    canonical = normalise_sender(raw)
    assert not any(c.isspace() or c in "-.()" for c in canonical)
    assert not canonical.startswith("+")
    stripped = "".join(c for c in raw if not (c.isspace() or c in "-.()"))
    assert canonical in (stripped, stripped[1:], stripped[2:])
    if not stripped.startswith(("+", "00")):
        assert canonical == stripped
