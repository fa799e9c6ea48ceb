-- 0013: time partitions of input_sms, sms_monitor and out_sms, so that retention drops whole days
-- instead of deleting rows (docs/architecture.md, "Data lifecycle"; docs/operations.md,
-- "Retention").
--
-- The three tables are partitioned by RANGE of uuid. A UUIDv7 starts with its Unix milliseconds
-- (0001), so a uuid range is a time range: the partition of UTC day D holds the keys from
-- uuid_v7_lower_bound(D) to uuid_v7_lower_bound(D + 1). sms_monitor and out_sms rows carry the
-- uuid of their input_sms row, so the same day's rows of the three tables share one range, are
-- made together and are dropped together. The primary keys stay as they are (uuid is the
-- partition key). These time partitions have nothing to do with the validator's partitions of
-- senders (0008): those split the work, these split the storage.
--
-- An existing database keeps its rows where they are: each table is renamed to <table>_legacy
-- and attached as the partition of every key below the first day partition. ATTACH would scan
-- the table to prove that its rows fit; a CHECK constraint that already says so lets it skip the
-- scan, and that constraint is validated beforehand in its own transaction (step 2), under a lock
-- that lets the receiver and the validator go on. Steps 1 (adding the constraint, NOT VALID) and
-- 3 (the switch) take exclusive locks, and neither reads the tables: their time does not depend
-- on the tables' size (measured in docs/benchmarks.md). Step 4 makes the day partitions.
--
-- Foreign keys: sms_monitor.uuid and out_sms.uuid referenced input_sms.uuid. They are dropped.
-- With them, dropping a day of input_sms would first have to prove that no sms_monitor or
-- out_sms row of the whole table references it (a scan under an exclusive lock), and they
-- checked nothing the engine does not already guarantee: only the validator writes those rows,
-- each for a uuid it has just read from input_sms, in the transaction that holds that SMS's
-- sender partition. Retention drops the same uuid range of all three tables in one transaction.

-- migrate:step
-- Step 1: bookkeeping, and the bound constraints of the legacy tables (NOT VALID: no scan).

-- One row per day partition (the three tables' partitions of one range are made and dropped
-- together) and one for the legacy partition. Dropped partitions keep their row, so that an
-- operator can see what retention removed and when.
--   examined_at, sms_count, unjudged_count, status_counts: the last check of a partition that
--   is past the retention: its input_sms rows, those without a final sms_monitor row (they keep
--   the partition), and its sms_monitor rows per overall_status (what /stats's counters lose
--   when it is dropped).
CREATE TABLE IF NOT EXISTS sms_time_partitions (
    partition_name TEXT PRIMARY KEY,         -- the tables' suffix: 'legacy' or 'p20250131'
    lower_uuid     UUID NOT NULL,
    upper_uuid     UUID NOT NULL,
    starts_at      TIMESTAMPTZ NOT NULL,      -- '-infinity' for the legacy partition
    ends_at        TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    examined_at    TIMESTAMPTZ,
    sms_count      BIGINT,
    unjudged_count BIGINT,
    status_counts  JSONB,
    archived_at    TIMESTAMPTZ,
    dropped_at     TIMESTAMPTZ,
    CHECK (lower_uuid < upper_uuid AND starts_at < ends_at)
);

-- The first key of UTC day `day`.
CREATE OR REPLACE FUNCTION sms_day_start_uuid(day DATE) RETURNS UUID
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT uuid_v7_lower_bound(day::TIMESTAMP AT TIME ZONE 'UTC')
$$;

-- The legacy partition holds every key below the start of the day after tomorrow (UTC): the
-- receiver goes on writing into the old table until the switch (step 3), so its bound must be
-- ahead of the clock, and far enough ahead that steps 2 and 3 run before it. A migrator stopped
-- after this step and resumed when less than 12 hours are left sets a later bound.
DO $$
DECLARE
    legacy_end TIMESTAMPTZ;
    table_name TEXT;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'public.input_sms'::regclass) = 'p' THEN
        RETURN;  -- switched already
    END IF;
    SET LOCAL lock_timeout = '10s';
    SELECT ends_at INTO legacy_end FROM sms_time_partitions WHERE partition_name = 'legacy';
    IF legacy_end IS NOT NULL AND legacy_end > now() + interval '12 hours' THEN
        RETURN;
    END IF;
    legacy_end := (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '2 days')
                  AT TIME ZONE 'UTC';
    INSERT INTO sms_time_partitions AS p
        (partition_name, lower_uuid, upper_uuid, starts_at, ends_at)
    VALUES ('legacy', '00000000-0000-0000-0000-000000000000', uuid_v7_lower_bound(legacy_end),
            '-infinity', legacy_end)
    ON CONFLICT (partition_name) DO UPDATE
        SET upper_uuid = EXCLUDED.upper_uuid, ends_at = EXCLUDED.ends_at;
    FOREACH table_name IN ARRAY ARRAY['input_sms', 'sms_monitor', 'out_sms'] LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I',
                       table_name, table_name || '_legacy_bound');
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (uuid < %L::uuid) NOT VALID',
                       table_name, table_name || '_legacy_bound',
                       uuid_v7_lower_bound(legacy_end));
    END LOOP;
