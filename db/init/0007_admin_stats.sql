-- 0007: what the admin service needs to answer quickly at ten million SMS (SPEC §7,
-- docs/architecture.md, "Admin").

-- Counts of sms_monitor rows per overall_status, kept exact by statement-level triggers, so that
-- GET /stats reads a few dozen rows instead of grouping the whole table. A single row per status
-- would be a hot row: every writer updates it and holds its lock until commit, which serialises
-- them, and two transactions that move statuses in opposite orders deadlock on it. The counts
-- are therefore split into 16 shards, and a transaction adds only to a shard that no concurrent
-- transaction writes (see sms_status_counts_apply), so writers never wait for each other here.
-- The sum over the shards is the count: additions commute and each is applied under the row's
-- lock, so the sum is exact whatever the interleaving, and a rolled-back transaction leaves
-- nothing.
CREATE TABLE IF NOT EXISTS sms_status_counts (
    overall_status VARCHAR(20) NOT NULL,  -- 'unset' stands for a NULL overall_status
    shard          SMALLINT NOT NULL,
    sms_count      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (overall_status, shard)
);

-- Apply one statement's changes: +1 per new row version, -1 per old one, per status, to a shard
-- this transaction holds alone. It claims the shard with a transaction-scoped advisory lock
-- (class 0x534D53, "SMS"; fine through pgbouncer's transaction mode), trying its own process's
-- shard first, then the next ones, without ever waiting: a later statement of the same
-- transaction finds its shard again (the lock is re-entrant). Only with more than 16 writers at
-- once does a statement fall back to its process's shard unclaimed, and then waits on the rows
-- like any writer. SECURITY DEFINER: the service roles write sms_monitor, not the counters.
CREATE OR REPLACE FUNCTION sms_status_counts_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first_choice CONSTANT INTEGER := pg_backend_pid() % 16;
    this_shard SMALLINT := first_choice;
BEGIN
    FOR step IN 0..15 LOOP
        IF pg_try_advisory_xact_lock(5459283, (first_choice + step) % 16) THEN
            this_shard := (first_choice + step) % 16;
            EXIT;
        END IF;
    END LOOP;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO sms_status_counts AS c (overall_status, shard, sms_count)
        SELECT coalesce(overall_status, 'unset'), this_shard, count(*)
        FROM new_rows GROUP BY 1 ORDER BY 1
        ON CONFLICT (overall_status, shard) DO UPDATE SET sms_count = c.sms_count + excluded.sms_count;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO sms_status_counts AS c (overall_status, shard, sms_count)
        SELECT coalesce(overall_status, 'unset'), this_shard, -count(*)
        FROM old_rows GROUP BY 1 ORDER BY 1
        ON CONFLICT (overall_status, shard) DO UPDATE SET sms_count = c.sms_count + excluded.sms_count;
    ELSE  -- UPDATE: only the statuses that changed move
        INSERT INTO sms_status_counts AS c (overall_status, shard, sms_count)
        SELECT status, this_shard, sum(delta)
        FROM (
            SELECT coalesce(overall_status, 'unset') AS status, 1 AS delta FROM new_rows
            UNION ALL
            SELECT coalesce(overall_status, 'unset'), -1 FROM old_rows
        ) AS moves
        GROUP BY status HAVING sum(delta) <> 0 ORDER BY status
        ON CONFLICT (overall_status, shard) DO UPDATE SET sms_count = c.sms_count + excluded.sms_count;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION sms_status_counts_clear() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM sms_status_counts;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION sms_status_counts_apply(), sms_status_counts_clear() FROM PUBLIC;

-- A trigger with transition tables serves one event; an INSERT ... ON CONFLICT DO UPDATE fires
-- the insert trigger for the inserted rows and the update trigger for the updated ones.
CREATE OR REPLACE TRIGGER sms_status_counts_insert
    AFTER INSERT ON sms_monitor REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_apply();
CREATE OR REPLACE TRIGGER sms_status_counts_update
    AFTER UPDATE ON sms_monitor REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_apply();
CREATE OR REPLACE TRIGGER sms_status_counts_delete
    AFTER DELETE ON sms_monitor REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_apply();
CREATE OR REPLACE TRIGGER sms_status_counts_truncate
    AFTER TRUNCATE ON sms_monitor
    FOR EACH STATEMENT EXECUTE FUNCTION sms_status_counts_clear();

-- (Re)count from the table itself while no one writes it: the first run fills the counters for
-- existing rows, a second run finds the same numbers. The lock waits for writers in flight.
-- One DO block, so that it is one transaction also when psql runs the file statement by statement.
DO $$
BEGIN
    LOCK TABLE sms_monitor IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM sms_status_counts;
    INSERT INTO sms_status_counts (overall_status, shard, sms_count)
    SELECT coalesce(overall_status, 'unset'), 0, count(*) FROM sms_monitor GROUP BY 1;
END
$$;

GRANT SELECT ON sms_status_counts TO sms_admin;

-- GET /blacklist pages by sender in byte order and filters by prefix. The database collation
-- (e.g. C.UTF-8) is not "C", so the primary key cannot serve `LIKE 'prefix%'`; this index can.
CREATE INDEX IF NOT EXISTS idx_blacklist_sender_bytes ON blacklist_sms ((sender_number COLLATE "C"));

-- GET /settings/audit?key=...: one key's history, newest first.
CREATE INDEX IF NOT EXISTS idx_settings_audit_key_id ON settings_audit (setting_key, id);

INSERT INTO schema_migrations (version) VALUES ('0007_admin_stats') ON CONFLICT DO NOTHING;
