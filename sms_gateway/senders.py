"""Sender normalisation (SPEC §4.1): one canonical form per sender, so that counting,
blacklisting and dedup all see one sender however a phone, a provider or an operator wrote it.
The receiver stores this form; the admin service looks senders up by it."""

from __future__ import annotations

from typing import Final

# Punctuation that phones and providers put inside numbers: "+1 (650) 555-1212", "650.555.1212".
_NUMBER_PUNCTUATION: Final = "-.()"
MAX_SENDER_LENGTH: Final = 15  # E.164 allows 15 digits: input_sms.sender_number is VARCHAR(15)


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
    elif any(character.isalpha() for character in raw):
        return raw.strip()
    # str.split() splits at exactly the characters str.isspace() accepts: joining the pieces
    # drops the white space, at C speed; then the punctuation.
    number = "".join(raw.split())
    for character in _NUMBER_PUNCTUATION:
        if character in number:
            number = number.replace(character, "")
    if number.startswith("+"):
        return number[1:]
    if number.startswith("00"):
        return number[2:]
    return number
