"""What text a setting or a request parameter may hold: no lone surrogates (they cannot be
encoded, so they broke every answer that showed them), no NUL (PostgreSQL text cannot store
it) and no other control character (nothing an operator types into a setting, a key or a
sender needs one, and they hide in logs and on the operator page).

SMS content is not judged here: the receiver stores any text PostgreSQL can hold
(`services.receiver.incoming.storable_text_problem`).
"""

from __future__ import annotations

import unicodedata
from typing import Final

# The integer bounds of PostgreSQL's columns, for parameters that reach them.
MAX_BIGINT: Final = 2**63 - 1


def plain_text_problem(value: str, *, allow: str = "") -> str | None:
    """Why `value` is not plain text, naming the character and its position; None when it is.

    `allow` names control characters that make sense for this value (a TAB separator).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        surrogate = ord(value[exc.start])
        return f"must be valid Unicode: lone surrogate U+{surrogate:04X} at position {exc.start}"
    for position, character in enumerate(value):
        if character in allow:
            continue
        if unicodedata.category(character) == "Cc":
            return (
                f"must not contain control characters: U+{ord(character):04X} "
                f"at position {position}"
            )
    return None


def require_plain_text(value: str, *, allow: str = "") -> str:
    """`value` unchanged, or ValueError saying why it is not plain text (pydantic validators)."""
    problem = plain_text_problem(value, allow=allow)
    if problem is not None:
        raise ValueError(problem)
    return value
