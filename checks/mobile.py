"""mobile (SPEC §5.3): the mobile field is a valid international number, in an allowed region,
and (with `mobile_match_sender`) the sender's own number.

Skipped when `mobile_encoding` is `none`. The field is decoded first:
- `plain`: as it is;
- `base64`: standard or URL-safe base64 (one alphabet or the other, not a mix; padding
  optional) of the number's ASCII text;
- `aes-gcm`: base64url (padding optional) of a 12-byte nonce, then the AES-256-GCM ciphertext
  and its 16-byte tag, of the number's ASCII text, without associated data. The key is
  `SMSGW_MOBILE_AES_KEY` (32 bytes). `encrypt_mobile` makes such a field.
Base64 must be canonical (unused trailing bits zero), so that one field has one spelling. Any
decoding or decryption failure fails the SMS; no exception escapes for bad input.

The decoded text must be `+` and ASCII digits, and libphonenumber (the `phonenumbers` package)
must parse it and judge it valid. Its region must be in a non-empty `mobile_regions`, and with
`mobile_match_sender` its E.164 digits (without `+`) must equal the sender. Cheap rejections come
first (syntax, the country calling codes of the allowed regions); libphonenumber's verdict is
asked only of what survives them, through `checks.phone_numbers`, which gives the same answer
as phonenumbers' public API for this shape of text at a tenth of its cost. E.164 digits can
differ from the text (`+440 20...` is `+4420...`), so the sender is compared with the parsed
number, not with the text.

Missing or wrong key. `aes-gcm` without a configured key, or a key that is not 32 bytes, is a
configuration fault, not the SMS's: the check raises `MissingSecretError` /
`CheckConfigurationError`, which the validator records as `error` (the SMS can be requeued once
the key is set), rather than failing SMS that may be perfectly valid. The validator can learn
of it in advance from `configuration_problems`, whenever it loads settings; refusing to start
is not enough on its own, as `mobile_encoding` can change at run time.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from functools import lru_cache
from typing import Final

import phonenumbers
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from checks.base import CheckContext, CheckResult, CheckSecrets, SmsToJudge
from checks.errors import CheckConfigurationError, MissingSecretError
from checks.phone_numbers import judge_international
from sms_gateway.settings import RuntimeSettings

AES_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MOBILE_AES_KEY_VARIABLE: Final = "SMSGW_MOBILE_AES_KEY"

# A country calling code (never starting with 0) and at most 17 national digits, the most
# libphonenumber accepts: anything longer cannot be valid and never reaches it.
_INTERNATIONAL_NUMBER: Final = re.compile(r"\+[1-9][0-9]{1,19}")
_STANDARD_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_URLSAFE_BASE64: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def decode_base64(text: str, *, urlsafe_only: bool = False) -> bytes | None:
    """The bytes of canonical base64 text (standard or URL-safe, padding optional), or None.

    With `urlsafe_only`, only the URL-safe alphabet is accepted (the aes-gcm field).
    """
    if _URLSAFE_BASE64.fullmatch(text):
        altchars: bytes | None = b"-_"
    elif not urlsafe_only and _STANDARD_BASE64.fullmatch(text):
        altchars = None
    else:
        return None
    body = text.rstrip("=")
    if len(body) != len(text) and len(text) % 4:
        return None  # padding, but not to a multiple of four
    if len(body) % 4 == 1:
        return None  # no byte string encodes to this length
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), altchars, validate=True)
    except binascii.Error:
        return None
    # Unused low bits of the last character must be zero, or "QQ" and "QR" would both be "A".
    canonical = base64.b64encode(data, altchars).rstrip(b"=").decode("ascii")
    return data if canonical == body else None


@lru_cache(maxsize=4)
def _cipher(key: bytes) -> AESGCM:
    if len(key) != AES_KEY_BYTES:
        raise CheckConfigurationError(
            f"{MOBILE_AES_KEY_VARIABLE} must be {AES_KEY_BYTES} bytes (64 hex digits); "
            f"it is {len(key)} bytes"
        )
    return AESGCM(key)


def encrypt_mobile(number: str, key: bytes, *, nonce: bytes | None = None) -> str:
    """The aes-gcm mobile field of `number` (for tests, benchmarks and operators' tooling).

    base64url without padding of nonce + AES-256-GCM(number's ASCII) + tag. The nonce is
    random unless given; never reuse one with the same key outside tests.
    """
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    sealed = _cipher(key).encrypt(nonce, number.encode("ascii"), None)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def _decrypt(field: str, key: bytes | None) -> str | None:
    if key is None:
        raise MissingSecretError("mobile_encoding aes-gcm", MOBILE_AES_KEY_VARIABLE)
    cipher = _cipher(key)
    blob = decode_base64(field, urlsafe_only=True)
    if blob is None or len(blob) < NONCE_BYTES + TAG_BYTES:
        return None
    try:
        plain = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None)
    except InvalidTag:
        return None
    return _ascii(plain)


def _ascii(data: bytes) -> str | None:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return None


@lru_cache(maxsize=16)
def _calling_codes(regions: tuple[str, ...]) -> tuple[str, ...]:
    # Country calling codes are prefix-free, so a number can belong to one of `regions` only if
    # its digits start with one of their codes.
    return tuple({str(phonenumbers.country_code_for_region(region)) for region in regions})


class MobileCheck:
    name: Final = "mobile"

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        settings = context.settings
        encoding = settings.mobile_encoding
        if encoding == "none":
            return CheckResult.SKIPPED
        field = context.parts.mobile_field
        if field is None:
            return CheckResult.FAIL
        if encoding == "plain":
            text: str | None = field
        elif encoding == "base64":
            data = decode_base64(field)
            text = None if data is None else _ascii(data)
        else:
            text = _decrypt(field, context.secrets.mobile_aes_key)
        if text is None or not _INTERNATIONAL_NUMBER.fullmatch(text):
            return CheckResult.FAIL
        regions = settings.mobile_regions
        if regions and not text[1:].startswith(_calling_codes(regions)):
            return CheckResult.FAIL
        number = judge_international(text)
        if number is None:
            return CheckResult.FAIL
        if regions and number.region not in regions:
            return CheckResult.FAIL
        if settings.mobile_match_sender and number.e164_digits != sms.sender_number:
            return CheckResult.FAIL
        return CheckResult.PASS

    def configuration_problems(
        self, settings: RuntimeSettings, secrets: CheckSecrets
    ) -> tuple[str, ...]:
        if settings.mobile_encoding != "aes-gcm":
            return ()
        key = secrets.mobile_aes_key
        if key is None:
            return (str(MissingSecretError("mobile_encoding aes-gcm", MOBILE_AES_KEY_VARIABLE)),)
        if len(key) != AES_KEY_BYTES:
            return (
                f"{MOBILE_AES_KEY_VARIABLE} must be {AES_KEY_BYTES} bytes; it is {len(key)} bytes",
            )
        return ()


check: Final = MobileCheck()
