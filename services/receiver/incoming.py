"""What the receiver accepts: strict on shape, lenient on content (SPEC §4.1).

A request is refused only when its row cannot be stored as sent: a missing or mistyped field, an
empty or too long message, a sender that is empty or longer than 15 characters once normalised,
a time without a UTC offset, text PostgreSQL cannot hold (NUL, lone surrogates). Everything else,
however odd it looks, is stored verbatim for the validator to judge. Every item is validated
completely here, before it joins a group commit, so that one bad row never fails its neighbours.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

from services.receiver.errors import InvalidSms
from sms_gateway.problems import FieldProblem
from sms_gateway.senders import MAX_SENDER_LENGTH, normalise_sender

MAX_BODY_BYTES: Final = 64 * 1024
MAX_BATCH_ITEMS: Final = 1000
MAX_BATCH_BODY_BYTES: Final = 16 * 1024 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 64
SMS_FIELDS: Final = ("sender_number", "sms_message", "received_timestamp")
_SMS_FIELD_SET: Final = frozenset(SMS_FIELDS)
TIMESTAMP_RULE: Final = (
    "must be an ISO 8601 date and time with a UTC offset, e.g. 2024-06-22T15:46:11+07:00"
)


class SmsToStore(NamedTuple):
    """One SMS ready to store: every field valid for its column. (Immutable; a named tuple
    rather than a frozen dataclass, whose __init__ costs ~1.5 µs per item of a batch.)"""

    sender_number: str
    sms_message: str
    received_timestamp: datetime  # aware, in UTC
    source: str
    client_event_id: str | None


def body_text(body: bytes) -> str:
    """A request body as text; a body that is not UTF-8 is refused."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSms(
            [FieldProblem("body", f"must be UTF-8; invalid byte at offset {exc.start}")]
        ) from None


