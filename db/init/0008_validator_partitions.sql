-- 0008: the validator's partitions by sender (SPEC §6.1, §6.3; docs/architecture.md,
-- "Validator"). Only blacklist and duplicate carry state between SMS, and both are keyed by
-- sender, so sequential equivalence needs each sender's SMS in uuid order, not one global
-- order. Senders are split into partitions by a stable hash; each partition has its own
-- checkpoint and is judged by one worker at a time, holding a lease, so workers of any number of
-- processes and hosts judge different partitions at once with no global lock.

-- The partition of a sender among `partitions`: the first 32 bits of the MD5 of its text. MD5 is
-- defined by RFC 1321, so the mapping is the same in every PostgreSQL version and any language.
CREATE OR REPLACE FUNCTION sms_sender_partition(sender_number TEXT, partitions INTEGER)
RETURNS INTEGER
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (('x' || substr(md5(sender_number), 1, 8))::BIT(32)::BIGINT % partitions)::INTEGER
$$;

-- One row per partition: where its judgement stands and who holds it.
--   checkpoint     every SMS of the partition up to this uuid is judged (and none after it)
--   forwarded_seq  the last seq of forwarded_senders handed out in this partition
--   owner          the worker holding the lease (NULL: free); a batch locks its partitions'
--                  rows FOR UPDATE and checks the owner, which fences a worker whose lease was
--                  taken over
--   lease_expires_at  a lease not renewed by then may be taken by another worker
-- The number of rows is the number of partitions (32 here). Changing it is an offline operation
-- (docs/operations.md): with the validators stopped, every partition's checkpoint becomes the
-- smallest one and forwarded_senders is renumbered.
CREATE TABLE IF NOT EXISTS validator_partitions (
    partition_no     INTEGER PRIMARY KEY CHECK (partition_no >= 0),
    checkpoint       UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    forwarded_seq    BIGINT NOT NULL DEFAULT 0,
    owner            TEXT,
    lease_expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
) WITH (fillfactor = 50);  -- rewritten by every batch: room for HOT updates

