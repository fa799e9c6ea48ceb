"""Every SQL statement of the admin service, in one place. Parameters are always bound.

Each runs inside `sms_gateway.db.transaction(...)` (pgbouncer transaction mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# ------------------------------------------------------------------ settings

SETTINGS_ALL: Final = """
SELECT setting_key, setting_value, updated_at FROM system_settings
"""

SETTING_ONE: Final = """
SELECT setting_key, setting_value, updated_at FROM system_settings WHERE setting_key = $1
"""

# The row lock makes concurrent updates of one key queue up, so each audit row's old_value is
# the value its own update replaced.
SETTING_LOCK: Final = """
SELECT setting_value FROM system_settings WHERE setting_key = $1 FOR UPDATE
"""

# A key missing from the table (it keeps its default) gets its row on its first change.
SETTING_INSERT: Final = """
INSERT INTO system_settings (setting_key, setting_value, updated_at) VALUES ($1, $2, now())
ON CONFLICT (setting_key) DO NOTHING
RETURNING setting_key, setting_value, updated_at
"""

SETTING_UPDATE: Final = """
UPDATE system_settings SET setting_value = $2, updated_at = now() WHERE setting_key = $1
RETURNING setting_key, setting_value, updated_at
"""

AUDIT_INSERT: Final = """
INSERT INTO settings_audit (setting_key, old_value, new_value, changed_by) VALUES ($1, $2, $3, $4)
"""

# Newest first, keyset-paged by id ($3 = the last id of the previous page, or NULL).
AUDIT_PAGE: Final = """
SELECT id, setting_key, old_value, new_value, changed_by, changed_at
FROM settings_audit
WHERE ($1::varchar IS NULL OR setting_key = $1)
  AND ($3::bigint IS NULL OR id < $3)
ORDER BY id DESC
LIMIT $2
"""

# ------------------------------------------------------------------ one SMS

# The per-check parts of these statements come from the check registry the app was built with
# (`checks.result_columns`: registered names only, never input); every value is bound.


def sms_detail(result_columns: Sequence[str]) -> str:
    """One SMS with every check result (a column per registered check), status and out_sms."""
    results = "".join(f"m.{column}, " for column in result_columns)
    return f"""
SELECT i.uuid, i.sender_number, i.sms_message, i.received_timestamp, i.created_at, i.source,
       i.client_event_id,
       m.uuid IS NOT NULL AS judged,
       {results}
       m.overall_status, m.failed_at_check, m.batch_id, m.retry_count,
       m.processing_started_at, m.processing_completed_at,
       o.uuid IS NOT NULL AS forwarded,
       o.sender_number AS out_sender_number, o.sms_message AS out_sms_message,
       o.validation_status AS out_validation_status,
       o.forwarded_timestamp AS out_forwarded_timestamp, o.created_at AS out_created_at
FROM input_sms i
LEFT JOIN sms_monitor m ON m.uuid = i.uuid
LEFT JOIN out_sms o ON o.uuid = i.uuid
WHERE i.uuid = $1
"""  # noqa: S608 - registered column names only


def requeue(result_columns: Sequence[str]) -> str:
    """SPEC §7: one statement, only from 'error'; every check result back to 0, retry_count
    kept. The validator's sweeper judges the SMS again."""
    resets = "".join(f"{column} = 0, " for column in result_columns)
    return f"""
UPDATE sms_monitor
SET overall_status = 'pending', {resets}failed_at_check = NULL
WHERE uuid = $1 AND overall_status = 'error'
RETURNING uuid, overall_status, retry_count
"""  # noqa: S608 - registered column names only


@dataclass(frozen=True, slots=True)
class SmsStatements:
    """The statements about one SMS, for one registry of checks."""

    detail: str
    requeue: str

    @classmethod
    def for_columns(cls, result_columns: Sequence[str]) -> SmsStatements:
        return cls(sms_detail(result_columns), requeue(result_columns))


# Why a requeue was refused: the SMS does not exist, or its status (NULL = not judged yet).
SMS_STATUS: Final = """
SELECT i.uuid, m.overall_status, m.uuid IS NOT NULL AS judged
FROM input_sms i LEFT JOIN sms_monitor m ON m.uuid = i.uuid
WHERE i.uuid = $1
"""

# ------------------------------------------------------------------ blacklist

