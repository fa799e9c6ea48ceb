"""One SMS through a running gateway, seen from outside: POST, judged, forwarded, traced.

Standard library only, so that it runs on the CI machine against the compose stack and inside
the Ansible target with any python3. Each command prints one JSON line and exits non-zero with a
message that says what was wrong.

  sms_roundtrip.py send     --receiver URL --admin URL --token TOKEN
  sms_roundtrip.py check    --admin URL --token TOKEN --uuid UUID
  sms_roundtrip.py setting  --receiver URL --admin URL --token TOKEN
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any


def new_sms() -> dict[str, str]:
    """An SMS the seed's default settings judge valid: header, a 16-digit hex hash, the sender.

    A new sender each time, so that an earlier run's SMS never makes it a duplicate."""
    sender = f"+49151{secrets.randbelow(10**8):08d}"
    return {
        "sender_number": sender,
        "sms_message": f"ABC 0123456789abcdef {sender}",
        "received_timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


class RoundTripError(Exception):
    """A step of the round trip did not give what the gateway promises."""


def request(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One HTTP request; the status and the decoded JSON body (or the text when it is not JSON)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def send(receiver: str, admin: str, token: str, timeout: float) -> dict[str, Any]:
    """POST one SMS, wait for its judgement; it must be valid and have its out_sms row."""
    sms = new_sms()
    status, body = request("POST", f"{receiver}/sms/receive", sms)
    if status != 202 or not isinstance(body, dict) or "uuid" not in body:
        raise RoundTripError(f"POST /sms/receive answered {status}: {body}")
    detail = wait_judged(admin, token, body["uuid"], timeout)
    return {
        "uuid": body["uuid"],
        "trace_id": detail["trace_id"],
        "sender": sms["sender_number"][1:],
    }


def wait_judged(admin: str, token: str, uuid: str, timeout: float) -> dict[str, Any]:
    """Poll the admin API until the SMS is judged; it must be valid and forwarded."""
    deadline = time.monotonic() + timeout
    detail: Any = None
    while time.monotonic() < deadline:
        status, detail = request("GET", f"{admin}/sms/{uuid}", token=token)
        if status != 200:
            raise RoundTripError(f"GET /sms/{uuid} answered {status}: {detail}")
        if detail.get("overall_status") not in (None, "unprocessed"):
            break
        time.sleep(0.5)
    else:
        raise RoundTripError(f"SMS {uuid} not judged within {timeout:.0f} s: {detail}")
    if detail["overall_status"] != "valid":
        raise RoundTripError(f"SMS {uuid} judged {detail['overall_status']}: {detail}")
    if not detail.get("out_sms"):
        raise RoundTripError(f"SMS {uuid} is valid but has no out_sms row: {detail}")
    return dict(detail)


def change_setting(receiver: str, admin: str, token: str, timeout: float) -> dict[str, Any]:
    """Lower max_message_length through the admin API and see the receiver refuse; restore it."""
    url = f"{admin}/settings/max_message_length"
    status, before = request("GET", url, token=token)
    if status != 200:
        raise RoundTripError(f"GET /settings/max_message_length answered {status}: {before}")
    original = before["value"]
    status, body = request("PUT", url, {"value": 10}, token=token)
    if status != 200:
        raise RoundTripError(f"PUT /settings/max_message_length answered {status}: {body}")
    try:
        deadline = time.monotonic() + timeout
        while True:
            # Until the receiver reloads its settings (a few seconds) the SMS is stored: harmless.
            status, body = request("POST", f"{receiver}/sms/receive", new_sms())
            if status == 422 and "sms_message" in json.dumps(body):
                break
            if status not in (202, 422):
                raise RoundTripError(f"POST /sms/receive answered {status}: {body}")
            if time.monotonic() > deadline:
                raise RoundTripError(
                    f"max_message_length=10 not applied by the receiver within {timeout:.0f} s"
                )
            time.sleep(0.5)
    finally:
        request("PUT", url, {"value": original}, token=token)
    return {"setting": "max_message_length", "applied": True, "restored": original}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["send", "check", "setting"])
    parser.add_argument("--receiver", default="http://127.0.0.1:8080")
    parser.add_argument("--admin", default="http://127.0.0.1:8082")
    parser.add_argument("--token", required=True)
    parser.add_argument("--uuid")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        if args.command == "send":
            result = send(args.receiver, args.admin, args.token, args.timeout)
        elif args.command == "check":
            detail = wait_judged(args.admin, args.token, args.uuid, args.timeout)
            result = {key: detail[key] for key in ("uuid", "overall_status", "out_sms")}
        else:
            result = change_setting(args.receiver, args.admin, args.token, args.timeout)
    except (RoundTripError, OSError, KeyError, TypeError) as exc:
        print(f"sms_roundtrip {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
