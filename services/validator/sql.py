"""Every statement of the validator, kept together (docs/architecture.md, "Validator").

A batch is one READ COMMITTED transaction of three statements, all set-based: START_BATCH (its
partitions locked, the live workers, the settings and the settle horizon), FETCH_BATCH (or the
sweeper's FETCH_SWEEP) with the ledger of its senders, and one write statement
(`write_statement`) whose data-modifying CTEs write sms_monitor, out_sms, count_sms,
blacklist_sms and the checkpoints from arrays.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

# The live workers as a worker ($1) counts them for its fair share (partitions.fair_share): how
# many (itself always among them: its own row may be new in this very statement) and how many
# have a lower id.
_MEMBERSHIP: Final = """
SELECT count(*) FILTER (WHERE worker_id <> $1) + 1 AS workers,
       count(*) FILTER (WHERE worker_id < $1) AS rank
FROM validator_workers WHERE expires_at > clock_timestamp()
"""

# The partitions this worker holds, locked for the whole batch (START_BATCH locks them so) or the
# index's upkeep. A batch judges only the senders of partitions whose rows it has locked with
# `owner` = itself, so two batches never judge the same sender at once, and a worker whose lease
# was taken over (it stalled longer than the lease) finds no row and judges nothing: the lock and
# the owner check are the fence. Ordered, so that the offline repartitioning, which locks them
# all, cannot deadlock with a batch.
LOCK_PARTITIONS: Final = """
SELECT partition_no, checkpoint, forwarded_seq
FROM validator_partitions
WHERE owner = $1
ORDER BY partition_no
FOR UPDATE
"""

PARTITION_COUNT: Final = "SELECT count(*) FROM validator_partitions"

# The settle horizon: an instant before which no uncommitted input_sms row can still appear.
# A row not yet visible belongs to a transaction that is open now (its xact_start is listed
# here, and its uuid, made later by the database clock, is >= that) or that starts after this
# statement (its uuid is later than now). Only sessions of roles that may insert into input_sms
# count (any column: the receiver may insert only the content columns, db/init/0009). The
# margin covers the instant between a transaction's start and its entry in pg_stat_activity,
# and small clock slews. This must be the transaction's first read of
# pg_stat_activity (PostgreSQL caches it per transaction), and it must run in a statement
# BEFORE the one that reads the rows, so that the rows' snapshot is later than this view.
_SETTLE_HORIZON: Final = """
SELECT h.horizon, uuid_v7_lower_bound(h.horizon) AS first_unsettled
FROM (SELECT least(
    clock_timestamp() - make_interval(secs => $2::float8),
    (SELECT min(a.xact_start)
     FROM pg_stat_activity a
     WHERE a.datname = current_database()
       AND a.pid <> pg_backend_pid()
       AND a.backend_type = 'client backend'
       AND a.xact_start IS NOT NULL
       AND has_any_column_privilege(a.usesysid, 'public.input_sms', 'INSERT'))
) AS horizon) AS h
"""

# The first statement of every batch and sweep ($1 the worker, $2 the settle margin), one row:
# the partitions the worker holds, locked as LOCK_PARTITIONS locks them, as three arrays in
# partition order; the live workers (_MEMBERSHIP: a worker holding more than its share hands the
# surplus over after this batch rather than at its next heartbeat, partitions.py); every stored
# setting, as two arrays; and the settle horizon. One statement, not four: each statement costs
# two round trips through pgbouncer (no prepared statements) and a parse and plan. It is the
# transaction's first statement, so its read of pg_stat_activity is the transaction's first, and
# it precedes the fetch.
START_BATCH: Final = f"""
WITH held AS (
    SELECT partition_no, checkpoint, forwarded_seq
    FROM validator_partitions
    WHERE owner = $1
    ORDER BY partition_no
    FOR UPDATE
)
SELECT (SELECT coalesce(array_agg(partition_no ORDER BY partition_no), '{{}}') FROM held)
           AS partition_nos,
       (SELECT coalesce(array_agg(checkpoint ORDER BY partition_no), '{{}}') FROM held)
           AS checkpoints,
       (SELECT coalesce(array_agg(forwarded_seq ORDER BY partition_no), '{{}}') FROM held)
           AS forwarded_seqs,
       w.workers, w.rank, s.setting_keys, s.setting_values, h.horizon, h.first_unsettled
FROM ({_MEMBERSHIP}) AS w,
     (SELECT array_agg(setting_key) AS setting_keys, array_agg(setting_value) AS setting_values
      FROM system_settings) AS s,
     ({_SETTLE_HORIZON}) AS h
