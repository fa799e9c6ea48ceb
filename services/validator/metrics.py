"""The validator's Prometheus metrics (SPEC §8). Labels never carry a sender or a uuid.

Elsewhere: retries (`sms_retries_total`, sms_gateway.retry), settings reloads
(`sms_settings_reloads_total`, sms_gateway.settings), the Redis set size and repairs
(services/validator/index.py).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

BATCHES: Final = Counter(
    "sms_validator_batches_total", "Committed batches with at least one SMS.", ["kind"]
)
BATCH_SECONDS: Final = Histogram(
    "sms_validator_batch_duration_seconds",
    "Time of a batch, from BEGIN to commit.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SMS_JUDGED: Final = Counter("sms_validator_sms_total", "SMS judged, by overall status.", ["status"])
CHECK_RESULTS: Final = Counter(
    "sms_validator_check_results_total",
    "Check results written to sms_monitor.",
    ["check", "result"],
)
# Gauges say how they merge across the processes of one validator (prometheus_client's
# multiprocess mode; ignored in a single process).
BACKLOG_SIZE: Final = Gauge(
    "sms_validator_backlog_sms",
    "input_sms rows after the checkpoint, counted up to 100,000.",
    multiprocess_mode="max",
)
BACKLOG_AGE: Final = Gauge(
    "sms_validator_backlog_age_seconds",
    "Age of the oldest input_sms row after the checkpoint (0 when there is none).",
    multiprocess_mode="max",
)
SWEEPER_FOUND: Final = Counter(
    "sms_validator_sweeper_found_total",
    "SMS the sweeper processed: 'missed' (committed below the checkpoint without a result; "
    "should stay at zero) or 'requeued' (an operator's requeue).",
    ["reason"],
)
BATCH_FAILURES: Final = Counter(
    "sms_validator_batch_failures_total",
    "Batches given up after every retry of a transient fault (retried later).",
    ["kind"],
)
PAUSED: Final = Gauge(
    "sms_validator_paused",
    "1 while the engine claims no batch, by reason (maintenance, configuration).",
    ["reason"],
    multiprocess_mode="max",
)
WAITING: Final = Gauge(
    "sms_validator_waiting",
    "1 while the engine waits out a transient fault (database, pgbouncer or Redis) that "
    "outlasted its retries; /ready says which.",
    multiprocess_mode="max",
)
PARTITION_LAG: Final = Gauge(
    "sms_validator_partition_checkpoint_age_seconds",
    "How far each partition's checkpoint is behind the clock (small when judging keeps up, "
    "growing when the partition is stuck or unheld).",
    ["partition"],
    multiprocess_mode="max",
)
PARTITIONS_UNHELD: Final = Gauge(
    "sms_validator_partitions_unheld",
    "Partitions no live worker holds a lease on (their SMS wait for a worker).",
    multiprocess_mode="max",
)

# Time partitions (services/validator/lifecycle.py). Counters count what this process did; the
# gauges describe the database, so every process reports the same value.
PARTITIONS_CREATED: Final = Counter(
    "sms_time_partitions_created_total", "Day partitions made ahead (of the three tables)."
)
PARTITIONS_DROPPED: Final = Counter(
    "sms_time_partitions_dropped_total", "Day partitions dropped by retention."
)
PARTITIONS_ARCHIVED: Final = Counter(
    "sms_time_partitions_archived_total", "Day partitions written to the archive directory."
)
DROP_LOCK_TIMEOUTS: Final = Counter(
    "sms_time_partition_drop_lock_timeouts_total",
    "Drops that gave way because a table stayed busy longer than their lock wait.",
)
DROP_SECONDS: Final = Histogram(
    "sms_time_partition_drop_duration_seconds",
    "Time of a drop's transaction (the day's partitions detached under exclusive locks), from "
    "BEGIN to commit; removing the detached tables from disk comes after, locking no one.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LIFECYCLE_ERRORS: Final = Counter(
    "sms_time_partition_upkeep_errors_total",
    "Rounds of time partition upkeep that failed on something other than a transient fault.",
)
PARTITIONS_AHEAD: Final = Gauge(
    "sms_time_partitions_ahead_seconds",
    "How far ahead of the clock the newest time partition ends (about a week when upkeep "
    "runs; an alert fires below a day).",
    multiprocess_mode="max",
)
PARTITIONS_KEPT: Final = Gauge(
    "sms_time_partitions",
    "Time partitions not dropped (including those made ahead).",
    multiprocess_mode="max",
)
PARTITIONS_BLOCKED: Final = Gauge(
    "sms_time_partitions_blocked",
    "Time partitions past the retention kept because some SMS in them is not judged "
    "(pending, processing or error).",
    multiprocess_mode="max",
)
DEFAULT_PARTITION_ROWS: Final = Gauge(
    "sms_time_partition_default_rows",
    "input_sms rows after the newest time partition, in the default partition (counted up to "
    "10000; zero while upkeep keeps partitions ahead).",
    multiprocess_mode="max",
)