END
$$;

-- The upkeep's functions and the receiver's keyed insert work on the tables before and after
-- the switch, so they are made here, before it.

-- Make the day partition of `day` for the three tables (the caller holds the lifecycle lock).
-- Rows that reached the default partition while that day had none (upkeep stopped for days)
-- are moved into it, so that the default partition stays empty in the normal course and its
-- scan by ATTACH costs nothing. Runs as the owner; EXECUTE is revoked from everyone.
CREATE OR REPLACE FUNCTION sms_time_partition_create(day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    suffix      CONSTANT TEXT := 'p' || to_char(day, 'YYYYMMDD');
    first_key   CONSTANT UUID := sms_day_start_uuid(day);
    next_key    CONSTANT UUID := sms_day_start_uuid(day + 1);
    parent      TEXT;
    part        TEXT;
BEGIN
    IF EXISTS (SELECT FROM sms_time_partitions WHERE partition_name = suffix) THEN
        RETURN false;
    END IF;
    FOREACH parent IN ARRAY ARRAY['input_sms', 'sms_monitor', 'out_sms'] LOOP
        part := parent || '_' || suffix;
        -- Made apart and attached, rather than CREATE TABLE ... PARTITION OF, which would take
        -- an ACCESS EXCLUSIVE lock on the parent: ATTACH takes SHARE UPDATE EXCLUSIVE.
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
        EXECUTE format(
            'WITH moved AS (DELETE FROM %I WHERE uuid >= $1 AND uuid < $2 RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved', parent || '_default', part)
        USING first_key, next_key;
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, part, first_key, next_key);
        IF parent = 'input_sms' THEN
            EXECUTE format('CREATE UNIQUE INDEX %I ON %I (source, client_event_id) '
                           'WHERE client_event_id IS NOT NULL', part || '_delivery', part);
        END IF;
    END LOOP;
    INSERT INTO sms_time_partitions (partition_name, lower_uuid, upper_uuid, starts_at, ends_at)
    VALUES (suffix, first_key, next_key,
            day::TIMESTAMP AT TIME ZONE 'UTC', (day + 1)::TIMESTAMP AT TIME ZONE 'UTC');
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION sms_time_partition_create(DATE) FROM PUBLIC;

-- The gateway's own upkeep (the validator, services/validator/lifecycle.py) calls the three
-- functions below. Each runs as the owner, the only role that may change the schema, and takes
-- the lifecycle lock (transaction-scoped, so it works through pgbouncer) without waiting: of
-- several validator processes one does the work and the others find it done. A lock wait on a
-- table gives up after `lock_timeout` instead of queueing the receiver behind it.

-- Make the next missing day partition, if the newest one ends less than `days_ahead` days after
-- today (UTC). One day per call, so that each is its own transaction: ATTACH holds the default
-- partition's ACCESS EXCLUSIVE lock until commit, and a query that reads the default partition
-- (one not bounded by uuid) waits for it. Returns 1 if a day was made, 0 if none is missing,
-- NULL when another process holds the lifecycle lock.
CREATE OR REPLACE FUNCTION sms_time_partitions_ensure(days_ahead INTEGER) RETURNS INTEGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    day DATE;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 1 OR days_ahead > 60 THEN
        RAISE EXCEPTION 'days_ahead must be 1..60, not %', days_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_try_advisory_xact_lock(5459283, 1000) THEN
        RETURN NULL;
    END IF;
    SELECT coalesce((max(ends_at) AT TIME ZONE 'UTC')::DATE, (now() AT TIME ZONE 'UTC')::DATE)
    INTO day FROM sms_time_partitions;
    IF day > (now() AT TIME ZONE 'UTC')::DATE + days_ahead THEN
        RETURN 0;
    END IF;
    PERFORM sms_time_partition_create(day);
    RETURN 1;
