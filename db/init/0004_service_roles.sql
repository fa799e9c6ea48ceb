-- 0004: one least-privilege role per service (SPEC §2). Roles are cluster-wide, so this file does
-- not make them: sms-bootstrap (sms_gateway/bootstrap.py) creates them as the superuser, with
-- their passwords, attributes and per-role settings, before any migration runs. The schema owner
-- that runs this file has no CREATEROLE (0009); here each role gets what it may do in this
-- database.
DO $$
DECLARE
    service_role TEXT;
BEGIN
    FOREACH service_role IN ARRAY ARRAY['sms_receiver', 'sms_validator', 'sms_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = service_role) THEN
            RAISE EXCEPTION 'role % does not exist', service_role
                USING HINT = 'sms-bootstrap creates the roles, as the superuser, before the '
                             'migrations';
        END IF;
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), service_role);
    END LOOP;
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO sms_receiver, sms_validator, sms_admin;

-- receiver: stores SMS, reads back the uuid of a repeated delivery, reads its settings.
GRANT INSERT ON input_sms TO sms_receiver;
GRANT SELECT (uuid, source, client_event_id) ON input_sms TO sms_receiver;
GRANT USAGE ON SEQUENCE uuid_v7_seq TO sms_receiver;
GRANT SELECT ON system_settings TO sms_receiver;

-- validator: reads SMS, writes results, counters, the blacklist, out_sms and its checkpoint.
GRANT SELECT ON input_sms, system_settings TO sms_validator;
GRANT SELECT, INSERT, UPDATE ON sms_monitor, count_sms, blacklist_sms TO sms_validator;
GRANT SELECT, INSERT ON out_sms TO sms_validator;
GRANT UPDATE (setting_value, updated_at) ON system_settings TO sms_validator;

-- admin: reads what it shows, edits settings with their audit, removes blacklist entries with
-- their counts, requeues SMS in error (only the columns a requeue resets, SPEC §7; 0009 grants
-- the result column of every check). It may not write out_sms. The REVOKE makes a second run take back what an earlier version of this file gave.
REVOKE ALL ON input_sms, sms_monitor, system_settings, out_sms, blacklist_sms, count_sms,
    settings_audit, schema_migrations FROM sms_admin;
GRANT SELECT ON input_sms, sms_monitor, system_settings, out_sms, blacklist_sms, count_sms,
    settings_audit TO sms_admin;
GRANT INSERT, UPDATE ON system_settings TO sms_admin;
GRANT INSERT ON settings_audit TO sms_admin;
GRANT DELETE ON blacklist_sms, count_sms TO sms_admin;
GRANT UPDATE (overall_status, failed_at_check, blacklist_check, duplicate_check, header_check,
    hash_length_check, mobile_check, time_window_check) ON sms_monitor TO sms_admin;

INSERT INTO schema_migrations (version) VALUES ('0004_service_roles') ON CONFLICT DO NOTHING;
