-- 0005: what the validator's batch engine needs (SPEC §5.4, §6; docs/architecture.md, "Validator").

-- The commit order of out_sms. Every out_sms insert happens inside a batch transaction that holds
-- the row lock on the checkpoint, so identity values are handed out and committed in one order:
-- "every row up to seq N" is a well-defined prefix. Redis keeps the highest seq it mirrors as a
-- marker; a marker behind max(seq) says exactly which senders the set is missing.
-- 0008 replaced it with forwarded_senders: once 0008 has run there is nothing to add (and 0013's
-- partitioned out_sms could not have this unique index).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM schema_migrations WHERE version = '0008_validator_partitions') THEN
        ALTER TABLE out_sms ADD COLUMN IF NOT EXISTS seq BIGINT GENERATED ALWAYS AS IDENTITY;
        CREATE UNIQUE INDEX IF NOT EXISTS idx_out_sms_seq ON out_sms (seq);
    END IF;
END
$$;

-- The smallest UUIDv7 that uuid_generate_v7() (0001) can make at or after `at`: every key made at
-- or after that instant is >= this value, every key made before it is smaller. Instants before
-- the Unix epoch (the sweeper's window below a zero checkpoint) map to the epoch.
CREATE OR REPLACE FUNCTION uuid_v7_lower_bound(at TIMESTAMPTZ) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (
        lpad(to_hex(micros / 1000), 12, '0')
        || to_hex(28672 + micros % 1000)
        || '8000000000000000'
    )::uuid
    FROM (SELECT greatest(floor(extract(epoch FROM at) * 1000000)::BIGINT, 0) AS micros) t
$$;

-- The instant a UUIDv7 of uuid_generate_v7() was made, to the microsecond.
CREATE OR REPLACE FUNCTION uuid_v7_time(key uuid) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_timestamp(
        (('x' || lpad(substr(replace(key::TEXT, '-', ''), 1, 12), 16, '0'))::BIT(64)::BIGINT * 1000
         + ((('x' || lpad(substr(replace(key::TEXT, '-', ''), 14, 3), 8, '0'))::BIT(32)::INT) % 1000)
        )::DOUBLE PRECISION / 1000000
    )
$$;

-- The settle horizon reads the xact_start of other roles' transactions in pg_stat_activity, so
-- the validator is a member of pg_read_all_stats, and receiver transactions are bounded by a
-- statement_timeout: both are cluster-wide, so sms-bootstrap sets them (sms_gateway/bootstrap.py).

INSERT INTO schema_migrations (version) VALUES ('0005_validator_engine') ON CONFLICT DO NOTHING;