-- The workers that want partitions, for a fair share: each renews its row with its leases; a
-- worker counts the rows not yet expired and takes or gives partitions to hold its share.
CREATE TABLE IF NOT EXISTS validator_workers (
    worker_id   TEXT PRIMARY KEY,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- Every sender ever forwarded, once: the truth that the Redis set out_sms_numbers mirrors and
-- the duplicate check reads (SPEC §5.3, §5.4). It is "has a row in out_sms", kept apart from
-- out_sms so that it stays small (one row per sender) and so that its order can be stated per
-- partition: a row's seq is handed out by the batch holding its partition's lease, so within a
-- partition seq order is commit order, and Redis keeps per partition the seq up to which the set
-- is complete.
CREATE TABLE IF NOT EXISTS forwarded_senders (
    sender_number VARCHAR(15) PRIMARY KEY,
    partition_no  INTEGER NOT NULL,
    seq           BIGINT NOT NULL,
    first_uuid    UUID NOT NULL,
    forwarded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (partition_no, seq)
);

-- Which database the Redis index mirrors: a Redis that outlived a restore or belongs to another
-- database is rebuilt instead of trusted.
CREATE TABLE IF NOT EXISTS validator_identity (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    token      UUID NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO validator_identity DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Change the number of partitions, offline (docs/operations.md): refused while any worker holds
-- a live lease. Every partition restarts from the smallest checkpoint (SMS above it that are
-- judged already are skipped by the validator's fetch, and each sender's judged SMS are a prefix
-- of its SMS, so what remains is judged in order); forwarded_senders is renumbered per new
-- partition in the order senders were first forwarded. The Redis marks then name another
-- partition count, so the next validator rebuilds the set. Run as the schema owner.
CREATE OR REPLACE FUNCTION sms_repartition(partitions INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    lowest UUID;
BEGIN
    IF partitions IS NULL OR partitions < 1 OR partitions > 1024 THEN
        RAISE EXCEPTION 'partitions must be 1..1024, not %', partitions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK validator_partitions, forwarded_senders IN EXCLUSIVE MODE;
    IF EXISTS (SELECT FROM validator_partitions
               WHERE owner IS NOT NULL AND lease_expires_at > clock_timestamp()) THEN
        RAISE EXCEPTION 'validators are running (live leases in validator_partitions): stop them first'
            USING ERRCODE = 'object_in_use';
    END IF;
    SELECT checkpoint INTO lowest FROM validator_partitions ORDER BY checkpoint LIMIT 1;
    DELETE FROM validator_partitions;
    DELETE FROM validator_workers;
    INSERT INTO validator_partitions (partition_no, checkpoint)
    SELECT n, coalesce(lowest, '00000000-0000-0000-0000-000000000000')
    FROM generate_series(0, partitions - 1) AS n;
    -- Negative first, so that (partition_no, seq) stays unique row by row.
    UPDATE forwarded_senders f
    SET partition_no = r.partition_no, seq = -r.seq
    FROM (SELECT sender_number, sms_sender_partition(sender_number, partitions) AS partition_no,
                 row_number() OVER (PARTITION BY sms_sender_partition(sender_number, partitions)
                                    ORDER BY first_uuid) AS seq
          FROM forwarded_senders) AS r
    WHERE r.sender_number = f.sender_number;
    UPDATE forwarded_senders SET seq = -seq;
    UPDATE validator_partitions p SET forwarded_seq = m.last_seq
    FROM (SELECT partition_no, max(seq) AS last_seq FROM forwarded_senders GROUP BY 1) AS m
    WHERE m.partition_no = p.partition_no;
    RETURN partitions;
END
$$;
REVOKE ALL ON FUNCTION sms_repartition(INTEGER) FROM PUBLIC;

-- An existing database: the partitions start where the one global checkpoint stood, and every
-- forwarded sender gets its partition and seq in the order it was first forwarded. Both
-- statements are no-ops the second time.
INSERT INTO validator_partitions (partition_no, checkpoint)
SELECT n, coalesce(
    (SELECT CASE WHEN setting_value ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                 THEN setting_value::UUID END
     FROM system_settings WHERE setting_key = 'last_processed_uuid'),
    '00000000-0000-0000-0000-000000000000')
FROM generate_series(0, 31) AS n
ON CONFLICT (partition_no) DO NOTHING;

INSERT INTO forwarded_senders (sender_number, partition_no, seq, first_uuid)
SELECT sender_number, partition_no,
       row_number() OVER (PARTITION BY partition_no ORDER BY first_uuid), first_uuid
FROM (SELECT DISTINCT ON (sender_number) sender_number, uuid AS first_uuid,
             sms_sender_partition(sender_number, 32) AS partition_no
      FROM out_sms ORDER BY sender_number, uuid) AS firsts
ON CONFLICT (sender_number) DO NOTHING;

UPDATE validator_partitions p SET forwarded_seq = f.last_seq
FROM (SELECT partition_no, max(seq) AS last_seq FROM forwarded_senders GROUP BY 1) AS f
WHERE f.partition_no = p.partition_no AND p.forwarded_seq < f.last_seq;

-- out_sms.seq (0005) numbered forwarded SMS in the commit order of one global lock, which no
-- longer exists; forwarded_senders carries the order now.
DROP INDEX IF EXISTS idx_out_sms_seq;
ALTER TABLE out_sms DROP COLUMN IF EXISTS seq;

-- count_sms is updated for every SMS that reaches the blacklist check. The seed's indexes on
-- message_count and last_updated make every such update write three index entries and forbid
-- HOT updates; nothing reads count_sms by either column (the admin and the validator read it by
-- sender), so they go.
DROP INDEX IF EXISTS idx_message_count;
DROP INDEX IF EXISTS idx_last_updated;
ALTER TABLE count_sms SET (fillfactor = 80);

GRANT SELECT, UPDATE ON validator_partitions TO sms_validator;
GRANT SELECT, INSERT, UPDATE, DELETE ON validator_workers TO sms_validator;
GRANT SELECT, INSERT ON forwarded_senders TO sms_validator;
GRANT SELECT ON validator_identity TO sms_validator;
GRANT SELECT ON validator_partitions, validator_workers, forwarded_senders TO sms_admin;

INSERT INTO schema_migrations (version) VALUES ('0008_validator_partitions') ON CONFLICT DO NOTHING;