"""  # noqa: S608 (composed of this module's constants only)

# The next rows of this worker's partitions after their checkpoints and below the horizon, in
# uuid order. $4 holds one checkpoint per partition, indexed by partition number + 1; partitions
# of other workers hold the largest uuid, so none of their rows pass. The scan is a range of the
# primary key from the smallest of this worker's checkpoints, stopped by LIMIT: it reads the rows
# of the other workers' partitions in that range too (as many again per other worker), and an
# anti-join on sms_monitor's primary key, so its cost does not depend on the size of either
# table. The anti-join repeats the uuid range on sms_monitor: without it, at millions of rows the
# planner may choose a merge anti-join that reads sms_monitor's whole primary key from the start
# (measured: 1.4 s at 10 million rows, docs/benchmarks.md). A 'pending' row (an admin requeue) is
# not final.
FETCH_BATCH: Final = """
SELECT i.uuid, i.sender_number, i.sms_message, i.received_timestamp, i.created_at,
       sms_sender_partition(i.sender_number, $5) AS partition_no
FROM input_sms i
WHERE i.uuid > $1::uuid
  AND i.uuid < uuid_v7_lower_bound($2::timestamptz)
  AND i.uuid > ($4::uuid[])[sms_sender_partition(i.sender_number, $5) + 1]
  AND NOT EXISTS (SELECT FROM sms_monitor m
                  WHERE m.uuid = i.uuid
                    AND m.uuid > $1::uuid AND m.uuid < uuid_v7_lower_bound($2::timestamptz)
                    AND m.overall_status <> 'pending')
ORDER BY i.uuid
LIMIT $3
"""


# The sweeper: rows of this worker's partitions at or below their checkpoints that still need
# a final result. Requeued rows ('pending', found through idx_overall_status) and, as a defence in
# depth, committed rows without any sms_monitor row in the last $2 seconds of uuid time below
# $6, the lowest checkpoint of all partitions (the horizon makes these impossible; the metric of
# what is found here should stay at zero). Below $6 every partition has judged every row, and
# every sms_monitor row is an input_sms row's, so a row is missed there exactly when the window
# holds more input_sms rows than sms_monitor rows: two counts of primary-key ranges, whose cost
# follows the rows whatever the planner estimates, gate the row-by-row look (a one-time filter:
# when they are equal, as they should always be, nothing else runs). Ungated, at 36,000 SMS/s the
# look-back probed ~400,000 rows for their partition and their result, 5-10 s per worker per
# minute (docs/benchmarks.md); and an anti-join of the ranges, planned for the one row the
# statistics promise beyond their histogram, became a nested loop over a materialized range
# that ran into the sweep's timeout. $1 is the largest of the worker's checkpoints, $4 one
# checkpoint per partition (other workers' partitions hold the zero uuid, so none of their rows
# pass).
FETCH_SWEEP: Final = """
(SELECT i.uuid, i.sender_number, i.sms_message, i.received_timestamp, i.created_at,
        sms_sender_partition(i.sender_number, $5) AS partition_no, true AS requeued
 FROM sms_monitor m JOIN input_sms i ON i.uuid = m.uuid
 WHERE m.overall_status = 'pending' AND m.uuid <= $1::uuid
   AND i.uuid <= ($4::uuid[])[sms_sender_partition(i.sender_number, $5) + 1]
 ORDER BY m.uuid
 LIMIT $3)
UNION ALL
(SELECT i.uuid, i.sender_number, i.sms_message, i.received_timestamp, i.created_at,
        sms_sender_partition(i.sender_number, $5) AS partition_no, false AS requeued
 FROM input_sms i
 WHERE i.uuid <= $6::uuid
   AND i.uuid >= uuid_v7_lower_bound(uuid_v7_time($6::uuid) - make_interval(secs => $2::float8))
   AND (SELECT count(*) FROM input_sms
        WHERE uuid <= $6::uuid
          AND uuid >= uuid_v7_lower_bound(uuid_v7_time($6::uuid)
                                          - make_interval(secs => $2::float8)))
       > (SELECT count(*) FROM sms_monitor
          WHERE uuid <= $6::uuid
            AND uuid >= uuid_v7_lower_bound(uuid_v7_time($6::uuid)
                                            - make_interval(secs => $2::float8)))
   AND i.uuid <= ($4::uuid[])[sms_sender_partition(i.sender_number, $5) + 1]
   AND NOT EXISTS (SELECT FROM sms_monitor m
                   WHERE m.uuid = i.uuid AND m.uuid <= $6::uuid
                     AND m.uuid >= uuid_v7_lower_bound(
                         uuid_v7_time($6::uuid) - make_interval(secs => $2::float8)))
 ORDER BY i.uuid
 LIMIT $3)
