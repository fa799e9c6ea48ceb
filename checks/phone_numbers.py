"""libphonenumber's verdict on an international number written as `+` and ASCII digits, at a
fraction of its cost.

The mobile check (SPEC §5.3) asks of each decoded field what `phonenumbers.parse(text, None)`,
`region_code_for_number` and `is_valid_number` answer together: does it parse, is it valid, in
which region, and what are its E.164 digits. Asked through the public API, that costs ~25 µs per
number, a third of the validator's Python at production load (docs/benchmarks.md, "Validator"):
`parse` handles every way of writing a number (spaces, letters, extensions, IDD prefixes) and
the validation compiles and matches each of a region's ten number-type patterns in turn.

`judge_international` answers the same questions for the one shape the mobile check lets
through, from phonenumbers' own metadata, following `phonenumberutil` step by step (its function
names are in the comments below). What it adds is only speed: for each region and each length
of national number, the patterns of every number type are compiled once into one alternation,
so a validation is two regular-expression matches. phonenumbers stays the source of truth: its
metadata is the data, its national-prefix stripping is called as it is (a private function,
pinned with the package in constraints.txt), and tests/checks/test_phone_numbers.py holds this
module to the public API's answer on every example number of every region and on random digits
after every calling code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import (
    ValidationResult,
    _maybe_strip_national_prefix_carrier_code,
    _test_number_length,
)

# phonenumberutil's own bounds: _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN, _MAX_LENGTH_COUNTRY_CODE.
_MIN_NATIONAL: Final = 2
_MAX_NATIONAL: Final = 17
_MAX_CALLING_CODE: Final = 3
_NON_GEOGRAPHIC: Final = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY

# The number types `_number_type_helper` tries, in its order; `mobile` is tried last, and only
# when a region's mobile and fixed-line patterns differ. A number is valid when it matches the
# general description and any one of these.
_NUMBER_TYPES: Final = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)

# `parse` keeps a national number stripped of its national prefix unless the stripped number's
# length is one of these (`_test_number_length`).
_KEEP_UNSTRIPPED: Final = frozenset(
    {
        ValidationResult.TOO_SHORT,
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        ValidationResult.INVALID_LENGTH,
    }
)


@dataclass(frozen=True, slots=True)
class JudgedNumber:
    """A number libphonenumber judges valid: its region and its E.164 digits (without `+`)."""

    region: str
    e164_digits: str


class _Validity:
    """`_number_type_helper(nsn, metadata) != UNKNOWN` for one region's metadata, compiled once
    per length of national number."""

    __slots__ = ("_by_length", "_descriptions", "_general")

    def __init__(self, metadata: PhoneMetadata) -> None:
        names: tuple[str, ...] = _NUMBER_TYPES
        if not metadata.same_mobile_and_fixed_line_pattern:
            names = (*_NUMBER_TYPES, "mobile")
        self._general = _description(metadata.general_desc)
        self._descriptions = tuple(
            description
            for description in (_description(getattr(metadata, name)) for name in names)
            if description is not None
        )
        self._by_length: dict[int, tuple[re.Pattern[str], re.Pattern[str]] | None] = {}

    def __call__(self, national: str) -> bool:
        length = len(national)
        try:
            patterns = self._by_length[length]
        except KeyError:
            patterns = self._by_length[length] = self._compile(length)
        if patterns is None:
            return False
        general, any_type = patterns
        return general.fullmatch(national) is not None and any_type.fullmatch(national) is not None

    def _compile(self, length: int) -> tuple[re.Pattern[str], re.Pattern[str]] | None:
        # `_is_number_matching_desc`: a description matches a number of a length it lists (or of
        # any length when it lists none) whose whole text its pattern matches.
        if self._general is None or not self._general.admits(length):
            return None
        patterns = [d.pattern for d in self._descriptions if d.admits(length)]
        if not patterns:
            return None
        any_type = "|".join(f"(?:{pattern})" for pattern in patterns)
        return re.compile(self._general.pattern), re.compile(any_type)


@dataclass(frozen=True, slots=True)
class _Description:
    pattern: str
    lengths: frozenset[int]

    def admits(self, length: int) -> bool:
        return not self.lengths or length in self.lengths


def _description(desc: phonenumbers.PhoneNumberDesc | None) -> _Description | None:
    # `_match_national_number`: a description without a pattern matches nothing.
    if desc is None or not desc.national_number_pattern:
        return None
    return _Description(desc.national_number_pattern, frozenset(desc.possible_length or ()))


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One region of a calling code: how `region_code_for_number` picks it among the code's
    regions, and how `is_valid_number_for_region` then judges a number of it."""

    region: str
    # By the leading digits of the region's metadata, or else by the validity of the number
    # against it; None when the region has no metadata (never picked).
    leading_digits: re.Pattern[str] | None
    picked_if_valid: _Validity | None
    # None when the region cannot validate numbers of this calling code.
    valid: _Validity | None


