"""mobile: decoding (plain, base64, aes-gcm), phone validity, regions and the sender match."""

from __future__ import annotations

import base64
import os

import phonenumbers
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import assume, given
from hypothesis import strategies as st

from checks.base import CheckResult, CheckSecrets
from checks.errors import CheckConfigurationError, MissingSecretError
from checks.mobile import check as mobile
from checks.mobile import decode_base64, encrypt_mobile
from tests.checks.support import AES_KEY, SENDER, SENDER_NUMBER, context, settings, sms

PASS, FAIL, SKIPPED = CheckResult.PASS, CheckResult.FAIL, CheckResult.SKIPPED

# Valid mobile numbers of several regions (libphonenumber's own examples), as E.164.
NUMBERS = {
    "GB": "+447400123456",
    "US": "+12015550123",
    "CA": "+15062345678",
    "DE": "+4915123456789",
    "FR": "+33612345678",
    "IN": "+918123456789",
    "BR": "+5511961234567",
    "NG": "+2348021234567",
    "JP": "+819012345678",
    "AU": "+61412345678",
}


def judge(
    field: str,
    *,
    sender: str = SENDER,
    encoding: str = "plain",
    regions: tuple[str, ...] = (),
    match_sender: bool = True,
    key: bytes | None = AES_KEY,
) -> CheckResult:
    message = f"OTP abc {field}"
    config = settings(
        mobile_encoding=encoding, mobile_regions=regions, mobile_match_sender=match_sender
    )
    return mobile(
        sms(message, sender=sender),
        context(message, config=config, secrets=CheckSecrets(mobile_aes_key=key)),
    )


def b64(text: str, *, urlsafe: bool = False, padded: bool = True) -> str:
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(text.encode()).decode()
    return encoded if padded else encoded.rstrip("=")


def test_none_skips_even_without_a_mobile_field() -> None:
    config = settings(mobile_encoding="none")
    assert mobile(sms("OTP"), context("OTP", config=config)) is SKIPPED
    assert judge("garbage", encoding="none") is SKIPPED


@pytest.mark.parametrize("encoding", ["plain", "base64", "aes-gcm"])
def test_a_missing_mobile_field_fails(encoding: str) -> None:
    config = settings(mobile_encoding=encoding)
    secrets = CheckSecrets(mobile_aes_key=AES_KEY)
    assert mobile(sms("OTP abc"), context("OTP abc", config=config, secrets=secrets)) is FAIL


# ------------------------------------------------------------------ the number itself


@pytest.mark.parametrize(("region", "number"), NUMBERS.items())
def test_valid_numbers_of_several_regions_pass(region: str, number: str) -> None:
    assert judge(number, sender=number[1:]) is PASS
    assert judge(number, sender=number[1:], regions=(region,)) is PASS


@pytest.mark.parametrize(
    "field",
    [
        "447400123456",  # no +
        "00447400123456",  # international prefix instead of +
        "+44 7400 123456",  # spaces: + and digits only
        "+44-7400-123456",
        "(+44)7400123456",
        "+447400123456x",
        "++447400123456",
        "+٤٤٧٤٠٠١٢٣٤٥٦",  # Arabic-Indic digits are digits, but not ASCII
        "+447400123",  # too short to be valid
        "+4474001234567",  # too long to be valid
        "+441234",
        "+0447400123456",  # no country calling code starts with 0
        "+999123456789",  # no such country calling code
        "+4474001234567890123456789",
        "+",
        "+1",
    ],
)
def test_invalid_numbers_fail(field: str) -> None:
    assert judge(field, match_sender=False) is FAIL


def test_e164_digits_not_the_text_are_compared_with_the_sender() -> None:
    # libphonenumber drops the national trunk prefix written after the country code.
    assert judge("+4402079460958", sender="442079460958") is PASS
    assert judge("+4402079460958", sender="4402079460958") is FAIL