ORDER BY uuid
LIMIT $3
"""


# A fetch (FETCH_BATCH or FETCH_SWEEP) with the ledger of its senders: each row also carries its
# sender's count_sms.message_count (NULL: none yet) and whether the sender is blacklisted. The
# senders are looked up as an array (= ANY), as a parameter would be: a primary-key probe each,
# whatever the planner thinks of the fetch's row count. The
# counter and blacklist rows are locked, so that an operator's reset (DELETE /blacklist/{sender})
# waits for the batch instead of being overwritten by the batch's final counts. One statement, for
# the round trips' sake (see START_BATCH).
def with_ledger(fetch: str) -> str:
    return f"""
WITH batch AS MATERIALIZED ({fetch}),
counts AS (
    SELECT sender_number, message_count FROM count_sms
    WHERE sender_number = ANY(ARRAY(SELECT sender_number FROM batch))
    FOR UPDATE
), listed AS (
    SELECT sender_number FROM blacklist_sms
    WHERE sender_number = ANY(ARRAY(SELECT sender_number FROM batch))
    FOR UPDATE
)
SELECT b.*,
       CASE WHEN c.sender_number IS NOT NULL THEN coalesce(c.message_count, 0) END
           AS sender_count,
       l.sender_number IS NOT NULL AS sender_blacklisted
