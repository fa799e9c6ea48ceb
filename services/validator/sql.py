"""Every statement of the validator, kept together (docs/architecture.md, "Validator").

A batch is one READ COMMITTED transaction of a handful of statements, all set-based:
LOCK_CHECKPOINT, the settings, SETTLE_HORIZON, FETCH_BATCH (or the sweeper's FETCH_SWEEP),
LOAD_LEDGER, and one write statement (`write_statement`) whose data-modifying CTEs write
sms_monitor, out_sms, count_sms, blacklist_sms and the checkpoint from arrays.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

# The checkpoint row's lock serialises every batch and sweep of every validator process: a batch
# reads the checkpoint, judges and writes while holding it, so two batches never judge the same
# SMS and out_sms.seq is handed out in commit order. Transaction-scoped, so it works through
# pgbouncer's transaction mode.
LOCK_CHECKPOINT: Final = """
SELECT setting_value FROM system_settings
WHERE setting_key = 'last_processed_uuid'
FOR UPDATE
"""

# The settle horizon: an instant before which no uncommitted input_sms row can still appear.
# A row not yet visible belongs to a transaction that is open now (its xact_start is listed
# here, and its uuid, made later by the database clock, is >= that) or that starts after this
# statement (its uuid is later than now). Only sessions of roles that may insert into input_sms
# count (any column: the receiver may insert only the content columns, db/init/0009). The
# margin covers the instant between a transaction's start and its entry in pg_stat_activity,
# and small clock slews. This must be the transaction's first read of
# pg_stat_activity (PostgreSQL caches it per transaction), and it must run in a statement
# BEFORE the one that reads the rows, so that the rows' snapshot is later than this view.
SETTLE_HORIZON: Final = """
SELECT least(
    clock_timestamp() - make_interval(secs => $1::float8),
    (SELECT min(a.xact_start)
     FROM pg_stat_activity a
     WHERE a.datname = current_database()
       AND a.pid <> pg_backend_pid()
       AND a.backend_type = 'client backend'
       AND a.xact_start IS NOT NULL
       AND has_any_column_privilege(a.usesysid, 'public.input_sms', 'INSERT'))
)
"""

# The next rows after the checkpoint and below the horizon, in uuid order. A range scan of the
# primary key bounded by LIMIT, and an anti-join on sms_monitor's primary key: the cost does not
# depend on the size of either table. The anti-join repeats the uuid range on sms_monitor: without
# it, at millions of rows the planner may choose a merge anti-join that reads sms_monitor's whole
# primary key from the start (measured: 1.4 s at 10 million rows, docs/benchmarks.md). A
# 'pending' row (an admin requeue) is not final.
FETCH_BATCH: Final = """
SELECT i.uuid, i.sender_number, i.sms_message, i.received_timestamp, i.created_at
FROM input_sms i
WHERE i.uuid > $1::uuid
  AND i.uuid < uuid_v7_lower_bound($2::timestamptz)
  AND NOT EXISTS (SELECT FROM sms_monitor m
                  WHERE m.uuid = i.uuid
                    AND m.uuid > $1::uuid AND m.uuid < uuid_v7_lower_bound($2::timestamptz)
                    AND m.overall_status <> 'pending')
ORDER BY i.uuid
LIMIT $3
"""

# The sweeper: rows at or below the checkpoint that still need a final result. Requeued rows
# ('pending', found through idx_overall_status) and, as a defence in depth, committed rows of
# the last $2 seconds below the checkpoint without any sms_monitor row (the horizon makes these
# impossible; the metric of what is found here should stay at zero).
FETCH_SWEEP: Final = """
(SELECT i.uuid, i.sender_number, i.sms_message, i.received_timestamp, i.created_at,
        true AS requeued
 FROM sms_monitor m JOIN input_sms i ON i.uuid = m.uuid
 WHERE m.overall_status = 'pending' AND m.uuid <= $1::uuid
 ORDER BY m.uuid
 LIMIT $3)
UNION ALL
(SELECT i.uuid, i.sender_number, i.sms_message, i.received_timestamp, i.created_at,
        false AS requeued
 FROM input_sms i
 WHERE i.uuid <= $1::uuid
   AND i.uuid >= uuid_v7_lower_bound(uuid_v7_time($1::uuid) - make_interval(secs => $2::float8))
   AND NOT EXISTS (SELECT FROM sms_monitor m
                   WHERE m.uuid = i.uuid AND m.uuid <= $1::uuid
                     AND m.uuid >= uuid_v7_lower_bound(
                         uuid_v7_time($1::uuid) - make_interval(secs => $2::float8)))
 ORDER BY i.uuid
 LIMIT $3)
