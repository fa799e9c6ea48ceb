"""What the receiver accepts, without a server (services/receiver/incoming.py): the compiled
JSON decoder and the batch's quick validation pass must decide exactly as the standard library
and the full validation do, for every input."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.receiver import incoming
from services.receiver.errors import InvalidSms
from tests.fault.support import ANY_CHARACTER, ANY_JSON, ANY_TEXT, as_python, json_bytes


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


# Values near what a client sends, and their troubles: letters in numbers, separators, NUL, lone
# surrogates, white space around a time, offsets, naive times, the first and the last year.
SENDER_LIKE = (
    st.text(st.sampled_from("+0123456789 -.()\t\u00a0\u2007aZ\x00\ud800é٣"), max_size=20)
    | st.sampled_from(["+44 7700 900123", "0044 7700 900123", "Google", " 72404 ", "", "+"])
    | ANY_TEXT
)
MESSAGE_LIKE = st.text(ANY_CHARACTER, max_size=12) | st.sampled_from(["", "x" * 16, "x" * 17])
OFFSETS = st.sampled_from(["Z", "+00:00", "+02:00", "-01:00", "+05:45", "+14:00", ""])
MOMENT_LIKE = (
    st.builds(
        lambda moment, offset, separator, padding: (
            padding + moment.isoformat(sep=separator) + offset + padding
        ),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
        OFFSETS,
        st.sampled_from(["T", " "]),
        st.sampled_from(["", " ", "\n"]),
    )
    | st.sampled_from(["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00", "2024"])
    | ANY_TEXT
)
SMS_ITEM = st.fixed_dictionaries(
    {"sender_number": SENDER_LIKE, "sms_message": MESSAGE_LIKE, "received_timestamp": MOMENT_LIKE}
) | st.fixed_dictionaries(
    {},
    optional={
        "sender_number": SENDER_LIKE | ANY_JSON,
        "sms_message": MESSAGE_LIKE | ANY_JSON,
        "received_timestamp": MOMENT_LIKE | ANY_JSON,
        "extra": ANY_JSON,
    },
)


PLAIN = {
    "sender_number": "+44 7700 900123",
    "sms_message": "ACME 0123456789ab",
    "received_timestamp": "2024-06-22T15:46:11+01:00",
}


@pytest.mark.parametrize(
    "item",
    [
        PLAIN,
        {**PLAIN, "sender_number": "Google", "sms_message": "Привет 🔐"},
        {**PLAIN, "received_timestamp": "2024-06-22T14:46:11Z"},
    ],
)
def test_a_valid_sms_takes_the_quick_pass(item: dict[str, str]) -> None:
    quick = incoming.plain_sms(item, 1600, "api-batch", None)
    assert quick is not None
    assert quick == incoming.judged_sms(
        item, max_message_length=1600, source="api-batch", client_event_id=None
    )


@given(SMS_ITEM | ANY_JSON, st.sampled_from([None, "batch-7#3"]))
@example(PLAIN, None)
@example({**PLAIN, "received_timestamp": " 2024-06-22T15:46:11+01:00"}, None)
@example({**PLAIN, "received_timestamp": "0001-01-01T00:30:00+01:00"}, None)
@example({**PLAIN, "sender_number": "+44 7700 900123 456 789"}, None)
def test_the_quick_pass_accepts_only_what_the_full_validation_accepts_as_it_stores_it(
    item: Any, key: str | None
) -> None:
    judged = incoming.judged_sms(
        item, max_message_length=16, source="api-batch", client_event_id=key
    )
    quick = incoming.plain_sms(item, 16, "api-batch", key)
    if quick is not None:
        assert quick == judged
        assert quick.received_timestamp.utcoffset() == judged.received_timestamp.utcoffset()


@given(st.lists(SMS_ITEM, min_size=1, max_size=5))
def test_a_batch_is_judged_item_by_item(items: list[Any]) -> None:
    expected = [
        incoming.judged_sms(
            item, max_message_length=16, source="api-batch", client_event_id=None, index=index
        )
        for index, item in enumerate(items)
    ]
    problems = [problem for result in expected if isinstance(result, list) for problem in result]
    if problems:
        with pytest.raises(InvalidSms) as refused:
            incoming.sms_batch(items, max_message_length=16, source="api-batch", batch_key=None)
        assert refused.value.problems == problems
    else:
        stored = incoming.sms_batch(
            items, max_message_length=16, source="api-batch", batch_key=None
        )
        assert stored == expected
