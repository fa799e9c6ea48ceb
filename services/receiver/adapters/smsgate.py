"""SMS Gateway for Android (capcom6/android-sms-gateway): the `sms:received` webhook.

The app POSTs a JSON envelope `{deviceId, event, id, webhookId, payload}`; for `sms:received`
the payload is `{messageId, message, sender, recipient, phoneNumber, simNumber, receivedAt}`,
of which older app versions send only `message`, `phoneNumber` and `receivedAt` (with
`messageId` and `simNumber`). The sender is `sender`, else `phoneNumber`. `messageId` is made
from the content and is not unique, so the delivery key is the envelope's `id`, which the app
keeps across its retries.

Signing (the app's Settings → Webhooks → Signing Key): `X-Signature` is the lowercase hex
HMAC-SHA256, keyed with the signing key's UTF-8 bytes, of the raw body bytes followed by the
`X-Timestamp` header (Unix seconds) as sent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Final

from services.receiver.errors import InvalidSms, SignatureRefused
from services.receiver.incoming import (
    SmsToStore,
    build_sms,
    idempotency_key,
    storable_text_problem,
)
from sms_gateway.problems import FieldProblem

SOURCE: Final = "smsgate"
RECEIVED_EVENT: Final = "sms:received"
MAX_CLOCK_SKEW_SECONDS: Final = 300


def signature(key: bytes, body: bytes, timestamp: str) -> str:
    """What the app sends in `X-Signature` for this body and `X-Timestamp`."""
    return hmac.new(key, body + timestamp.encode("ascii"), hashlib.sha256).hexdigest()


def verify_signature(
    key: bytes,
    body: bytes,
    signature_header: str | None,
    timestamp_header: str | None,
    *,
    now: float | None = None,
) -> None:
    """Raise `SignatureRefused` unless the headers sign `body` within the allowed clock skew."""
    if not signature_header or not timestamp_header:
        raise SignatureRefused("X-Signature and X-Timestamp are required")
    try:
        timestamp = int(timestamp_header)
        timestamp_header.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        raise SignatureRefused("X-Timestamp must be Unix seconds") from None
    current = time.time() if now is None else now
    # Compared as integers: a timestamp of thousands of digits does not fit a float.
    if abs(int(current) - timestamp) > MAX_CLOCK_SKEW_SECONDS:
        raise SignatureRefused(
            f"X-Timestamp is more than {MAX_CLOCK_SKEW_SECONDS} s away from the receiver's clock"
        )
    expected = signature(key, body, timestamp_header)
    if not hmac.compare_digest(expected.encode(), signature_header.encode("utf-8", "replace")):
        raise SignatureRefused("X-Signature does not match the body")


def event_name(envelope: Any) -> str:
    """The envelope's event; refused when the body is not an envelope at all."""
    if not isinstance(envelope, dict):
        raise InvalidSms([FieldProblem("body", "must be a JSON object (a webhook envelope)")])
    event = envelope.get("event")
    if not isinstance(event, str):
        raise InvalidSms([FieldProblem("event", "is required and must be a string")])
    if (why := storable_text_problem(event)) is not None:
        # It is echoed in the answer to an ignored event, which must encode.
        raise InvalidSms([FieldProblem("event", why)])
    return event


def received_sms(envelope: dict[str, Any], *, max_message_length: int) -> SmsToStore:
    """The SMS of an `sms:received` envelope; unknown fields are ignored (the app adds some)."""
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        raise InvalidSms([FieldProblem("payload", "is required and must be a JSON object")])
    event_id = envelope.get("id")
    if event_id is not None and not isinstance(event_id, str):
        raise InvalidSms([FieldProblem("id", "must be a string")])
    key = idempotency_key(event_id, field="id")
    sender_field = "payload.sender" if payload.get("sender") is not None else "payload.phoneNumber"
    problems = [
        FieldProblem(name, "is required")
        for name, present in (
            ("payload.message", "message" in payload),
            ("payload.receivedAt", "receivedAt" in payload),
            (
                "payload.sender or payload.phoneNumber",
                payload.get(sender_field.removeprefix("payload.")) is not None,
            ),
        )
        if not present
    ]
    if problems:
        raise InvalidSms(problems)
    result = build_sms(
        payload[sender_field.removeprefix("payload.")],
        payload["message"],
        payload["receivedAt"],
        max_message_length=max_message_length,
        source=SOURCE,
        client_event_id=key,
        field_names=(sender_field, "payload.message", "payload.receivedAt"),
    )
    if isinstance(result, list):
        raise InvalidSms(result)
    return result