# Keyset paging in byte order over idx_blacklist_sender_bytes; $1 is a LIKE pattern (the escaped
# prefix followed by %), $2 the last sender of the previous page.
BLACKLIST_PAGE: Final = """
SELECT b.sender_number, b.blacklisted_at, b.reason, b.message_count,
       c.message_count AS current_count
FROM blacklist_sms b
LEFT JOIN count_sms c ON c.sender_number = b.sender_number
WHERE ($1::text IS NULL OR (b.sender_number COLLATE "C") LIKE $1)
  AND ($2::text IS NULL OR (b.sender_number COLLATE "C") > $2)
ORDER BY (b.sender_number COLLATE "C")
LIMIT $3
"""

BLACKLIST_REMOVE: Final = """
DELETE FROM blacklist_sms WHERE sender_number = $1
RETURNING sender_number, blacklisted_at, reason, message_count
"""

# The sender starts again as a new sender: the blacklist check's upsert recreates the row at 1.
COUNT_REMOVE: Final = """
DELETE FROM count_sms WHERE sender_number = $1 RETURNING message_count
"""

# ------------------------------------------------------------------ stats

CHECKPOINT: Final = """
SELECT setting_value FROM system_settings WHERE setting_key = 'last_processed_uuid'
"""

# Everything else of GET /stats in one statement (one round trip, one snapshot); every part is
# an index range scan or a read of the counters, whatever the size of the tables:
# - by_status: the counters kept exact by the triggers of 0007 (a few dozen rows);
# - after_checkpoint: rows after the checkpoint ($1), counted up to $2 + 1 along the primary key
#   (an index-only range scan; the cap keeps a huge backlog from making /stats slow, and the
#   answer then says "at least");
# - oldest_after_checkpoint: UUIDv7 order is arrival order, so the first row after the checkpoint
#   is the oldest unprocessed one;
# - oldest_pending: requeued SMS wait too; they are few and idx_overall_status finds them;
# - processed/received_last_minute: range scans of idx_processing_started and idx_created_at.
STATS: Final = """
SELECT now() AS at,
       (SELECT coalesce(jsonb_object_agg(overall_status, sms_count), '{}'::jsonb)
        FROM (SELECT overall_status, sum(sms_count) AS sms_count
              FROM sms_status_counts GROUP BY overall_status
              HAVING sum(sms_count) <> 0) AS counted) AS by_status,
       (SELECT count(*)
        FROM (SELECT 1 FROM input_sms WHERE uuid > $1 LIMIT $2 + 1) AS waiting)
           AS after_checkpoint,
       (SELECT created_at FROM input_sms WHERE uuid > $1 ORDER BY uuid LIMIT 1)
           AS oldest_after_checkpoint,
       (SELECT min(i.created_at)
        FROM sms_monitor m JOIN input_sms i ON i.uuid = m.uuid
        WHERE m.overall_status = 'pending') AS oldest_pending,
       (SELECT count(*) FROM sms_monitor
        WHERE processing_started_at >= now() - make_interval(secs => $3)
          AND processing_completed_at IS NOT NULL) AS processed_in_window,
       (SELECT count(*) FROM input_sms
        WHERE created_at >= now() - make_interval(secs => $3)
          -- created_at is the inserting transaction's start, never after the key's instant:
          -- this bound prunes the time partitions to the last one or two.
          AND uuid >= uuid_v7_lower_bound(now() - make_interval(secs => $3))) AS received_in_window
"""

# The storage of GET /stats (db/init/0013): each time-partitioned table's size over all its
# partitions, and the partitions not dropped (a few dozen rows), oldest first, with the last
# drop. pg_partition_tree and the size functions read the catalog and the files' sizes, never a
# row.
STORAGE: Final = """
SELECT (SELECT coalesce(jsonb_object_agg(t.name, t.bytes), '{}'::jsonb)
        FROM (SELECT parent AS name,
                     (SELECT sum(pg_total_relation_size(relid))::bigint
                      FROM pg_partition_tree(parent::regclass)) AS bytes
              FROM unnest(ARRAY['input_sms', 'sms_monitor', 'out_sms']) AS parent) AS t)
           AS table_bytes,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'partition', partition_name, 'starts_at', starts_at, 'ends_at', ends_at,
                   'examined_at', examined_at, 'unjudged', unjudged_count)
                   ORDER BY ends_at), '[]'::jsonb)
        FROM sms_time_partitions WHERE dropped_at IS NULL) AS partitions,
       (SELECT jsonb_build_object('partition', partition_name, 'dropped_at', dropped_at,
                                  'archived', archived_at IS NOT NULL)
        FROM sms_time_partitions WHERE dropped_at IS NOT NULL
        ORDER BY dropped_at DESC LIMIT 1) AS last_drop
"""