END
$$;

-- Check a partition past the retention: count its SMS, those without a final result (valid,
-- invalid or skipped: pending, processing and error keep a partition), and its results per
-- status. A scan of one day of each table, under ACCESS SHARE only. Once every SMS of a
-- partition that is entirely in the past is final it stays so: no key of a past day can be
-- made any more (keys come from the database clock and no service role may set one, 0009), and
-- only an error is ever requeued. Returns the number of unjudged SMS (NULL: lock held).
CREATE OR REPLACE FUNCTION sms_time_partition_examine(target TEXT) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    total    BIGINT;
    unjudged BIGINT;
    statuses JSONB;
BEGIN
    IF NOT pg_try_advisory_xact_lock(5459283, 1000) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT FROM sms_time_partitions
                   WHERE partition_name = target AND dropped_at IS NULL) THEN
        RAISE EXCEPTION 'no time partition %', target USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', 'input_sms_' || target) INTO total;
    EXECUTE format(
        'SELECT count(*) FROM %I i WHERE NOT EXISTS (SELECT FROM %I m WHERE m.uuid = i.uuid '
        'AND m.overall_status IN (''valid'', ''invalid'', ''skipped''))',
        'input_sms_' || target, 'sms_monitor_' || target) INTO unjudged;
    EXECUTE format(
        'SELECT coalesce(jsonb_object_agg(status, n), ''{}'') FROM (SELECT coalesce('
        'overall_status, ''unset'') AS status, count(*) AS n FROM %I GROUP BY 1) s',
        'sms_monitor_' || target) INTO statuses;
    UPDATE sms_time_partitions
    SET examined_at = now(), sms_count = total, unjudged_count = unjudged,
        status_counts = statuses
    WHERE partition_name = target;
    RETURN unjudged;
END
$$;

-- Drop a partition of the three tables if it is entirely older than `retention_days` and its
-- last examination found every SMS judged. The per-sender state the checks read (count_sms,
-- blacklist_sms, forwarded_senders) is not partitioned and is not touched. The per-status
-- counters of /stats (0007) lose the dropped results. The day's three tables are DETACHED here
-- (catalog changes only, under ACCESS EXCLUSIVE on each parent for that instant) and removed
-- from disk by sms_time_partition_purge in a later transaction, which locks only the detached
-- tables: the exclusive lock on the parents does not last while files are unlinked.
-- `lock_wait_ms` bounds how long the receiver and the validator may queue behind a waiting
-- request for that lock (lock_not_available: try again later). `archived` says that the caller
-- wrote the partition to the archive directory first. Returns false when the partition may not
-- be dropped (or the lifecycle lock is held).
CREATE OR REPLACE FUNCTION sms_time_partition_drop(
    target TEXT, retention_days INTEGER, lock_wait_ms INTEGER, archived BOOLEAN
) RETURNS BOOLEAN
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    doomed sms_time_partitions%ROWTYPE;
    parent TEXT;
BEGIN
    IF retention_days IS NULL OR retention_days < 1 THEN
        RAISE EXCEPTION 'retention_days must be at least 1, not %', retention_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lock_wait_ms IS NULL OR lock_wait_ms < 1 OR lock_wait_ms > 60000 THEN
        RAISE EXCEPTION 'lock_wait_ms must be 1..60000, not %', lock_wait_ms
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_try_advisory_xact_lock(5459283, 1000) THEN
        RETURN false;
    END IF;
    SELECT * INTO doomed FROM sms_time_partitions WHERE partition_name = target FOR UPDATE;
    IF NOT FOUND OR doomed.dropped_at IS NOT NULL
       OR doomed.ends_at > now() - make_interval(days => retention_days)
       OR doomed.examined_at IS NULL OR doomed.unjudged_count <> 0 THEN
        RETURN false;
    END IF;
    PERFORM set_config('lock_timeout', lock_wait_ms || 'ms', true);
    -- In the order every other transaction locks the three tables.
    FOREACH parent IN ARRAY ARRAY['input_sms', 'sms_monitor', 'out_sms'] LOOP
        EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, parent || '_' || target);
    END LOOP;
    -- No writer of sms_monitor can be running now (its parent is locked), so no shard of the
    -- counters is claimed by anyone else.
    INSERT INTO sms_status_counts AS c (overall_status, shard, sms_count)
    SELECT status, 0, -(n::BIGINT) FROM jsonb_each_text(doomed.status_counts) AS s(status, n)
    ORDER BY status
    ON CONFLICT (overall_status, shard) DO UPDATE SET sms_count = c.sms_count + EXCLUDED.sms_count;
    UPDATE sms_time_partitions
    SET dropped_at = now(), archived_at = CASE WHEN archived THEN now() END
    WHERE partition_name = target;
    RETURN true;