@dataclass(frozen=True, slots=True)
class _CallingCode:
    code: str
    # The metadata `parse` strips a national prefix with (`metadata_for_region_or_calling_code`
    # of the code's main region), and the start of a number that may be one: numbers that do
    # not start so are left as they are (`_maybe_strip_national_prefix_carrier_code`).
    parsing: PhoneMetadata | None
    national_prefix: re.Pattern[str] | None
    candidates: tuple[_Candidate, ...]


_CALLING_CODES: dict[int, _CallingCode] = {}


def _calling_code(code: int) -> _CallingCode:
    known = _CALLING_CODES.get(code)
    if known is None:
        known = _CALLING_CODES[code] = _load_calling_code(code)
    return known


def _load_calling_code(code: int) -> _CallingCode:
    validities: dict[int, _Validity] = {}  # by metadata, so that a region's is compiled once

    def validity(metadata: PhoneMetadata) -> _Validity:
        known = validities.get(id(metadata))
        if known is None:
            known = validities[id(metadata)] = _Validity(metadata)
        return known

    candidates = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]:
        picking = PhoneMetadata.metadata_for_region(region, None)
        # `is_valid_number_for_region`: the region's metadata (the calling code's for the
        # non-geographic entity), and only if the region really has this calling code.
        judging = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
        usable = judging is not None and (
            region == _NON_GEOGRAPHIC or phonenumbers.country_code_for_valid_region(region) == code
        )
        leading = picking.leading_digits if picking is not None else None
        candidates.append(
            _Candidate(
                region,
                re.compile(leading) if leading is not None else None,
                validity(picking) if picking is not None and leading is None else None,
                validity(judging) if usable and judging is not None else None,
            )
        )
    parsing = PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code)
    )
    prefix = parsing.national_prefix_for_parsing if parsing is not None else None
    return _CallingCode(
        str(code), parsing, re.compile(prefix) if prefix else None, tuple(candidates)
    )


def judge_international(text: str) -> JudgedNumber | None:
    """What phonenumbers says of `text`, which must be `+` and ASCII digits: the region and
    E.164 digits of a number that parses and is valid, else None."""
    digits = text[1:]
    # `_maybe_extract_country_code`: after the `+`, more than two digits, starting with a
    # calling code (`_extract_country_code`: the first of its first one, two or three digits
    # that is one; never one starting with 0).
    if len(digits) <= _MIN_NATIONAL or digits[0] == "0":
        return None
    for size in range(1, _MAX_CALLING_CODE + 1):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[size:]
    if len(national) < _MIN_NATIONAL:
        return None
    calling = _calling_code(code)
    metadata = calling.parsing
    if metadata is not None and calling.national_prefix and calling.national_prefix.match(national):
        _, stripped, _ = _maybe_strip_national_prefix_carrier_code(national, metadata)
        if stripped != national and _test_number_length(stripped, metadata) not in _KEEP_UNSTRIPPED:
            national = stripped
    if not _MIN_NATIONAL <= len(national) <= _MAX_NATIONAL:
        return None
    # The national significant number is `national` itself: `parse` keeps its leading zeros
    # (`_set_italian_leading_zeros_for_phone_number`), and E.164 writes them back.
    region = _valid_region(calling.candidates, national)
    return None if region is None else JudgedNumber(region, calling.code + national)


def _valid_region(candidates: tuple[_Candidate, ...], national: str) -> str | None:
    # `region_code_for_number`: the only region of the calling code, or the first that
    # `_region_code_for_number_from_list` picks; then `is_valid_number_for_region` of it.
    picked = candidates[0] if len(candidates) == 1 else _pick(candidates, national)
    if picked is None or picked.valid is None:
        return None
    if picked.valid is picked.picked_if_valid and len(candidates) > 1:
        return picked.region  # picked by the very test that would judge it
    return picked.region if picked.valid(national) else None


def _pick(candidates: tuple[_Candidate, ...], national: str) -> _Candidate | None:
    for candidate in candidates:
        if candidate.leading_digits is not None:
            if candidate.leading_digits.match(national):
                return candidate
        elif candidate.picked_if_valid is not None and candidate.picked_if_valid(national):
            return candidate
    return None