FROM batch b
LEFT JOIN counts c ON c.sender_number = b.sender_number
LEFT JOIN listed l ON l.sender_number = b.sender_number
ORDER BY b.uuid
"""  # noqa: S608 (composed of this module's constants only)


FETCH_BATCH_WITH_LEDGER: Final = with_ledger(FETCH_BATCH)
FETCH_SWEEP_WITH_LEDGER: Final = with_ledger(FETCH_SWEEP)

# The index's repairs (services/validator/index.py). A partition's catch-up, under the lock of
# that partition (so its rows cannot grow meanwhile), in bounded chunks.
FORWARDED_AFTER_SEQ: Final = """
SELECT seq, sender_number FROM forwarded_senders
WHERE partition_no = $1 AND seq > $2 AND seq <= $3
ORDER BY seq
LIMIT $4
"""
# A rebuild, in one REPEATABLE READ snapshot: where every partition stands, then every forwarded
# sender, streamed by COPY (text format, one sender a line). Rows of a partition up to its
# forwarded_seq are all committed in that snapshot (a partition's batches are serialised by its
# lease).
DATABASE_TOKEN: Final = "SELECT token::text FROM validator_identity"  # noqa: S105 (not a secret)
PARTITION_SEQS: Final = "SELECT partition_no, forwarded_seq FROM validator_partitions"
EVERY_FORWARDED_SENDER: Final = "SELECT sender_number FROM forwarded_senders"

# Leases (services/validator/partitions.py). A worker announces itself and renews what it holds;
# then counts the live workers for its fair share.
HEARTBEAT: Final = f"""
WITH me AS (
    INSERT INTO validator_workers AS w (worker_id, expires_at)
    VALUES ($1, clock_timestamp() + make_interval(secs => $2::float8))
    ON CONFLICT (worker_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING 1
), mine AS (
    -- Locked in partition order, as a batch locks them, so that the two never deadlock.
    SELECT partition_no FROM validator_partitions WHERE owner = $1
    ORDER BY partition_no FOR UPDATE
), renewed AS (
    UPDATE validator_partitions p
    SET lease_expires_at = clock_timestamp() + make_interval(secs => $2::float8)
    FROM mine WHERE p.partition_no = mine.partition_no
    RETURNING p.partition_no
)
SELECT w.workers, w.rank,
       (SELECT count(*) FROM validator_partitions) AS partitions,
       (SELECT coalesce(array_agg(partition_no ORDER BY partition_no), '{{}}') FROM renewed)
           AS held
FROM ({_MEMBERSHIP}) AS w
"""  # noqa: S608 (composed of this module's constants only)
# Free partitions, or partitions whose lease ran out, that no batch is judging now (SKIP LOCKED:
# a partition locked by a batch has a live owner).
CLAIM_PARTITIONS: Final = """
UPDATE validator_partitions p
SET owner = $1, lease_expires_at = clock_timestamp() + make_interval(secs => $2::float8)
FROM (SELECT partition_no FROM validator_partitions
      WHERE owner IS NULL OR lease_expires_at < clock_timestamp()
      ORDER BY partition_no
      LIMIT $3
      FOR UPDATE SKIP LOCKED) AS free
WHERE p.partition_no = free.partition_no
RETURNING p.partition_no
"""
RELEASE_PARTITIONS: Final = """
UPDATE validator_partitions SET owner = NULL, lease_expires_at = '-infinity'
WHERE owner = $1 AND partition_no = ANY($2::int[])
"""
# A worker with nothing to judge moves its partitions' checkpoints up to the horizon.
ADVANCE_CHECKPOINTS: Final = """
UPDATE validator_partitions p SET checkpoint = u.checkpoint
FROM unnest($2::int[], $3::uuid[]) AS u(partition_no, checkpoint)
WHERE p.partition_no = u.partition_no AND p.owner = $1 AND p.checkpoint < u.checkpoint
"""
RELEASE_ALL_PARTITIONS: Final = """
UPDATE validator_partitions SET owner = NULL, lease_expires_at = '-infinity' WHERE owner = $1
"""
FORGET_WORKER: Final = "DELETE FROM validator_workers WHERE worker_id = $1"
FORGET_EXPIRED_WORKERS: Final = """
DELETE FROM validator_workers WHERE expires_at < clock_timestamp() - interval '1 hour'
"""

# The published checkpoint (SPEC §3, §6.3): every SMS before the smallest partition checkpoint is
# judged. Only ever moved forward, and a value broken by hand is replaced.
PUBLISH_CHECKPOINT: Final = """
WITH low AS (SELECT checkpoint FROM validator_partitions ORDER BY checkpoint LIMIT 1)
UPDATE system_settings s SET setting_value = low.checkpoint::text, updated_at = now()
FROM low
WHERE s.setting_key = 'last_processed_uuid'
  AND CASE WHEN s.setting_value ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
           THEN s.setting_value::uuid < low.checkpoint
           ELSE true END
"""
# Each partition's lag and whether a live worker holds it, for the metrics.
PARTITION_STATES: Final = """
SELECT partition_no,
       extract(epoch FROM clock_timestamp() - uuid_v7_time(checkpoint)) AS lag_seconds,
       owner IS NOT NULL AND lease_expires_at > clock_timestamp() AS held
FROM validator_partitions
"""
LOWEST_CHECKPOINT: Final = "SELECT checkpoint FROM validator_partitions ORDER BY checkpoint LIMIT 1"

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
    """The one statement that writes a batch. Parameters, arrays of one row per element but
    for the batch id and the worker's id:

    $1 uuid[]  $2.. one int[] per check column (in `check_names` order), then overall_status,
    processing_started_at, processing_completed_at, failed_at_check, batch_id (one uuid for
    the whole batch), retry_count;
    then out_sms (uuid, sender, message), count_sms (sender, count),
    blacklist_sms (sender, count), the worker's id, forwarded_senders (sender, partition, seq,
    first uuid), and the worker's partitions (number, checkpoint, forwarded seq).

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
            # One batch id for every row (a scalar: unnest repeats it).
            f"array_fill({param(4, 'uuid')}, ARRAY[cardinality($1::uuid[])])",
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
    RETURNING 1
), first_forwarded AS (
    -- A sender's first forwarded SMS; the ledger knows from the index that it is the first.
    INSERT INTO forwarded_senders (sender_number, partition_no, seq, first_uuid)
    SELECT * FROM unnest({param(14, "text[]")}, {param(15, "int[]")}, {param(16, "bigint[]")},
                         {param(17, "uuid[]")})
    RETURNING 1
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
    -- The partitions' new checkpoints and seqs, only where this worker still holds the lease
    -- (it does: their rows are locked since the start of the batch).
    UPDATE validator_partitions p
    SET checkpoint = u.checkpoint, forwarded_seq = u.forwarded_seq
    FROM unnest({param(18, "int[]")}, {param(19, "uuid[]")}, {param(20, "bigint[]")})
        AS u(partition_no, checkpoint, forwarded_seq)
    WHERE p.partition_no = u.partition_no AND p.owner = {param(13, "text")}
    RETURNING 1
)
SELECT (SELECT count(*) FROM judged) AS judged,
       (SELECT count(*) FROM advanced) AS advanced
"""  # noqa: S608
