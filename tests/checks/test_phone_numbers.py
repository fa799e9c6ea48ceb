"""checks.phone_numbers gives phonenumbers' own answer: parse, then region_code_for_number and
is_valid_number, then E.164 digits; held against the public API on every example number of
every region, on those numbers slightly changed, and on random digits after every calling code.
"""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from checks.phone_numbers import JudgedNumber, judge_international


def public_answer(text: str) -> JudgedNumber | None:
    """The mobile check's question asked through phonenumbers' public API."""
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    region = phonenumbers.region_code_for_number(number)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert region is not None
    return JudgedNumber(region, e164[1:])


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def example_numbers() -> list[str]:
    """libphonenumber's example number of every type of every region and non-geographic code."""
    found = {
        e164(number)
        for region in phonenumbers.SUPPORTED_REGIONS
        for kind in phonenumbers.PhoneNumberType.values()
        if (number := phonenumbers.example_number_for_type(region, kind)) is not None
    }
    found |= {
        e164(number)
        for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
        if (number := phonenumbers.example_number_for_non_geo_entity(code)) is not None
    }
    return sorted(found)


EXAMPLES = example_numbers()
CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def test_the_examples_cover_every_region() -> None:
    without = [
        region
        for region in phonenumbers.SUPPORTED_REGIONS
        if phonenumbers.example_number(region) is None
    ]
    assert without == []
    assert len(EXAMPLES) > 1000


@pytest.mark.parametrize("text", EXAMPLES)
def test_every_example_number(text: str) -> None:
    answer = judge_international(text)
    assert answer == public_answer(text)
    assert answer is not None  # libphonenumber's own examples are valid


@pytest.mark.parametrize("text", EXAMPLES)
def test_every_example_number_changed(text: str) -> None:
    """One digit short, one too many, each digit after the calling code raised by one, and a
    national prefix's 0 inserted after the calling code (stripped again where it is one)."""
    code = str(phonenumbers.parse(text).country_code)
    national = text[1 + len(code) :]
    variants = [text[:-1], text + "5", f"+{code}0{national}", f"+{code}1{national}"]
    variants += [
        f"{text[:i]}{(int(text[i]) + 1) % 10}{text[i + 1 :]}"
        for i in range(1 + len(code), len(text))
    ]
    for variant in variants:
        assert judge_international(variant) == public_answer(variant), variant


@examples(max_examples=3000, deadline=None)
@given(
    code=st.sampled_from(CALLING_CODES),
    national=st.text(alphabet="0123456789", min_size=0, max_size=17),
)
def test_random_digits_after_every_calling_code(code: int, national: str) -> None:
    text = f"+{code}{national}"
    assert judge_international(text) == public_answer(text)


@examples(max_examples=1000, deadline=None)
@given(st.text(alphabet="0123456789", min_size=2, max_size=20).filter(lambda d: d[0] != "0"))
def test_random_digits(digits: str) -> None:
    """Unknown calling codes, too short and too long numbers among them."""
    text = f"+{digits}"
    assert judge_international(text) == public_answer(text)


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("+447400123456", "GB"),  # +44 is shared by GB, GG, IM and JE
        ("+447911123456", "GG"),
        ("+441534123456", "JE"),
        ("+447797123456", "JE"),
        ("+447624123456", "IM"),
        ("+12015550123", "US"),  # +1 is shared by 25 regions
        ("+15062345678", "CA"),
        ("+14411234567", None),  # Bermuda's area code, not a number of it
        ("+4402079460000", "GB"),  # a national prefix after the calling code: stripped
        ("+80012345678", "001"),  # a non-geographic calling code
        ("+999123456", None),  # no such calling code
        ("+44", None),
    ],
)
def test_shared_calling_codes_and_edges(text: str, region: str | None) -> None:
    answer = judge_international(text)
    assert answer == public_answer(text)
    assert (answer.region if answer else None) == region