def parse_json_body(body: bytes) -> Any:
    """The JSON document of a request body; invalid UTF-8 and malformed JSON are refused.

    orjson decodes it (in a third of the standard library's time). What orjson refuses, the
    standard library decides, so that every answer is the one it always was: orjson is stricter
    (lone surrogate escapes, NaN, numbers past a double's range, nesting past 1024 levels), and
    those documents are accepted as before (their fields judged below) or refused with the
    standard library's words. (orjson gives an integer past 64 bits as a float: every field of
    ours that holds a number of either kind is refused alike, "got a number".)
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    text = body_text(body)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSms(
            [
                FieldProblem(
                    "body", f"must be JSON; {exc.msg} at line {exc.lineno} column {exc.colno}"
                )
            ]
        ) from None
    except ValueError:
        # Python refuses to convert an integer of more than 4300 digits (CVE-2020-10735), with
        # a plain ValueError (it was a 500); no field of ours holds such a number anyway.
        raise InvalidSms(
            [FieldProblem("body", "must be JSON whose numbers have at most 4300 digits")]
        ) from None
    except RecursionError:
        # 64 KiB of "[" nests deeper than the parser's recursion limit: a client's error,
        # not the receiver's (it was a 500).
        raise InvalidSms(
            [FieldProblem("body", "must be JSON nested at most a few hundred levels deep")]
        ) from None


def storable_text_problem(value: str) -> str | None:
    """Why PostgreSQL TEXT cannot hold `value` as given, or None when it can."""
    position = value.find("\x00")
    if position >= 0:
        return (
            f"must not contain the NUL character (U+0000, at position {position}): "
            "PostgreSQL text cannot store it"
        )
    try:
        value.encode("utf-8")  # fails exactly on lone surrogates, at C speed
    except UnicodeEncodeError as exc:
        return (
            f"must be valid Unicode: lone surrogate U+{ord(value[exc.start]):04X} "
            f"at position {exc.start}"
        )
    return None


def parse_timestamp(value: Any, field: str) -> datetime | FieldProblem:
    """An ISO 8601 time with a UTC offset, as an aware datetime in UTC."""
    if not isinstance(value, str):
        return FieldProblem(field, f"{TIMESTAMP_RULE}; got {_json_type(value)}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return FieldProblem(field, f"{TIMESTAMP_RULE}; got {value[:40]!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        return FieldProblem(
            field,
            "must have a UTC offset (Z or ±hh:mm): a time without one is "
            f"ambiguous; got {value[:40]!r}",
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return FieldProblem(
            field, f"must be a time between years 1 and 9999 in UTC; got {value[:40]!r}"
        )


def build_sms(
    sender_number: Any,
    sms_message: Any,
    received_timestamp: datetime | Any,
    *,
    max_message_length: int,
    source: str,
    client_event_id: str | None,
    index: int | None = None,
    field_names: tuple[str, str, str] = SMS_FIELDS,
) -> SmsToStore | list[FieldProblem]:
    """Validate the three fields of one SMS; the problems name each field as the client sent it
    (`field_names`: the adapters' payloads use their own names)."""
    sender_field, message_field, time_field = field_names
    sender = _sender(sender_number, sender_field, index)
    message = _message(sms_message, message_field, max_message_length, index)
    problems = [p for p in (sender, message) if isinstance(p, FieldProblem)]

    if isinstance(received_timestamp, datetime):
        moment: datetime | FieldProblem = received_timestamp
    else:
        moment = parse_timestamp(received_timestamp, time_field)
    if isinstance(moment, FieldProblem):
        problems.append(FieldProblem(moment.field, moment.rule, index))

    if problems:
        return problems
    assert isinstance(sender, str)
    assert isinstance(message, str)
    assert isinstance(moment, datetime)
    return SmsToStore(sender, message, moment, source, client_event_id)


def _sender(value: Any, field: str, index: int | None) -> str | FieldProblem:
    if not isinstance(value, str):
        return FieldProblem(field, f"must be a string; got {_json_type(value)}", index)
    if (why := storable_text_problem(value)) is not None:
        return FieldProblem(field, why, index)
    sender = normalise_sender(value)
    if not sender:
        return FieldProblem(field, "must not be empty after normalisation", index)
    if len(sender) > MAX_SENDER_LENGTH:
        return FieldProblem(
            field,
            f"must be at most {MAX_SENDER_LENGTH} characters after "
            f"normalisation; got {len(sender)} ({sender[:40]!r})",
            index,
        )
    return sender


def _message(value: Any, field: str, max_length: int, index: int | None) -> str | FieldProblem:
    if not isinstance(value, str):
        return FieldProblem(field, f"must be a string; got {_json_type(value)}", index)
    if not value:
        return FieldProblem(field, "must not be empty", index)
    if len(value) > max_length:
        return FieldProblem(
            field,
            f"must be at most {max_length} characters (max_message_length); got {len(value)}",
            index,
        )
    if (why := storable_text_problem(value)) is not None:
        return FieldProblem(field, why, index)
    return value


def sms_from_json(
    document: Any,
    *,
    max_message_length: int,
    source: str,
    client_event_id: str | None,
    index: int | None = None,
) -> SmsToStore | list[FieldProblem]:
    """One `{"sender_number", "sms_message", "received_timestamp"}` object; unknown fields are
    refused, so that a misspelt field is reported rather than silently dropped."""
    sms = plain_sms(document, max_message_length, source, client_event_id)
    if sms is not None:
        return sms
    return judged_sms(
        document,
        max_message_length=max_message_length,
        source=source,
        client_event_id=client_event_id,
        index=index,
    )


def plain_sms(
    document: Any, max_message_length: int, source: str, client_event_id: str | None
) -> SmsToStore | None:
    """The common case, an SMS object that is valid, in one pass at a fraction of the cost of
    `judged_sms` (a batch has a thousand of them). None for anything else, which `judged_sms`
    then judges and names: this pass only ever accepts what `judged_sms` accepts, as it would
    store it (a property test checks both on any input)."""
    if type(document) is not dict or document.keys() != _SMS_FIELD_SET:
        return None
    sender = document["sender_number"]
    message = document["sms_message"]
    moment = document["received_timestamp"]
    if type(sender) is not str or type(message) is not str or type(moment) is not str:
        return None
    if not 0 < len(message) <= max_message_length or "\x00" in message or "\x00" in sender:
        return None
    # isascii() is a flag read; other text must encode (no lone surrogates).
    if not (message.isascii() or _encodes(message)) or not (sender.isascii() or _encodes(sender)):
        return None
    sender = normalise_sender(sender)
    if not 0 < len(sender) <= MAX_SENDER_LENGTH:
        return None
    try:
        # White space around the time is not refused: judged_sms strips it.
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            return None
        return SmsToStore(sender, message, parsed.astimezone(UTC), source, client_event_id)
    except (ValueError, OverflowError):
        return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def judged_sms(
    document: Any,
    *,
    max_message_length: int,
    source: str,
    client_event_id: str | None,
    index: int | None = None,
) -> SmsToStore | list[FieldProblem]:
    """`sms_from_json` field by field: the SMS, or every problem, each naming its field."""
    if not isinstance(document, dict):
        where = "body" if index is None else "item"
        return [FieldProblem(where, f"must be a JSON object; got {_json_type(document)}", index)]
    if document.keys() != _SMS_FIELD_SET:  # the common case, exactly the three, checked at once
        problems = [
            FieldProblem(name, "is required", index) for name in SMS_FIELDS if name not in document
        ]
        problems += [
            FieldProblem(name, "is not a known field", index)
            for name in document
            if name not in SMS_FIELDS
        ]
        if problems:
            return problems
    return build_sms(
        document["sender_number"],
        document["sms_message"],
        document["received_timestamp"],
        max_message_length=max_message_length,
        source=source,
        client_event_id=client_event_id,
        index=index,
    )


def single_sms(
    document: Any, *, max_message_length: int, source: str, client_event_id: str | None
) -> SmsToStore:
    result = sms_from_json(
        document,
        max_message_length=max_message_length,
        source=source,
        client_event_id=client_event_id,
    )
    if isinstance(result, list):
        raise InvalidSms(result)
    return result


def sms_batch(
    document: Any, *, max_message_length: int, source: str, batch_key: str | None
) -> list[SmsToStore]:
    """Every item of a batch, or `InvalidSms` naming the index and field of each problem."""
    if not isinstance(document, list):
        raise InvalidSms([FieldProblem("body", f"must be a JSON list; got {_json_type(document)}")])
    if not document:
        raise InvalidSms([FieldProblem("body", "must hold at least one SMS")])
    if len(document) > MAX_BATCH_ITEMS:
        raise InvalidSms(
            [FieldProblem("body", f"must hold at most {MAX_BATCH_ITEMS} SMS; got {len(document)}")]
        )
    accepted: list[SmsToStore] = []
    problems: list[FieldProblem] = []
    for index, item in enumerate(document):
        key = None if batch_key is None else batch_item_key(batch_key, index)
        sms = plain_sms(item, max_message_length, source, key)
        if sms is None:
            result = judged_sms(
                item,
                max_message_length=max_message_length,
                source=source,
                client_event_id=key,
                index=index,
            )
            if isinstance(result, list):
                problems += result
                continue
            sms = result
        accepted.append(sms)
    if problems:
        raise InvalidSms(problems)
    return accepted


# A batch's Idempotency-Key names the whole batch; item i is stored under "<key>#<i>" (source
# api-batch), so the longest item key, "#999", must still fit client_event_id's 64 characters.
MAX_BATCH_KEY_LENGTH: Final = MAX_IDEMPOTENCY_KEY_LENGTH - len(f"#{MAX_BATCH_ITEMS - 1}")


def batch_item_key(batch_key: str | None, index: int) -> str | None:
    return None if batch_key is None else f"{batch_key}#{index}"


def idempotency_key(
    value: str | None,
    *,
    max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH,
    field: str = "Idempotency-Key",
) -> str | None:
    """A client's delivery key: 1 to `max_length` visible ASCII characters."""
    if value is None:
        return None
    if not 1 <= len(value) <= max_length:
        raise InvalidSms(
            [FieldProblem(field, f"must be 1 to {max_length} characters; got {len(value)}")]
        )
    if not all("!" <= character <= "~" for character in value):
        raise InvalidSms([FieldProblem(field, "must be visible ASCII characters (no spaces)")])
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