ORDER BY uuid
LIMIT $3
"""

# The ledger of a batch's distinct senders, and where out_sms stands. The counter and blacklist
# rows are locked so that an operator's reset (DELETE /blacklist/{sender}) waits for the batch
# instead of being overwritten by the batch's final counts.
LOAD_LEDGER: Final = """
WITH counts AS (
    SELECT sender_number, message_count FROM count_sms
    WHERE sender_number = ANY($1::text[])
    FOR UPDATE
), listed AS (
    SELECT sender_number FROM blacklist_sms
    WHERE sender_number = ANY($1::text[])
    FOR UPDATE
)
SELECT 'count' AS kind, sender_number, coalesce(message_count, 0)::bigint AS value FROM counts
UNION ALL
SELECT 'blacklisted', sender_number, NULL FROM listed
UNION ALL
SELECT 'max_seq', NULL, (SELECT coalesce(max(seq), 0) FROM out_sms)
"""

MAX_SEQ: Final = "SELECT coalesce(max(seq), 0) FROM out_sms"

# The index's catch-up and rebuild (services/validator/index.py), both under the checkpoint lock.
SENDERS_AFTER_SEQ: Final = """
SELECT seq, sender_number FROM out_sms WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3
"""
DISTINCT_SENDERS_AFTER: Final = """
SELECT DISTINCT sender_number FROM out_sms WHERE sender_number > $1
ORDER BY sender_number LIMIT $2
"""

# Backlog, for the metrics: bounded, so that a huge backlog does not make the gauge expensive.
BACKLOG: Final = """
SELECT (SELECT count(*) FROM (SELECT FROM input_sms WHERE uuid > $1::uuid LIMIT $2) b),
       (SELECT created_at FROM input_sms WHERE uuid > $1::uuid ORDER BY uuid LIMIT 1)
"""

CAN_SEE_OTHER_SESSIONS: Final = """
SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')
       OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
"""

_COLUMN_NAME: Final = re.compile(r"[a-z][a-z0-9_]*")


@lru_cache(maxsize=16)
def write_statement(check_names: Sequence[str]) -> str:
    """The one statement that writes a batch. Parameters, all arrays of one row per element:

    $1 uuid[]  $2.. one int[] per check column (in `check_names` order), then overall_status,
    processing_started_at, processing_completed_at, failed_at_check, batch_id, retry_count;
    then out_sms (uuid, sender, message), count_sms (sender, count),
    blacklist_sms (sender, count), and the new checkpoint (NULL: a sweep leaves it alone).

    The sms_monitor upsert refuses to overwrite a final row (only 'pending' is replaced), and
    the statement reports how many rows it wrote, so a double judgement cannot go unnoticed.
    """
    for name in check_names:  # names come from the registry, never from input
        if not _COLUMN_NAME.fullmatch(name):
            raise ValueError(f"not a check name: {name!r}")
    columns = [f"{name}_check" for name in check_names]
    n = len(columns)
    check_params = [f"${i + 2}::int[]" for i in range(n)]
    p = n + 2  # the first parameter after the check columns

    def param(offset: int, type_: str) -> str:
        return f"${p + offset}::{type_}"

    monitor_columns = ", ".join(
        [
            "uuid",
            *columns,
            "overall_status",
            "processing_started_at",
            "processing_completed_at",
            "failed_at_check",
            "batch_id",
            "retry_count",
        ]
    )
    monitor_arrays = ", ".join(
        [
            "$1::uuid[]",
            *check_params,
            param(0, "text[]"),
            param(1, "timestamptz[]"),
            param(2, "timestamptz[]"),
            param(3, "text[]"),
            param(4, "uuid[]"),
            param(5, "int[]"),
        ]
    )
    replaced = ", ".join(
        [f"{c} = EXCLUDED.{c}" for c in columns]
        + [
            f"{c} = EXCLUDED.{c}"
            for c in (
                "overall_status",
                "processing_started_at",
                "processing_completed_at",
                "failed_at_check",
                "batch_id",
            )
        ]
        # A requeued SMS keeps the attempts it spent before (SPEC §7).
        + ["retry_count = m.retry_count + EXCLUDED.retry_count"]
    )
    # Only identifiers checked above are formatted in; every value is a bound parameter.
    return f"""
WITH judged AS (
    INSERT INTO sms_monitor AS m ({monitor_columns})
    SELECT * FROM unnest({monitor_arrays})
    ON CONFLICT (uuid) DO UPDATE SET {replaced}
    WHERE m.overall_status = 'pending'
    RETURNING 1
), forwarded AS (
    INSERT INTO out_sms (uuid, sender_number, sms_message)
    SELECT * FROM unnest({param(6, "uuid[]")}, {param(7, "text[]")}, {param(8, "text[]")})
        AS f(uuid, sender_number, sms_message)
    ORDER BY f.uuid
    RETURNING seq
), counted AS (
    INSERT INTO count_sms AS c (sender_number, message_count, last_updated)
    SELECT s, n, now() FROM unnest({param(9, "text[]")}, {param(10, "int[]")}) AS u(s, n)
    ON CONFLICT (sender_number) DO UPDATE
        SET message_count = EXCLUDED.message_count, last_updated = EXCLUDED.last_updated
    RETURNING 1
), listed AS (
    -- An operator's own row keeps its reason and time; the count follows count_sms.
    INSERT INTO blacklist_sms AS b (sender_number, reason, message_count)
    SELECT s, 'threshold_exceeded', n
    FROM unnest({param(11, "text[]")}, {param(12, "int[]")}) AS u(s, n)
    ON CONFLICT (sender_number) DO UPDATE SET message_count = EXCLUDED.message_count
    RETURNING 1
), advanced AS (
    UPDATE system_settings SET setting_value = {param(13, "text")}, updated_at = now()
    WHERE setting_key = 'last_processed_uuid' AND {param(13, "text")} IS NOT NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM judged) AS judged,
       (SELECT coalesce(max(seq), 0) FROM forwarded) AS max_seq
"""  # noqa: S608
