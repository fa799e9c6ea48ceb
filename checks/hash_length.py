"""hash_length (SPEC §5.3): the hash has the configured length and alphabet, and, when a hash
key is configured, is the truncated HMAC of the rest of the message.

Skipped when `hash_length` is 0. Fails when the hash is missing, is not `hash_length`
characters long, or has a character outside the `hash_encoding` alphabet (hex `[0-9a-fA-F]`,
base64url `[A-Za-z0-9_-]`, base32 `[A-Z2-7]`; never padding). With a hash key (SPEC §10,
`SMSGW_HASH_KEY`), it must also equal `expected_hash(...)`: the first `hash_length` characters of
HMAC-SHA256(key, UTF-8 of header + separator + mobile_field) in that encoding, compared in
constant time (hex case-insensitively). A message without a header or mobile field then fails:
there is nothing to authenticate.

An HMAC-SHA256 is 64 hex, 43 base64url or 52 base32 characters long. With a key configured, a
longer `hash_length` can never be met: that is a configuration fault, not the SMS's, so the check
raises `CheckConfigurationError` (the validator marks the SMS `error`, to requeue once fixed)
instead of failing every SMS for good; `configuration_problems` reports it in advance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Final, Literal

from checks.base import CheckContext, CheckResult, CheckSecrets, SmsToJudge
from checks.errors import CheckConfigurationError
from sms_gateway.settings import RuntimeSettings

HashEncoding = Literal["hex", "base64url", "base32"]

_ALPHABETS: Final[dict[str, re.Pattern[str]]] = {
    "hex": re.compile(r"[0-9a-fA-F]*"),
    "base64url": re.compile(r"[A-Za-z0-9_-]*"),
    "base32": re.compile(r"[A-Z2-7]*"),
}

_ENCODERS: Final[dict[str, Callable[[bytes], str]]] = {
    "hex": bytes.hex,
    "base64url": lambda digest: base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"),
    "base32": lambda digest: base64.b32encode(digest).rstrip(b"=").decode("ascii"),
}

# Length of a whole HMAC-SHA256 (32 bytes) in each encoding, without padding.
FULL_HASH_LENGTH: Final[dict[str, int]] = {"hex": 64, "base64url": 43, "base32": 52}


@lru_cache(maxsize=4)
def _keyed_hmac(key: bytes) -> hmac.HMAC:
    # Hashing the key into the inner and outer pads is per key, not per SMS: keep the keyed
    # state and copy it for each message.
    return hmac.new(key, digestmod=hashlib.sha256)


def expected_hash(
    key: bytes,
    header: str,
    separator: str,
    mobile_field: str,
    *,
    length: int,
    encoding: HashEncoding,
) -> str:
    """The hash a message `header<separator>HASH<separator>mobile_field` must carry.

    The first `length` characters of HMAC-SHA256(key, UTF-8 of header + separator +
    mobile_field) in `encoding` (hex in lower case; base64url and base32 without padding).
    For tests, benchmarks and operators' tooling that make verification SMS.
    """
    if encoding not in _ENCODERS:
        raise ValueError(f"unknown hash encoding {encoding!r}")
    if not 0 < length <= FULL_HASH_LENGTH[encoding]:
        raise ValueError(
            f"hash length {length} is not within 1..{FULL_HASH_LENGTH[encoding]} for {encoding}"
        )
    mac = _keyed_hmac(key).copy()
    mac.update(f"{header}{separator}{mobile_field}".encode())
    return _ENCODERS[encoding](mac.digest())[:length]


class HashLengthCheck:
    name: Final = "hash_length"

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        settings = context.settings
        length = settings.hash_length
        if length == 0:
            return CheckResult.SKIPPED
        given = context.parts.hash
        encoding = settings.hash_encoding
        if given is None or len(given) != length or not _ALPHABETS[encoding].fullmatch(given):
            return CheckResult.FAIL
        key = context.secrets.hash_key
        if key is None:
            return CheckResult.PASS
        if length > FULL_HASH_LENGTH[encoding]:
            raise CheckConfigurationError(_too_long(settings))
        header, mobile_field = context.parts.header, context.parts.mobile_field
        if header is None or mobile_field is None:
            return CheckResult.FAIL
        expected = expected_hash(
            key,
            header,
            settings.message_separator,
            mobile_field,
            length=length,
            encoding=encoding,
        )
        if encoding == "hex":
            given = given.lower()
        # Both are ASCII: the alphabet check above let only ASCII through.
        return CheckResult.PASS if hmac.compare_digest(given, expected) else CheckResult.FAIL

    def configuration_problems(
        self, settings: RuntimeSettings, secrets: CheckSecrets
    ) -> tuple[str, ...]:
        if secrets.hash_key is not None and settings.hash_length > FULL_HASH_LENGTH.get(
            settings.hash_encoding, 0
        ):
            return (_too_long(settings),)
        return ()


def _too_long(settings: RuntimeSettings) -> str:
    return (
        f"hash_length {settings.hash_length} is longer than a whole HMAC-SHA256 in "
        f"{settings.hash_encoding} ({FULL_HASH_LENGTH[settings.hash_encoding]} characters), "
        "so no SMS can carry a matching hash while SMSGW_HASH_KEY is configured"
    )


check: Final = HashLengthCheck()
