-- 0001: the six tables of the seed, written as valid PostgreSQL, plus the additions of SPEC §2
-- that belong to them (time-ordered keys, the delivery idempotency key).
-- Every statement is safe to run twice; the file records itself in schema_migrations, so it
-- works both through `sms-migrate` and as a plain psql init script.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Tie-breaker for keys made within the same microsecond: nextval() is increasing in call order.
CREATE SEQUENCE IF NOT EXISTS uuid_v7_seq CYCLE MAXVALUE 1073741823;

-- A time-ordered UUID (RFC 9562 version 7) from the database's clock:
--   48 bits Unix milliseconds | version 7 | 12 bits sub-millisecond (microseconds 0..999)
--   | variant 10 | 30 bits of the sequence above | 32 random bits.
-- Keys from one session are strictly increasing; keys from different sessions are ordered by
-- their clock reading to the microsecond. A random v4 key would make "process in UUID order from
-- a checkpoint" lose rows.
CREATE OR REPLACE FUNCTION uuid_generate_v7() RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    micros   BIGINT := floor(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    sequence BIGINT := nextval('uuid_v7_seq') & 1073741823;
BEGIN
    RETURN (
        lpad(to_hex(micros / 1000), 12, '0')
        || to_hex(28672 + (micros % 1000))           -- 0x7000: version 7, then 12 bits
        || lpad(to_hex(2147483648 + sequence), 8, '0')  -- 0x80000000: variant 10, then 30 bits
        || substr(md5(random()::TEXT || clock_timestamp()::TEXT), 1, 8)
    )::uuid;
END
$$;

CREATE TABLE IF NOT EXISTS input_sms (
    uuid               UUID PRIMARY KEY DEFAULT uuid_generate_v7(),
    sender_number      VARCHAR(15) NOT NULL,
    sms_message        TEXT NOT NULL,
    received_timestamp TIMESTAMPTZ NOT NULL,   -- when the SMS reached the phone
    created_at         TIMESTAMPTZ DEFAULT NOW(), -- when it was inserted
    source             VARCHAR(32) NOT NULL DEFAULT 'api',
    client_event_id    VARCHAR(64) NULL
);
-- The seed's idx_uuid_btree duplicated the primary key's index and is not created.
CREATE INDEX IF NOT EXISTS idx_received_timestamp ON input_sms (received_timestamp);
CREATE INDEX IF NOT EXISTS idx_created_at ON input_sms (created_at);
-- The idempotency key of a delivery (SPEC §4.3). Once 0013 has partitioned input_sms by time,
-- each partition has this index of its own instead (a partitioned table cannot have it).
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'public.input_sms'::regclass) = 'r' THEN
        CREATE UNIQUE INDEX IF NOT EXISTS uq_input_sms_delivery
            ON input_sms (source, client_event_id) WHERE client_event_id IS NOT NULL;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS sms_monitor (
    uuid UUID PRIMARY KEY REFERENCES input_sms (uuid),
    -- check results: 0 not run, 1 pass, 2 fail, 3 skipped
    blacklist_check   INTEGER DEFAULT 0,
    duplicate_check   INTEGER DEFAULT 0,
    header_check      INTEGER DEFAULT 0,
    hash_length_check INTEGER DEFAULT 0,
    mobile_check      INTEGER DEFAULT 0,
    time_window_check INTEGER DEFAULT 0,
    overall_status          VARCHAR(20) DEFAULT 'pending', -- pending, valid, invalid, skipped, error
    processing_started_at   TIMESTAMPTZ,
    processing_completed_at TIMESTAMPTZ,
    failed_at_check         VARCHAR(20),
    batch_id                UUID,
    retry_count             INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_overall_status ON sms_monitor (overall_status);
CREATE INDEX IF NOT EXISTS idx_batch_id ON sms_monitor (batch_id);
CREATE INDEX IF NOT EXISTS idx_processing_started ON sms_monitor (processing_started_at);

CREATE TABLE IF NOT EXISTS system_settings (
    setting_key   VARCHAR(50) PRIMARY KEY,
    setting_value TEXT NOT NULL,
    updated_at    TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS out_sms (
    uuid                UUID PRIMARY KEY REFERENCES input_sms (uuid),
    sender_number       VARCHAR(15) NOT NULL,
    sms_message         TEXT NOT NULL,
    validation_status   VARCHAR(20) DEFAULT 'valid',
    forwarded_timestamp TIMESTAMPTZ DEFAULT NOW(),
    created_at          TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_sender_number ON out_sms (sender_number);
CREATE INDEX IF NOT EXISTS idx_forwarded_timestamp ON out_sms (forwarded_timestamp);

CREATE TABLE IF NOT EXISTS blacklist_sms (
    sender_number  VARCHAR(15) PRIMARY KEY,
    blacklisted_at TIMESTAMPTZ DEFAULT NOW(),
    reason         VARCHAR(100) DEFAULT 'threshold_exceeded',
    message_count  INTEGER DEFAULT 0
);

CREATE TABLE IF NOT EXISTS count_sms (
    sender_number VARCHAR(15) PRIMARY KEY,
    message_count INTEGER DEFAULT 0,
    last_updated  TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_message_count ON count_sms (message_count);
CREATE INDEX IF NOT EXISTS idx_last_updated ON count_sms (last_updated);

INSERT INTO schema_migrations (version) VALUES ('0001_core_tables') ON CONFLICT DO NOTHING;
