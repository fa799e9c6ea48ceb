"""hash_length: length and alphabet per encoding, and the HMAC when a key is configured."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.base import CheckResult, CheckSecrets
from checks.errors import CheckConfigurationError
from checks.hash_length import FULL_HASH_LENGTH, HashEncoding, expected_hash
from checks.hash_length import check as hash_length
from tests.checks.support import HASH_KEY, SENDER_NUMBER, context, settings, sms

PASS, FAIL, SKIPPED = CheckResult.PASS, CheckResult.FAIL, CheckResult.SKIPPED
ENCODINGS: tuple[HashEncoding, ...] = ("hex", "base64url", "base32")
ALPHABET = {
    "hex": "0123456789abcdefABCDEF",
    "base64url": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    "base32": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
}


def judge(
    hash_text: str,
    *,
    length: int = 16,
    encoding: HashEncoding = "hex",
    key: bytes | None = None,
    header: str = "OTP",
    mobile: str = SENDER_NUMBER,
    separator: str = " ",
) -> CheckResult:
    message = separator.join(part for part in (header, hash_text, mobile))
    config = settings(hash_length=length, hash_encoding=encoding, message_separator=separator)
    return hash_length(
        sms(message), context(message, config=config, secrets=CheckSecrets(hash_key=key))
    )


def test_length_zero_skips_even_without_a_hash() -> None:
    config = settings(hash_length=0)
    assert hash_length(sms(), context("OTP", config=config)) is SKIPPED
    assert (
        hash_length(sms(), context("OTP", config=config, secrets=CheckSecrets(hash_key=HASH_KEY)))
        is SKIPPED
    )


@pytest.mark.parametrize("key", [None, HASH_KEY])
def test_a_missing_hash_fails(key: bytes | None) -> None:
    assert hash_length(sms(), context("OTP", secrets=CheckSecrets(hash_key=key))) is FAIL


# ------------------------------------------------------------------ without a key: the format


@pytest.mark.parametrize(
    ("encoding", "good"),
    [
        ("hex", "0123456789abcdef"),
        ("hex", "0123456789ABCDEF"),
        ("hex", "aBcDeF0123456789"),
        ("base64url", "AZaz09-_AZaz09-_"),
        ("base64url", "________--------"),
        ("base32", "ABCDEFGHIJ234567"),
        ("base32", "KLMNOPQRSTUVWXYZ"),
    ],
)
def test_right_length_and_alphabet_pass(encoding: HashEncoding, good: str) -> None:
    assert judge(good, encoding=encoding) is PASS
    assert judge(good[:-1], encoding=encoding) is FAIL  # one short
    assert judge(good + good[0], encoding=encoding) is FAIL  # one long


@pytest.mark.parametrize(
    ("encoding", "bad_character"),
    [
        ("hex", "g"),
        ("hex", "G"),
        ("hex", "-"),
        ("hex", "="),
        ("hex", "٣"),
        ("base64url", "+"),
        ("base64url", "/"),
        ("base64url", "="),
        ("base64url", "."),
        ("base64url", "é"),
        ("base32", "a"),
        ("base32", "0"),
        ("base32", "1"),
        ("base32", "8"),
        ("base32", "9"),
        ("base32", "="),
    ],
)
@pytest.mark.parametrize("position", [0, 7, 15])
def test_one_character_outside_the_alphabet_fails(
    encoding: HashEncoding, bad_character: str, position: int
) -> None:
    good = {
        "hex": "0123456789abcdef",
        "base64url": "AZaz09-_AZaz09-_",
        "base32": "ABCDEFGHIJ234567",
    }[encoding]
    bad = good[:position] + bad_character + good[position + 1 :]
    assert judge(bad, encoding=encoding) is FAIL


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_padding_is_never_accepted(encoding: HashEncoding) -> None:
    assert judge("AAAAAAAAAAAAAA==", encoding=encoding) is FAIL


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 256])
def test_any_length_up_to_256_without_a_key(length: int) -> None:
    assert judge("a" * length, length=length) is PASS
    assert judge("a" * (length + 1), length=length) is FAIL


# ------------------------------------------------------------------ with a key: the HMAC


def test_expected_hash_is_the_truncated_hmac_sha256_of_the_rfc_4231_vector() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    full = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert (
        expected_hash(b"Jefe", "what", " ", "do ya want for nothing?", length=64, encoding="hex")
        == full
    )
    assert (
        expected_hash(b"Jefe", "what", " ", "do ya want for nothing?", length=16, encoding="hex")
        == full[:16]
    )
    digest = bytes.fromhex(full)
    assert expected_hash(
        b"Jefe", "what", " ", "do ya want for nothing?", length=43, encoding="base64url"
    ) == (base64.urlsafe_b64encode(digest).decode().rstrip("="))
    assert expected_hash(
        b"Jefe", "what", " ", "do ya want for nothing?", length=52, encoding="base32"
    ) == (base64.b32encode(digest).decode().rstrip("="))


def test_expected_hash_signs_utf8_of_header_separator_and_mobile_field() -> None:
    digest = hmac.new(HASH_KEY, "ÖTP::+447400123456".encode(), hashlib.sha256).hexdigest()
    assert (
        expected_hash(HASH_KEY, "ÖTP", "::", "+447400123456", length=20, encoding="hex")
        == digest[:20]
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("length", [1, 16, 40])
def test_the_right_hash_passes_and_a_wrong_one_fails(encoding: HashEncoding, length: int) -> None:
    right = expected_hash(HASH_KEY, "OTP", " ", SENDER_NUMBER, length=length, encoding=encoding)
    assert len(right) == length
    assert judge(right, length=length, encoding=encoding, key=HASH_KEY) is PASS
    # Right format, wrong value.
    wrong = expected_hash(
        b"another key", "OTP", " ", SENDER_NUMBER, length=length, encoding=encoding
    )
    if wrong != right:
        assert judge(wrong, length=length, encoding=encoding, key=HASH_KEY) is FAIL
    # The hash of another number, another header, or another key.
    assert judge(right, length=length, encoding=encoding, key=b"another key") is (
        PASS if wrong == right else FAIL
    )
    if length >= 16:
        assert (
            judge(right, length=length, encoding=encoding, key=HASH_KEY, mobile="+33612345678")
            is FAIL
        )
        assert judge(right, length=length, encoding=encoding, key=HASH_KEY, header="BANK") is FAIL
    # Without the key, only the format is judged.
    assert judge(wrong, length=length, encoding=encoding) is PASS


def test_hex_is_compared_case_insensitively() -> None:
    right = expected_hash(HASH_KEY, "OTP", " ", SENDER_NUMBER, length=16, encoding="hex")
    assert right == right.lower()
    assert right != right.upper()
    assert judge(right.upper(), key=HASH_KEY) is PASS
    assert judge(right[:8].upper() + right[8:], key=HASH_KEY) is PASS


def test_base64url_and_base32_are_case_sensitive() -> None:
    right = expected_hash(HASH_KEY, "OTP", " ", SENDER_NUMBER, length=16, encoding="base64url")
    assert right.swapcase() != right
    assert judge(right.swapcase(), encoding="base64url", key=HASH_KEY) is FAIL
    right32 = expected_hash(HASH_KEY, "OTP", " ", SENDER_NUMBER, length=16, encoding="base32")
    assert judge(right32.lower(), encoding="base32", key=HASH_KEY) is FAIL  # alphabet


def test_the_separator_is_part_of_what_is_signed() -> None:
    right = expected_hash(HASH_KEY, "OTP", "|", SENDER_NUMBER, length=16, encoding="hex")
    assert judge(right, key=HASH_KEY, separator="|") is PASS
    assert judge(right, key=HASH_KEY, separator="::") is FAIL


def test_the_signed_mobile_field_is_the_trimmed_rest_of_the_message() -> None:
    rest = "+44 7400 123456"
    right = expected_hash(HASH_KEY, "OTP", " ", rest, length=16, encoding="hex")
    message = f"  OTP {right}   {rest}  \n"
    assert hash_length(sms(message), context(message, secrets=CheckSecrets(HASH_KEY))) is PASS


@pytest.mark.parametrize("message_template", ["OTP {hash}", "OTP {hash} ", "|{hash}|+447400123456"])
def test_with_a_key_a_missing_header_or_mobile_fails(message_template: str) -> None:
    separator = "|" if message_template.startswith("|") else " "
    right = expected_hash(HASH_KEY, "", separator, "", length=16, encoding="hex")
    message = message_template.format(hash=right)
    config = settings(message_separator=separator)
    secrets = CheckSecrets(hash_key=HASH_KEY)
    assert hash_length(sms(message), context(message, config=config, secrets=secrets)) is FAIL
    # Without a key, the same hash is only judged by its format.
    assert hash_length(sms(message), context(message, config=config)) is PASS


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_whole_hmac_is_the_longest_hash_a_key_allows(encoding: HashEncoding) -> None:
    full = FULL_HASH_LENGTH[encoding]
    right = expected_hash(HASH_KEY, "OTP", " ", SENDER_NUMBER, length=full, encoding=encoding)
    assert judge(right, length=full, encoding=encoding, key=HASH_KEY) is PASS
    too_long = right + right[0]
    with pytest.raises(CheckConfigurationError, match=f"hash_length {full + 1}"):
        judge(too_long, length=full + 1, encoding=encoding, key=HASH_KEY)
    # The format is judged first: a hash of the wrong length is the SMS's fault.
    assert judge(right, length=full + 1, encoding=encoding, key=HASH_KEY) is FAIL


@pytest.mark.parametrize(
    ("length", "encoding"), [(0, "hex"), (65, "hex"), (44, "base64url"), (53, "base32")]
)
def test_expected_hash_refuses_a_length_it_cannot_make(length: int, encoding: HashEncoding) -> None:
    with pytest.raises(ValueError, match="hash length"):
        expected_hash(HASH_KEY, "OTP", " ", SENDER_NUMBER, length=length, encoding=encoding)


# ------------------------------------------------------------------ properties

headers = st.from_regex(r"[A-Z][A-Z0-9]{0,10}", fullmatch=True)
mobile_fields = st.text(min_size=1, max_size=40).map(str.strip).filter(bool)
keys = st.binary(min_size=1, max_size=80)
separators = st.sampled_from([" ", "|", "::", " - ", "\t"])


@st.composite
def signed_messages(draw: st.DrawFn) -> tuple[str, str, HashEncoding, int, bytes, str]:
    """(message, separator, encoding, length, key, hash) of a correctly signed message."""
    encoding = draw(st.sampled_from(ENCODINGS))
    length = draw(st.integers(1, FULL_HASH_LENGTH[encoding]))
    key = draw(keys)
    separator = draw(separators)
    header = draw(headers)
    mobile = draw(mobile_fields)
    right = expected_hash(key, header, separator, mobile, length=length, encoding=encoding)
    return f"{header}{separator}{right}{separator}{mobile}", separator, encoding, length, key, right


def judge_message(
    message: str, separator: str, encoding: HashEncoding, length: int, key: bytes
) -> CheckResult:
    config = settings(hash_length=length, hash_encoding=encoding, message_separator=separator)
    return hash_length(
        sms(message), context(message, config=config, secrets=CheckSecrets(hash_key=key))
    )


@given(signed_messages())
def test_the_expected_hash_always_passes(
    signed: tuple[str, str, HashEncoding, int, bytes, str],
) -> None:
    message, separator, encoding, length, key, _ = signed
    assert judge_message(message, separator, encoding, length, key) is PASS


@given(signed_messages(), st.data())
def test_any_single_character_change_of_a_right_hash_fails(
    signed: tuple[str, str, HashEncoding, int, bytes, str],
    data: st.DataObject,
) -> None:
    message, separator, encoding, length, key, right = signed
    position = data.draw(st.integers(0, length - 1))
    original = right[position]
    replacement = data.draw(
        st.sampled_from(ALPHABET[encoding]).filter(
            # In hex, a change of case is no change.
            lambda c: c.lower() != original.lower() if encoding == "hex" else c != original
        )
    )
    changed = right[:position] + replacement + right[position + 1 :]
    tampered = message.replace(
        f"{separator}{right}{separator}", f"{separator}{changed}{separator}", 1
    )
    assert judge_message(tampered, separator, encoding, length, key) is FAIL
