"""Twilio's inbound SMS webhook (Messaging "A message comes in").

Twilio POSTs `application/x-www-form-urlencoded` parameters (`MessageSid`, `From`, `To`, `Body`
and many more, added over time: unknown ones are ignored) and sends no time, so the arrival time
is the SMS's time. The delivery key is `MessageSid`, the same on Twilio's retries.

`X-Twilio-Signature` is the base64 HMAC-SHA1, keyed with the auth token, of the full URL Twilio
requested followed by every POST parameter's name and value, sorted by name (a name that occurs
more than once contributes each of its distinct values, sorted). Behind a proxy the URL is
rebuilt from `X-Forwarded-Proto` and `X-Forwarded-Host`. As Twilio's own validators do, the
URL is tried as given, without its port and with the default port, since proxies differ.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from services.receiver.errors import InvalidSms, SignatureRefused
from services.receiver.incoming import SmsToStore, body_text, build_sms, idempotency_key
from sms_gateway.problems import FieldProblem

SOURCE: Final = "twilio"
EMPTY_TWIML: Final = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
TWIML_MEDIA_TYPE: Final = "application/xml"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def parse_form(body: bytes) -> list[tuple[str, str]]:
    text = body_text(body)
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise InvalidSms(
            [FieldProblem("body", "must be application/x-www-form-urlencoded")]
        ) from None


def signature(token: bytes, url: str, params: Iterable[tuple[str, str]]) -> str:
    # Twilio's validators sort by name, then value, and count a repeated pair once.
    data = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(token, data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as given, without its port and with the scheme's default port."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    bare = host.rsplit(":", 1)[0] if parts.port is not None else host
    variants = [url, urlunsplit(parts._replace(netloc=bare))]
    default = _DEFAULT_PORTS.get(parts.scheme)
    if parts.port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{bare}:{default}")))
    return list(dict.fromkeys(variants))


def verify_signature(
    token: bytes, url: str, params: list[tuple[str, str]], signature_header: str | None
) -> None:
    if not signature_header:
        raise SignatureRefused("X-Twilio-Signature is required")
    given = signature_header.encode("utf-8", "replace")
    matches = [
        hmac.compare_digest(signature(token, variant, params).encode(), given)
        for variant in _url_variants(url)
    ]
    if not any(matches):
        raise SignatureRefused("X-Twilio-Signature does not match the URL and parameters")


def request_url(scheme: str, headers: Mapping[str, str], path: str, query: str) -> str:
    """The URL Twilio called, as a proxy in front of us received it.

    `path` is the request target as it was sent (percent-encoding kept: Twilio signs the URL
    it was configured with), including the prefix a proxy strips (the ASGI root_path).
    """
    forwarded_proto = headers.get("x-forwarded-proto")
    forwarded_host = headers.get("x-forwarded-host")
    if forwarded_proto:
        scheme = forwarded_proto.split(",")[0].strip()
    host = forwarded_host.split(",")[0].strip() if forwarded_host else headers.get("host", "")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def inbound_sms(
    params: list[tuple[str, str]], *, arrived_at: datetime, max_message_length: int
) -> SmsToStore:
    fields = dict(params)
    problems = [
        FieldProblem(name, "is required")
        for name in ("MessageSid", "From", "Body")
        if name not in fields
    ]
    if problems:
        raise InvalidSms(problems)
    key = idempotency_key(fields["MessageSid"], field="MessageSid")
    result = build_sms(
        fields["From"],
        fields["Body"],
        arrived_at,
        max_message_length=max_message_length,
        source=SOURCE,
        client_event_id=key,
        field_names=("From", "Body", "received_timestamp"),
    )
    if isinstance(result, list):
        raise InvalidSms(result)
    return result