def test_a_number_that_is_not_the_sender_fails_only_with_match_sender() -> None:
    assert judge(SENDER_NUMBER, sender="447400123457") is FAIL
    assert judge(SENDER_NUMBER, sender="Google") is FAIL
    assert judge(SENDER_NUMBER, sender=f"+{SENDER}") is FAIL  # senders are stored without +
    assert judge(SENDER_NUMBER, sender="447400123457", match_sender=False) is PASS
    assert judge(SENDER_NUMBER, sender="Google", match_sender=False) is PASS


def test_wrong_region_fails() -> None:
    assert judge(SENDER_NUMBER, regions=("FR",)) is FAIL
    assert judge(SENDER_NUMBER, regions=("FR", "DE")) is FAIL
    assert judge(SENDER_NUMBER, regions=("FR", "GB")) is PASS


def test_regions_sharing_a_calling_code_are_told_apart() -> None:
    us, ca = NUMBERS["US"], NUMBERS["CA"]
    assert judge(us, sender=us[1:], regions=("CA",)) is FAIL
    assert judge(ca, sender=ca[1:], regions=("CA",)) is PASS
    assert judge(us, sender=us[1:], regions=("US", "CA")) is PASS
    # Guernsey has its own region inside +44: GB does not cover it.
    guernsey = "+447781123456"
    assert phonenumbers.region_code_for_number(phonenumbers.parse(guernsey)) == "GG"
    assert judge(guernsey, sender=guernsey[1:], regions=("GB",)) is FAIL
    assert judge(guernsey, sender=guernsey[1:], regions=("GG",)) is PASS


# ------------------------------------------------------------------ base64