END
$$;

-- Remove from disk the tables of a dropped (detached) partition; how many there were. Nothing
-- reads them any more, so this waits for no one.
CREATE OR REPLACE FUNCTION sms_time_partition_purge(target TEXT) RETURNS INTEGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    parent  TEXT;
    removed INTEGER := 0;
BEGIN
    IF NOT EXISTS (SELECT FROM sms_time_partitions
                   WHERE partition_name = target AND dropped_at IS NOT NULL) THEN
        RAISE EXCEPTION 'time partition % is not dropped', target
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    FOREACH parent IN ARRAY ARRAY['input_sms', 'sms_monitor', 'out_sms'] LOOP
        -- Only a table that is no longer a partition (detached by sms_time_partition_drop).
        IF EXISTS (SELECT FROM pg_class
                   WHERE relname = parent || '_' || target
                     AND relnamespace = 'public'::regnamespace AND NOT relispartition) THEN
            EXECUTE format('DROP TABLE %I', parent || '_' || target);
            removed := removed + 1;
        END IF;
    END LOOP;
    RETURN removed;
END
$$;

REVOKE ALL ON FUNCTION sms_time_partitions_ensure(INTEGER), sms_time_partition_examine(TEXT),
    sms_time_partition_drop(TEXT, INTEGER, INTEGER, BOOLEAN), sms_time_partition_purge(TEXT)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_time_partitions_ensure(INTEGER), sms_time_partition_examine(TEXT),
    sms_time_partition_drop(TEXT, INTEGER, INTEGER, BOOLEAN), sms_time_partition_purge(TEXT)
    TO sms_validator;
GRANT SELECT ON sms_time_partitions TO sms_validator, sms_admin;

-- The receiver's keyed insert (0009), for a partitioned input_sms: ON CONFLICT can no longer
-- name the delivery key (it is unique per partition only), so a delivery whose key is in any
-- partition is skipped explicitly, and ON CONFLICT DO NOTHING (every unique index of the row's
-- partition) settles two deliveries of one key racing into the same partition. Two racing into
-- different partitions would need both to run across a UTC midnight: within two minutes of one
-- (receiver transactions are bounded by statement_timeout and
-- idle_in_transaction_session_timeout, sms_gateway/bootstrap.py), keyed inserts take one
-- transaction-scoped advisory lock and so run one at a time.
CREATE OR REPLACE FUNCTION store_input_sms(
    sender_numbers      TEXT[],
    sms_messages        TEXT[],
    received_timestamps TIMESTAMPTZ[],
    sources             TEXT[],
    client_event_ids    TEXT[]
) RETURNS TABLE (item_position BIGINT, sms_uuid UUID)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    second_of_day CONSTANT DOUBLE PRECISION :=
        extract(epoch FROM clock_timestamp())::NUMERIC % 86400;
BEGIN
    IF (second_of_day < 120 OR second_of_day > 86400 - 120)
       AND cardinality(array_remove(client_event_ids, NULL)) > 0 THEN
        PERFORM pg_advisory_xact_lock(5459283, 1001);
    END IF;
    RETURN QUERY
    WITH incoming AS MATERIALIZED (
        SELECT uuid_generate_v7() AS uuid, item.*
        FROM unnest(sender_numbers, sms_messages, received_timestamps, sources, client_event_ids)
             WITH ORDINALITY AS item (sender_number, sms_message, received_timestamp,
                                      source, client_event_id, position)
    ),
    stored AS (
        INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp,
                               source, client_event_id)
        SELECT n.uuid, n.sender_number, n.sms_message, n.received_timestamp, n.source,
               n.client_event_id
        FROM incoming n
        WHERE n.client_event_id IS NULL
           OR NOT EXISTS (SELECT FROM input_sms i
                          WHERE i.source = n.source AND i.client_event_id = n.client_event_id)
        ORDER BY n.position
        ON CONFLICT DO NOTHING
        RETURNING input_sms.uuid
    )
    SELECT incoming.position, stored.uuid
    FROM incoming LEFT JOIN stored USING (uuid)
    ORDER BY incoming.position;
