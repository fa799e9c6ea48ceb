-- 0009: least privilege, measured against the catalog (SPEC §2). Runs as the schema owner, which
-- has no CREATEROLE: what is cluster-wide (role attributes and settings, pg_read_all_stats, the
-- cluster's postgres database closed to the service roles) is sms-bootstrap's
-- (sms_gateway/bootstrap.py). tests/foundation/test_roles.py runs each refused statement as
-- each role.

-- The receiver inserts the content of an SMS, never its key or arrival time: the database
-- assigns uuid and created_at. The engine's checkpoint rests on that: a row inserted with a
-- chosen uuid below the checkpoint would never be judged, and /stats would show no backlog.
REVOKE INSERT ON input_sms FROM sms_receiver;
GRANT INSERT (sender_number, sms_message, received_timestamp, source, client_event_id)
    ON input_sms TO sms_receiver;

-- The receiver's group insert (services/receiver/queries.py). Each row's uuid is made by
-- uuid_generate_v7() (the column default's function) inside the inserting statement, so that
-- each row can be matched to the request that sent it: INSERT ... RETURNING does not promise any
-- order, so the statement returns (position, uuid) pairs joined on the uuid itself, and a row
-- skipped by ON CONFLICT (a repeated delivery) comes back with a NULL uuid. Writing the uuid
-- column needs a privilege the receiver must not have, so the statement runs as the owner
-- (SECURITY DEFINER) and takes only the content columns. 0013 redefines it for the partitioned
-- input_sms, where this ON CONFLICT target does not exist: the body is checked when it runs, not
-- here, so that this file can be applied again after 0013.
SET LOCAL check_function_bodies = off;
CREATE OR REPLACE FUNCTION store_input_sms(
    sender_numbers      TEXT[],
    sms_messages        TEXT[],
    received_timestamps TIMESTAMPTZ[],
    sources             TEXT[],
    client_event_ids    TEXT[]
) RETURNS TABLE (item_position BIGINT, sms_uuid UUID)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH incoming AS MATERIALIZED (
        SELECT uuid_generate_v7() AS uuid, item.*
        FROM unnest(sender_numbers, sms_messages, received_timestamps, sources, client_event_ids)
             WITH ORDINALITY AS item (sender_number, sms_message, received_timestamp,
                                      source, client_event_id, position)
    ),
    stored AS (
        INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp,
                               source, client_event_id)
        SELECT uuid, sender_number, sms_message, received_timestamp, source, client_event_id
        FROM incoming
        ORDER BY position
        ON CONFLICT (source, client_event_id) WHERE client_event_id IS NOT NULL DO NOTHING
        RETURNING uuid
    )
    SELECT incoming.position, stored.uuid
    FROM incoming LEFT JOIN stored USING (uuid)
    ORDER BY incoming.position
$$;
REVOKE ALL ON FUNCTION store_input_sms(TEXT[], TEXT[], TIMESTAMPTZ[], TEXT[], TEXT[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION store_input_sms(TEXT[], TEXT[], TIMESTAMPTZ[], TEXT[], TEXT[])
    TO sms_receiver;

-- Settings: row-level security keeps each role to the rows it may write. Everyone who may read
-- settings reads them all; the validator writes only its checkpoint row; the admin writes every
-- setting but the checkpoint (the API refuses it as read-only too; a requeue moves no
-- checkpoint: the validator's sweeper finds the SMS). The owner (migrations, the bootstrap's
-- pinned settings are the superuser's) is not subject to these policies.
ALTER TABLE system_settings ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS settings_readable ON system_settings;
CREATE POLICY settings_readable ON system_settings FOR SELECT USING (true);
DROP POLICY IF EXISTS validator_writes_its_checkpoint ON system_settings;
CREATE POLICY validator_writes_its_checkpoint ON system_settings FOR UPDATE TO sms_validator
    USING (setting_key = 'last_processed_uuid')
    WITH CHECK (setting_key = 'last_processed_uuid');
DROP POLICY IF EXISTS admin_writes_settings ON system_settings;
CREATE POLICY admin_writes_settings ON system_settings FOR UPDATE TO sms_admin
    USING (setting_key <> 'last_processed_uuid')
    WITH CHECK (setting_key <> 'last_processed_uuid');
DROP POLICY IF EXISTS admin_adds_settings ON system_settings;
CREATE POLICY admin_adds_settings ON system_settings FOR INSERT TO sms_admin
    WITH CHECK (setting_key <> 'last_processed_uuid');

-- A requeue resets every check's result column (SPEC §7): the admin may update each of them,
-- whatever checks are registered. A check's migration adds its column and calls this again
-- (docs/architecture.md, "Adding a seventh check").
CREATE OR REPLACE FUNCTION grant_check_result_columns() RETURNS VOID
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    result_column NAME;
BEGIN
    FOR result_column IN
        SELECT attname FROM pg_attribute
        WHERE attrelid = 'sms_monitor'::regclass AND attnum > 0 AND NOT attisdropped
          AND attname LIKE '%\_check' AND atttypid = 'integer'::regtype
    LOOP
        EXECUTE format('GRANT UPDATE (%I) ON sms_monitor TO sms_admin', result_column);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION grant_check_result_columns() FROM PUBLIC;
SELECT grant_check_result_columns();

INSERT INTO schema_migrations (version) VALUES ('0009_least_privilege') ON CONFLICT DO NOTHING;
