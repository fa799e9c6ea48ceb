"""What the receiver accepts, without a server (services/receiver/incoming.py): the compiled
JSON decoder and the batch's quick validation pass must decide exactly as the standard library
and the full validation do, for every input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.receiver import incoming
from services.receiver.errors import InvalidSms
from tests.fault.support import ANY_JSON, as_python, json_bytes


def _standard(body: bytes) -> Any:
    """The decoding the receiver had before orjson: the standard library's."""
    try:
        return ("document", json.loads(body.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ("refused", None)


def _decoded(body: bytes) -> Any:
    try:
        return ("document", incoming.parse_json_body(body))
    except InvalidSms as exc:
        return ("refused", exc.problems)


def _same(decoded: Any, standard: Any) -> bool:
    """Equal, NaN to itself. One known difference: orjson gives an integer past 64 bits as the
    nearest float, which no answer can tell apart (every field of ours that holds a number of
    either kind is refused as "a number")."""
    left, right = decoded, standard
    if isinstance(left, float) and isinstance(right, int) and not isinstance(right, bool):
        return not -(2**63) <= right < 2**64 and left == float(right)
    if isinstance(left, float) and isinstance(right, float):
        return (math.isnan(left) and math.isnan(right)) or left == right
    if type(left) is not type(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, dict):
        return list(left) == list(right) and all(_same(left[k], right[k]) for k in left)
    return bool(left == right)


@given(ANY_JSON)
def test_any_json_document_decodes_as_the_standard_library_decodes_it(document: Any) -> None:
    body = json_bytes(document)  # lone surrogates escaped, integers of any length
    standard_kind, standard = _standard(body)
    kind, decoded = _decoded(body)
    assert kind == standard_kind
    if kind == "document":
        assert _same(decoded, standard)
        assert _same(decoded, as_python(document))


@given(st.binary(max_size=200) | st.text(max_size=60).map(str.encode))
@example(b'{"a": NaN, "b": -Infinity}')
@example(b'"\\ud800"')  # a lone surrogate escape: orjson refuses it, the standard library not
@example(b"[" * 2000)
@example(b"\xef\xbb\xbf{}")  # a byte order mark
@example(b'{"a": 1, "a": 2}')
@example(b"1" * 5000)
def test_any_bytes_are_decoded_or_refused_as_the_standard_library_does(body: bytes) -> None:
    standard_kind, standard = _standard(body)
    kind, decoded = _decoded(body)
    assert kind == standard_kind
    if kind == "document":
        assert _same(decoded, standard)


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (
            b'{"sender_number": "+1555",',
            "must be JSON; Expecting property name enclosed in double quotes at line 1 column 27",
        ),
        (b"\xff", "must be UTF-8; invalid byte at offset 0"),
        (b"1" * 5000, "must be JSON whose numbers have at most 4300 digits"),
        (b"[" * 100_000, "must be JSON nested at most a few hundred levels deep"),
    ],
)
def test_a_refusal_is_worded_as_the_standard_library_words_it(body: bytes, rule: str) -> None:
    with pytest.raises(InvalidSms) as refused:
        incoming.parse_json_body(body)
    assert [problem.rule for problem in refused.value.problems] == [rule]
