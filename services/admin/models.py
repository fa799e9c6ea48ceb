"""What the admin API takes and answers, with the examples that /docs shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

# ------------------------------------------------------------------ settings


class SettingView(BaseModel):
    key: str
    value: Any = Field(
        description="the typed value in force (JSON); the stored text when it is "
        "invalid (see `invalid`)"
    )
    rule: str = Field(description="the rule a new value must follow")
    meaning: str
    default: Any
    read_only: bool
    updated_at: datetime | None = Field(description="null while the key keeps its default")
    invalid: str | None = Field(
        None,
        description="set when the stored text breaks the rule (written by hand): the "
        "services keep their last good value",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "batch_size",
                    "value": 20,
                    "rule": "an integer from 1 to 10000",
                    "meaning": "SMS per batch",
                    "default": 20,
                    "read_only": False,
                    "updated_at": "2025-01-31T09:00:00Z",
                    "invalid": None,
                }
            ]
        }
    )


class SettingUpdate(BaseModel):
    value: Any = Field(
        description="the new value as JSON: a number, string, boolean, list or "
        "object, as the key's rule says"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"value": 50},
                {"value": ["blacklist", "header", "time_window"]},
                {"value": {"mobile": False}},
                {"value": True},
            ]
        },
    )


class SettingChange(BaseModel):
    setting: SettingView
    changed: bool = Field(
        description="false when the new value equals the stored one (then "
        "nothing is written and nothing audited)"
    )
    changed_by: str


class AuditEntry(BaseModel):
    id: int
    key: str
    old_value: str | None = Field(description="stored text before; null if the row was new")
    new_value: str
    changed_by: str = Field(description="the name of the admin token used")
    changed_at: datetime


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before_id: int | None = Field(
        description="pass as before_id for the next (older) page; null on the last page"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entries": [
                        {
                            "id": 42,
                            "key": "batch_size",
                            "old_value": "20",
                            "new_value": "50",
                            "changed_by": "operator",
                            "changed_at": "2025-01-31T09:00:00Z",
                        }
                    ],
                    "next_before_id": None,
                }
            ]
        }
    )


# ------------------------------------------------------------------ one SMS


class CheckOutcome(BaseModel):
    name: str
    code: int = Field(description="0 not run, 1 pass, 2 fail, 3 skipped")
    result: str = Field(description="the code's meaning")


class InputSms(BaseModel):
    sender_number: str
    sms_message: str
    received_timestamp: datetime
    created_at: datetime | None
    source: str
    client_event_id: str | None


class OutSms(BaseModel):
    sender_number: str
    sms_message: str
    validation_status: str | None
    forwarded_timestamp: datetime | None
    created_at: datetime | None


class SmsDetail(BaseModel):
    uuid: UUID
    trace_id: str = Field(description="the SMS's trace in Jaeger (its uuid as 32 hex digits)")
    input: InputSms
    overall_status: str = Field(
        description="pending, valid, invalid, skipped, error; 'unprocessed' before the "
        "validator has written a result"
    )
    failed_at_check: str | None
    checks: list[CheckOutcome]
    batch_id: UUID | None
    retry_count: int | None
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    processing_ms: float | None
    out_sms: OutSms | None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "uuid": "01946b8e-7f3a-7c2e-8000-0001a2b3c4d5",
                    "trace_id": "01946b8e7f3a7c2e80000001a2b3c4d5",
                    "input": {
                        "sender_number": "447700900123",
                        "sms_message": "ACME 0123456789abcdef +447700900123",
                        "received_timestamp": "2025-01-31T08:59:58Z",
                        "created_at": "2025-01-31T09:00:00Z",
                        "source": "api",
                        "client_event_id": None,
                    },
                    "overall_status": "invalid",
                    "failed_at_check": "header",
                    "checks": [
                        {"name": "blacklist", "code": 1, "result": "pass"},
                        {"name": "duplicate", "code": 1, "result": "pass"},
                        {"name": "header", "code": 2, "result": "fail"},
                        {"name": "hash_length", "code": 0, "result": "not run"},
                        {"name": "mobile", "code": 0, "result": "not run"},
                        {"name": "time_window", "code": 0, "result": "not run"},
                    ],
                    "batch_id": "01946b8e-8000-7000-8000-000000000001",
                    "retry_count": 0,
                    "processing_started_at": "2025-01-31T09:00:00.100Z",
                    "processing_completed_at": "2025-01-31T09:00:00.130Z",
                    "processing_ms": 30.0,
                    "out_sms": None,
                }
            ]
        }
    )


class Requeued(BaseModel):
    uuid: UUID
    overall_status: str
    retry_count: int | None


# ------------------------------------------------------------------ blacklist


class BlacklistEntry(BaseModel):
    sender_number: str
    blacklisted_at: datetime | None
    reason: str | None
    message_count: int | None = Field(description="the sender's count when it was blacklisted")
    current_count: int | None = Field(description="the sender's count now (count_sms)")


class BlacklistPage(BaseModel):
    entries: list[BlacklistEntry]
    next_after: str | None = Field(
        description="pass as `after` for the next page; null on the last page"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entries": [
                        {
                            "sender_number": "447700900123",
                            "blacklisted_at": "2025-01-31T09:00:00Z",
                            "reason": "threshold_exceeded",
                            "message_count": 11,
                            "current_count": 14,
                        }
                    ],
                    "next_after": None,
                }
            ]
        }
    )


class BlacklistRemoval(BaseModel):
    removed: BlacklistEntry
    count_reset_from: int | None = Field(
        description="the sender's count before the reset (its count_sms row is deleted); null "
        "if it had none"
    )


# ------------------------------------------------------------------ stats


class Backlog(BaseModel):
    after_checkpoint: int = Field(description="input_sms rows after last_processed_uuid")
    after_checkpoint_exact: bool = Field(
        description="false when the count stopped at its cap (then it is a lower bound)"
    )
    pending: int = Field(description="SMS requeued or otherwise pending in sms_monitor")
    oldest_unprocessed_at: datetime | None
    oldest_unprocessed_age_seconds: float | None


class Throughput(BaseModel):
    window_seconds: int
    processed_per_second: float = Field(description="SMS judged by the validator")
    received_per_second: float = Field(description="SMS stored by the receiver")


class TimePartition(BaseModel):
    partition: str = Field(description="the suffix of the three tables' partitions")
    starts_at: datetime | None = Field(description="null for the legacy partition")
    ends_at: datetime


class KeptPartition(TimePartition):
    unjudged: int = Field(description="SMS without a final result at its last examination")
    examined_at: datetime


class NextDrop(TimePartition):
    due_at: datetime = Field(description="when it is past the retention")


class LastDrop(BaseModel):
    partition: str
    dropped_at: datetime
    archived: bool


class Storage(BaseModel):
    """The time partitions of input_sms, sms_monitor and out_sms (docs/operations.md,
    "Retention")."""

    retention_days: int = Field(description="the setting; 0 keeps everything")
    table_bytes: dict[str, int] = Field(description="each table with its indexes, all partitions")
    partitions: int = Field(description="time partitions not dropped, those made ahead included")
    oldest_partition: TimePartition | None
    newest_partition: TimePartition | None
    next_drop: NextDrop | None = Field(
        description="the oldest partition and when retention may drop it (null when retention "
        "is 0); it goes then only if every SMS in it is judged"
    )
    kept_unjudged: list[KeptPartition] = Field(
        description="partitions past the retention kept because some SMS in them is pending, "
        "processing or in error"
    )
    last_drop: LastDrop | None


class Stats(BaseModel):
    at: datetime = Field(description="the database's clock when the numbers were taken")
    by_status: dict[str, int] = Field(description="sms_monitor rows per overall_status")
    total_judged: int
    checkpoint: UUID
    backlog: Backlog
    throughput: Throughput
    storage: Storage

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "at": "2025-01-31T09:00:00Z",
                    "by_status": {
                        "valid": 700000,
                        "invalid": 200000,
                        "skipped": 50000,
                        "error": 12,
                        "pending": 3,
                    },
                    "total_judged": 950015,
                    "checkpoint": "01946b8e-7f3a-7c2e-8000-0001a2b3c4d5",
                    "backlog": {
                        "after_checkpoint": 1200,
                        "after_checkpoint_exact": True,
                        "pending": 3,
                        "oldest_unprocessed_at": "2025-01-31T08:59:57Z",
                        "oldest_unprocessed_age_seconds": 3.2,
                    },
                    "throughput": {
                        "window_seconds": 60,
                        "processed_per_second": 412.5,
                        "received_per_second": 430.1,
                    },
                    "storage": {
                        "retention_days": 30,
                        "table_bytes": {
                            "input_sms": 5_368_709_120,
                            "sms_monitor": 3_221_225_472,
                            "out_sms": 2_147_483_648,
                        },
                        "partitions": 38,
                        "oldest_partition": {
                            "partition": "p20241231",
                            "starts_at": "2024-12-31T00:00:00Z",
                            "ends_at": "2025-01-01T00:00:00Z",
                        },
                        "newest_partition": {
                            "partition": "p20250207",
                            "starts_at": "2025-02-07T00:00:00Z",
                            "ends_at": "2025-02-08T00:00:00Z",
                        },
                        "next_drop": {
                            "partition": "p20241231",
                            "starts_at": "2024-12-31T00:00:00Z",
                            "ends_at": "2025-01-01T00:00:00Z",
                            "due_at": "2025-01-31T00:00:00Z",
                        },
                        "kept_unjudged": [],
                        "last_drop": {
                            "partition": "p20241230",
                            "dropped_at": "2025-01-30T00:01:02Z",
                            "archived": False,
                        },
                    },
                }
            ]
        }
    )
