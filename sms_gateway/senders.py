"""Sender normalisation (SPEC §4.1): one canonical form per sender, so that counting,
blacklisting and dedup all see one sender however a phone, a provider or an operator wrote it.
The receiver stores this form; the admin service looks senders up by it."""

from __future__ import annotations

from typing import Final

# Punctuation that phones and providers put inside numbers: "+1 (650) 555-1212", "650.555.1212".
_NUMBER_PUNCTUATION: Final = frozenset("-.()")
MAX_SENDER_LENGTH: Final = 15  # E.164 allows 15 digits: input_sms.sender_number is VARCHAR(15)
# For ASCII senders (nearly all), the same rules at C speed: str.translate deletes what the loop
# below skips (ASCII white space as str.isspace sees it, and the punctuation).
_ASCII_DELETIONS: Final = str.maketrans(
    "", "", "".join(chr(code) for code in range(128) if chr(code).isspace()) + "-.()"
)


def normalise_sender(raw: str) -> str:
    """The canonical sender.

    A sender with a letter in it (`Google`, `AB-CTAXKR`) is a name, kept as received but trimmed.
    Otherwise it is a number: white space and `- . ( )` go, and a leading `+` or `00` (the
    international prefix) is removed, leaving the E.164 digits. Short codes stay as they are.
    """
    if raw.isascii():
        # An ASCII letter is exactly an ASCII character whose case can change.
        if raw.lower() != raw.upper():
            return raw.strip()
        number = raw.translate(_ASCII_DELETIONS)
    elif any(character.isalpha() for character in raw):
        return raw.strip()
    else:
        number = "".join(c for c in raw if not c.isspace() and c not in _NUMBER_PUNCTUATION)
    if number.startswith("+"):
        return number[1:]
    if number.startswith("00"):
        return number[2:]
    return number