@pytest.mark.parametrize("urlsafe", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_base64_standard_and_urlsafe_with_or_without_padding(urlsafe: bool, padded: bool) -> None:
    field = b64(SENDER_NUMBER, urlsafe=urlsafe, padded=padded)
    assert field.endswith("==") is padded
    assert judge(field, encoding="base64") is PASS
    assert judge(field, encoding="base64", sender="447400123457") is FAIL


def test_base64_of_an_invalid_number_or_non_ascii_fails() -> None:
    assert judge(b64("447400123456"), encoding="base64", match_sender=False) is FAIL
    assert judge(b64("+44740012345é"), encoding="base64", match_sender=False) is FAIL
    latin1 = base64.b64encode("+4474001234é".encode("latin-1")).decode()
    assert judge(latin1, encoding="base64", match_sender=False) is FAIL


@pytest.mark.parametrize(
    "field",
    [
        "!!!!",
        "KzQ0NzQwMDEyMzQ1Ng=",  # padding, but not to a multiple of four
        "KzQ0NzQwMDEyMzQ1Ng===",
        "KzQ0NzQwMDEyMzQ1N",  # a length no bytes encode to
        "KzQ0NzQwMDEyMzQ1Nh==",  # not canonical: unused bits set
        "KzQ0NzQw MDEyMzQ1Ng==",
        "=KzQ0NzQwMDEyMzQ1Ng=",
        "+447400123456",  # plain text where base64 is expected
    ],
)
def test_bad_base64_fails(field: str) -> None:
    assert judge(field, encoding="base64") is FAIL


def test_plain_does_not_decode() -> None:
    assert judge(b64(SENDER_NUMBER), encoding="plain") is FAIL


@pytest.mark.parametrize(
    ("text", "urlsafe_only", "expected"),
    [
        ("-_-_", False, b"\xfb\xff\xbf"),
        ("+/+/", False, b"\xfb\xff\xbf"),
        ("-_-_", True, b"\xfb\xff\xbf"),
        ("+/+/", True, None),  # the aes-gcm field is base64url only
        ("+_-/", False, None),  # one alphabet or the other, not a mix
        ("-_8", False, b"\xfb\xff"),
        ("-_8=", False, b"\xfb\xff"),
        ("-_9", False, None),  # not canonical
        ("", False, None),
        ("=", False, None),
        ("A", False, None),
        ("AA", False, b"\x00"),
        ("AA==", False, b"\x00"),
        ("AA=", False, None),
    ],
)
def test_decode_base64(text: str, urlsafe_only: bool, expected: bytes | None) -> None:
    assert decode_base64(text, urlsafe_only=urlsafe_only) == expected


@given(st.binary(max_size=64), st.booleans(), st.booleans())
def test_decode_base64_inverts_every_spelling(data: bytes, urlsafe: bool, padded: bool) -> None:
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if not padded:
        encoded = encoded.rstrip("=")
    if encoded:
        assert decode_base64(encoded) == data


# ------------------------------------------------------------------ aes-gcm


def test_aes_gcm_round_trip() -> None:
    field = encrypt_mobile(SENDER_NUMBER, AES_KEY)
    assert "=" not in field
    assert len(decode_base64(field) or b"") == 12 + len(SENDER_NUMBER) + 16
    assert judge(field, encoding="aes-gcm") is PASS
    padded = field + "=" * (-len(field) % 4)
    assert judge(padded, encoding="aes-gcm") is PASS
    assert judge(field, encoding="aes-gcm", sender="447400123457") is FAIL


def test_aes_gcm_fields_are_randomised_by_the_nonce() -> None:
    assert encrypt_mobile(SENDER_NUMBER, AES_KEY) != encrypt_mobile(SENDER_NUMBER, AES_KEY)
    nonce = bytes(12)
    assert encrypt_mobile(SENDER_NUMBER, AES_KEY, nonce=nonce) == encrypt_mobile(
        SENDER_NUMBER, AES_KEY, nonce=nonce
    )


def _flip(field: str, index: int) -> str:
    blob = bytearray(decode_base64(field) or b"")
    blob[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")


@pytest.mark.parametrize(
    "where",
    [0, 11, 12, 12 + len(SENDER_NUMBER) - 1, -16, -1],
    ids=[
        "nonce first",
        "nonce last",
        "ciphertext first",
        "ciphertext last",
        "tag first",
        "tag last",
    ],
)
def test_aes_gcm_tampered_nonce_ciphertext_or_tag_fails(where: int) -> None:
    field = encrypt_mobile(SENDER_NUMBER, AES_KEY)
    assert judge(_flip(field, where), encoding="aes-gcm") is FAIL


def test_aes_gcm_wrong_key_fails() -> None:
    field = encrypt_mobile(SENDER_NUMBER, os.urandom(32))
    assert judge(field, encoding="aes-gcm") is FAIL


@pytest.mark.parametrize(
    "field",
    [
        "!!!",
        "not base64 at all",
        base64.urlsafe_b64encode(bytes(27)).decode().rstrip("="),  # shorter than nonce + tag
        "",
        "A",
    ],
)
def test_aes_gcm_bad_base64_or_too_short_fails(field: str) -> None:
    assert judge(field or "=", encoding="aes-gcm") is FAIL


def test_aes_gcm_standard_alphabet_is_refused() -> None:
    # Find a field whose base64url spelling has - or _, and spell it in the standard alphabet.
    for counter in range(1000):
        field = encrypt_mobile(SENDER_NUMBER, AES_KEY, nonce=counter.to_bytes(12, "big"))
        if "-" in field or "_" in field:
            break
    else:
        pytest.fail("no field with - or _ in 1000 tries")
    assert judge(field, encoding="aes-gcm") is PASS
    standard = field.replace("-", "+").replace("_", "/")
    assert judge(standard, encoding="aes-gcm") is FAIL


def test_aes_gcm_of_something_that_is_not_a_number_fails() -> None:
    assert judge(encrypt_mobile("447400123456", AES_KEY), encoding="aes-gcm") is FAIL
    assert judge(encrypt_mobile("hello", AES_KEY), encoding="aes-gcm") is FAIL
    nonce = bytes(12)
    not_ascii = AESGCM(AES_KEY).encrypt(nonce, "+4474001234é".encode(), None)
    field = base64.urlsafe_b64encode(nonce + not_ascii).decode().rstrip("=")
    assert judge(field, encoding="aes-gcm", match_sender=False) is FAIL


def test_aes_gcm_with_associated_data_fails() -> None:
    nonce = bytes(12)
    sealed = AESGCM(AES_KEY).encrypt(nonce, SENDER_NUMBER.encode(), b"OTP")
    field = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
    assert judge(field, encoding="aes-gcm") is FAIL


def test_aes_gcm_without_a_key_is_a_configuration_fault_not_a_fail() -> None:
    with pytest.raises(MissingSecretError, match="SMSGW_MOBILE_AES_KEY"):
        judge(encrypt_mobile(SENDER_NUMBER, AES_KEY), encoding="aes-gcm", key=None)
    # Even for a field that is garbage: the SMS cannot be judged at all.
    with pytest.raises(MissingSecretError):
        judge("!!!", encoding="aes-gcm", key=None)
    # Other encodings need no key.
    assert judge(SENDER_NUMBER, key=None) is PASS


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_aes_gcm_with_a_key_of_the_wrong_size_is_a_configuration_fault(length: int) -> None:
    with pytest.raises(CheckConfigurationError, match=f"must be 32 bytes.*it is {length} bytes"):
        judge(encrypt_mobile(SENDER_NUMBER, AES_KEY), encoding="aes-gcm", key=b"k" * length)


# ------------------------------------------------------------------ properties


@st.composite
def valid_mobile_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(region, E.164 number): a region's example mobile number with its last digits varied."""
    region = draw(st.sampled_from(sorted(NUMBERS)))
    example_number = phonenumbers.example_number_for_type(
        region, phonenumbers.PhoneNumberType.MOBILE
    )
    assert example_number is not None
    example = phonenumbers.format_number(example_number, phonenumbers.PhoneNumberFormat.E164)
    # Varying the last four digits of these examples keeps them valid in the same region.
    tail = draw(st.text("0123456789", min_size=4, max_size=4))
    number = example[:-4] + tail
    parsed = phonenumbers.parse(number)
    assume(
        phonenumbers.is_valid_number(parsed)
        and phonenumbers.region_code_for_number(parsed) == region
    )
    return region, number


@given(
    valid_mobile_numbers(), st.binary(min_size=32, max_size=32), st.binary(min_size=12, max_size=12)
)
def test_encrypt_then_check_round_trip(
    region_number: tuple[str, str], key: bytes, nonce: bytes
) -> None:
    region, number = region_number
    field = encrypt_mobile(number, key, nonce=nonce)
    assert judge(field, sender=number[1:], encoding="aes-gcm", regions=(region,), key=key) is PASS
    others = tuple(r for r in ("FR", "JP") if r != region)
    assert judge(field, sender=number[1:], encoding="aes-gcm", regions=others, key=key) is FAIL


@given(valid_mobile_numbers(), st.data())
def test_any_changed_byte_of_an_aes_gcm_field_fails(
    region_number: tuple[str, str], data: st.DataObject
) -> None:
    _, number = region_number
    field = encrypt_mobile(number, AES_KEY, nonce=bytes(12))
    blob = bytearray(decode_base64(field) or b"")
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    tampered = base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
    assert judge(tampered, sender=number[1:], encoding="aes-gcm") is FAIL


@given(valid_mobile_numbers(), st.booleans(), st.booleans())
def test_base64_round_trip(region_number: tuple[str, str], urlsafe: bool, padded: bool) -> None:
    region, number = region_number
    field = b64(number, urlsafe=urlsafe, padded=padded)
    assert judge(field, sender=number[1:], encoding="base64", regions=(region,)) is PASS
