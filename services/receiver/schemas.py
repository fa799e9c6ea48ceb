"""The receiver's request and response shapes, for the OpenAPI document.

The endpoints read and validate their bodies themselves (services/receiver/incoming.py: body
size, UTF-8, NUL characters and error messages are checked before any model would see them);
these models describe the same contract to clients, with examples.
"""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

EXAMPLE_UUID: Final = "0192f3a4-5b6c-7d8e-9f01-23456789abcd"


class SmsIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sender_number": "+44 7700 900123",
                    "sms_message": "ACME 0123456789abcdef +447700900123",
                    "received_timestamp": "2024-06-22T15:46:11+01:00",
                }
            ]
        },
    )

    sender_number: str = Field(
        min_length=1,
        description="Number or name of the sender. Numbers are normalised (spaces, - . ( ) and "
        "a leading + or 00 removed) and must then have 1 to 15 characters; a sender "
        "with a letter in it is kept as sent, trimmed.",
        examples=["+44 7700 900123", "Google", "72404"],
    )
    sms_message: str = Field(
        min_length=1,
        description="The text, stored exactly as received; at most max_message_length "
        "characters (a setting, 1600 by default); no NUL characters.",
        examples=["ACME 0123456789abcdef +447700900123"],
    )
    received_timestamp: str = Field(
        description="When the SMS reached the phone: ISO 8601 with a UTC offset (Z or ±hh:mm); "
        "a time without an offset is refused.",
        examples=["2024-06-22T15:46:11+01:00"],
    )


class Receipt(BaseModel):
    uuid: UUID = Field(
        description="The stored SMS's id (UUIDv7), also its trace id", examples=[EXAMPLE_UUID]
    )


class BatchReceipt(BaseModel):
    uuids: list[UUID] = Field(
        description="The ids of the stored SMS, in input order", examples=[[EXAMPLE_UUID]]
    )


class Ignored(BaseModel):
    ignored: str = Field(description="the event, which is not stored", examples=["sms:sent"])


class SmsGatePayload(BaseModel):
    messageId: str | None = Field(None, description="content-based, not unique: not used")
    message: str
    sender: str | None = Field(None, description="newer app versions; preferred to phoneNumber")
    recipient: str | None = None
    phoneNumber: str | None = Field(None, description="the sender in older app versions")
    simNumber: int | None = None
    receivedAt: str = Field(description="ISO 8601 with the device's UTC offset")


SMSGATE_EXAMPLE: Final[dict[str, Any]] = {
    "deviceId": "ffffffffceb0b1db0000018e937c815b",
    "event": "sms:received",
    "id": "Ey6ECgOkVVFjz3CL48B8C",
    "webhookId": "LreFUt-Z3sSq0JufY9uWB",
    "payload": {
        "messageId": "abc123",
        "message": "Android is always a sweet treat!",
        "sender": "6505551212",
        "recipient": "+79990001234",
        "phoneNumber": "6505551212",
        "simNumber": 1,
        "receivedAt": "2024-06-22T15:46:11.000+07:00",
    },
}


class SmsGateEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SMSGATE_EXAMPLE]})

    deviceId: str | None = None
    event: str = Field(description="only sms:received is stored; other events get 200")
    id: str | None = Field(None, max_length=64, description="the delivery's idempotency key")
    webhookId: str | None = None
    payload: SmsGatePayload | dict[str, Any]


class TwilioInbound(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
                    "AccountSid": "AC0123456789abcdef0123456789abcdef",
                    "From": "+14155552671",
                    "To": "+15017122661",
                    "Body": "Hello from Twilio",
                    "NumMedia": "0",
                }
            ]
        },
    )

    MessageSid: str = Field(max_length=64, description="the delivery's idempotency key")
    From: str
    To: str | None = None
    Body: str


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined (for a hand-written requestBody)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
