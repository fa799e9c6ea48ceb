-- 0003: the initial value of every run-time setting (SPEC §3). The typed model in
-- sms_gateway/settings.py is the authority on keys, rules and defaults; a test checks that these
-- rows equal its defaults. An existing value is never overwritten.
INSERT INTO system_settings (setting_key, setting_value) VALUES
    ('batch_size', '20'),
    ('blacklist_threshold', '10'),
    ('last_processed_uuid', '00000000-0000-0000-0000-000000000000'),
    ('check_sequence', '["blacklist", "duplicate", "header", "hash_length", "mobile", "time_window"]'),
    ('check_enabled', '{"blacklist": true, "duplicate": true, "header": true, "hash_length": true, "mobile": true, "time_window": true}'),
    ('validation_time_window', '3600'),
    ('out_sms_cache_ttl', '604800'),
    ('max_database_retries', '3'),
    ('log_level', 'INFO'),
    ('parallel_workers', '1'),
    ('maintenance_mode', 'false'),
    ('pgbouncer_pool_size', '10'),
    ('redis_host', 'localhost'),
    ('redis_port', '6379'),
    ('message_separator', ' '),
    ('header_pattern', '^[A-Z][A-Z0-9]{1,10}$'),
    ('header_allowed', '[]'),
    ('hash_length', '16'),
    ('hash_encoding', 'hex'),
    ('mobile_encoding', 'plain'),
    ('mobile_regions', '[]'),
    ('mobile_match_sender', 'true'),
    ('time_window_reference', 'arrival'),
    ('time_window_max_skew', '300'),
    ('max_message_length', '1600')
ON CONFLICT (setting_key) DO NOTHING;

INSERT INTO schema_migrations (version) VALUES ('0003_initial_settings') ON CONFLICT DO NOTHING;