END
$$;
REVOKE ALL ON FUNCTION store_input_sms(TEXT[], TEXT[], TIMESTAMPTZ[], TEXT[], TEXT[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION store_input_sms(TEXT[], TEXT[], TIMESTAMPTZ[], TEXT[], TEXT[])
    TO sms_receiver;

-- How long judged SMS are kept (sms_gateway/settings.py); 0 keeps everything.
INSERT INTO system_settings (setting_key, setting_value) VALUES ('retention_days', '30')
ON CONFLICT (setting_key) DO NOTHING;

-- migrate:step
-- Step 2: validate the bound constraints: a scan of each table under SHARE UPDATE EXCLUSIVE,
-- which the receiver's inserts and the validator's reads and writes do not wait for.
DO $$
DECLARE
    table_name TEXT;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'public.input_sms'::regclass) = 'p' THEN
        RETURN;
    END IF;
    FOREACH table_name IN ARRAY ARRAY['input_sms', 'sms_monitor', 'out_sms'] LOOP
        EXECUTE format('ALTER TABLE %I VALIDATE CONSTRAINT %I',
                       table_name, table_name || '_legacy_bound');
    END LOOP;
END
$$;

-- migrate:step
-- Step 3: the switch, under exclusive locks of the three tables; it reads no table (but whether
-- the legacy tables hold a row at all).

-- The switch: rename each table to <table>_legacy (and its indexes, whose names the new parent
-- takes), make the partitioned parent with the same columns, defaults and indexes, and attach
-- the legacy table (no scan: its validated bound constraint implies the partition bound, and
-- its indexes match the parent's, so none is built). Then a default partition, the statement
-- triggers of 0007 on the new sms_monitor, and the grants of 0004 and 0009 on the new parents.
DO $$
DECLARE
    legacy_end  UUID;
    renamed     RECORD;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'public.input_sms'::regclass) = 'p' THEN
        RETURN;
    END IF;
    SET LOCAL lock_timeout = '10s';
    SELECT upper_uuid INTO STRICT legacy_end
    FROM sms_time_partitions WHERE partition_name = 'legacy';

    ALTER TABLE sms_monitor DROP CONSTRAINT IF EXISTS sms_monitor_uuid_fkey;
    ALTER TABLE out_sms DROP CONSTRAINT IF EXISTS out_sms_uuid_fkey;
    DROP TRIGGER IF EXISTS sms_status_counts_insert ON sms_monitor;
    DROP TRIGGER IF EXISTS sms_status_counts_update ON sms_monitor;
    DROP TRIGGER IF EXISTS sms_status_counts_delete ON sms_monitor;
    DROP TRIGGER IF EXISTS sms_status_counts_truncate ON sms_monitor;

    ALTER TABLE input_sms RENAME TO input_sms_legacy;
    ALTER TABLE sms_monitor RENAME TO sms_monitor_legacy;
    ALTER TABLE out_sms RENAME TO out_sms_legacy;
    -- Reached through the new parents from now on, which get the grants below.
    REVOKE ALL ON input_sms_legacy, sms_monitor_legacy, out_sms_legacy
        FROM sms_receiver, sms_validator, sms_admin;
    FOR renamed IN
        SELECT i.relname AS index_name, t.relname AS table_name
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relname IN ('input_sms_legacy', 'sms_monitor_legacy', 'out_sms_legacy')
          AND t.relnamespace = 'public'::regnamespace
    LOOP
        IF renamed.index_name = 'uq_input_sms_delivery' THEN
            EXECUTE format('ALTER INDEX %I RENAME TO %I', renamed.index_name,
                           'input_sms_legacy_delivery');
        ELSIF renamed.index_name NOT LIKE '%legacy%' THEN
            EXECUTE format('ALTER INDEX %I RENAME TO %I', renamed.index_name,
                           renamed.index_name || '_legacy');
        END IF;
    END LOOP;

    CREATE TABLE input_sms (LIKE input_sms_legacy INCLUDING DEFAULTS) PARTITION BY RANGE (uuid);
    CREATE TABLE sms_monitor (LIKE sms_monitor_legacy INCLUDING DEFAULTS)
        PARTITION BY RANGE (uuid);
    CREATE TABLE out_sms (LIKE out_sms_legacy INCLUDING DEFAULTS) PARTITION BY RANGE (uuid);

    -- The indexes of 0001 and 0008, by their names. The delivery key (source, client_event_id)
    -- cannot be unique across a partitioned table (a unique index must contain the partition
    -- key): each input_sms partition has its own unique index, and store_input_sms below looks
    -- in every partition.
    ALTER TABLE input_sms ADD CONSTRAINT input_sms_pkey PRIMARY KEY (uuid);
    CREATE INDEX idx_received_timestamp ON input_sms (received_timestamp);
    CREATE INDEX idx_created_at ON input_sms (created_at);
    ALTER TABLE sms_monitor ADD CONSTRAINT sms_monitor_pkey PRIMARY KEY (uuid);
    CREATE INDEX idx_overall_status ON sms_monitor (overall_status);
    CREATE INDEX idx_batch_id ON sms_monitor (batch_id);
    CREATE INDEX idx_processing_started ON sms_monitor (processing_started_at);
    ALTER TABLE out_sms ADD CONSTRAINT out_sms_pkey PRIMARY KEY (uuid);
    CREATE INDEX idx_sender_number ON out_sms (sender_number);
    CREATE INDEX idx_forwarded_timestamp ON out_sms (forwarded_timestamp);

    EXECUTE format('ALTER TABLE input_sms ATTACH PARTITION input_sms_legacy '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', legacy_end);
    EXECUTE format('ALTER TABLE sms_monitor ATTACH PARTITION sms_monitor_legacy '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', legacy_end);
    EXECUTE format('ALTER TABLE out_sms ATTACH PARTITION out_sms_legacy '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', legacy_end);
    -- The partition bound says it now.
    ALTER TABLE input_sms_legacy DROP CONSTRAINT input_sms_legacy_bound;
    ALTER TABLE sms_monitor_legacy DROP CONSTRAINT sms_monitor_legacy_bound;
    ALTER TABLE out_sms_legacy DROP CONSTRAINT out_sms_legacy_bound;

    -- A new database (or one that never stored an SMS) has no rows to keep: its legacy
    -- partition goes, and the day partitions start today, so that partitions of earlier days
    -- can be made too (sms_time_partition_create, as the owner: a migration of data, the
    -- month-long benchmark).
    IF NOT EXISTS (SELECT FROM input_sms_legacy) AND NOT EXISTS (SELECT FROM sms_monitor_legacy)
       AND NOT EXISTS (SELECT FROM out_sms_legacy) THEN
        DROP TABLE input_sms_legacy, sms_monitor_legacy, out_sms_legacy;
        DELETE FROM sms_time_partitions WHERE partition_name = 'legacy';
    END IF;

    CREATE TABLE input_sms_default PARTITION OF input_sms DEFAULT;
    CREATE UNIQUE INDEX input_sms_default_delivery ON input_sms_default (source, client_event_id)
        WHERE client_event_id IS NOT NULL;
    CREATE TABLE sms_monitor_default PARTITION OF sms_monitor DEFAULT;
    CREATE TABLE out_sms_default PARTITION OF out_sms DEFAULT;

    CREATE TRIGGER sms_status_counts_insert
        AFTER INSERT ON sms_monitor REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_apply();
    CREATE TRIGGER sms_status_counts_update
        AFTER UPDATE ON sms_monitor REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_apply();
    CREATE TRIGGER sms_status_counts_delete
        AFTER DELETE ON sms_monitor REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_apply();
    CREATE TRIGGER sms_status_counts_truncate
        AFTER TRUNCATE ON sms_monitor
        FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_clear();

    -- 0004 and 0009, on the new parents (a partition reached through its parent needs no grant
    -- of its own).
    GRANT INSERT (sender_number, sms_message, received_timestamp, source, client_event_id)
        ON input_sms TO sms_receiver;
    GRANT SELECT (uuid, source, client_event_id) ON input_sms TO sms_receiver;
    GRANT SELECT ON input_sms TO sms_validator;
    GRANT SELECT, INSERT, UPDATE ON sms_monitor TO sms_validator;
    GRANT SELECT, INSERT ON out_sms TO sms_validator;
    GRANT SELECT ON input_sms, sms_monitor, out_sms TO sms_admin;
    GRANT UPDATE (overall_status, failed_at_check) ON sms_monitor TO sms_admin;
    PERFORM grant_check_result_columns();
END
$$;

-- migrate:step
-- Step 4: the day partitions, in a transaction of their own (the receiver goes on writing into
-- the legacy partition meanwhile: its bound is ahead of the clock).

-- The days from the legacy bound (or today) to a week ahead, in one transaction here; the
-- validator keeps them a week ahead, a day per transaction.
DO $$
BEGIN
    WHILE sms_time_partitions_ensure(7) = 1 LOOP
    END LOOP;
END
$$;

INSERT INTO schema_migrations (version) VALUES ('0013_time_partitions') ON CONFLICT DO NOTHING;
