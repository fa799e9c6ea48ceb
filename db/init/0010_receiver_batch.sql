-- 0010: the receiver's insert of a whole unkeyed batch (POST /sms/receive/batch without an
-- Idempotency-Key; services/receiver/queries.py). Leaner than store_input_sms (0009): no
-- ON CONFLICT and no join back, since such a batch has no delivery keys; the uuids come back in
-- the items' order. Like store_input_sms it runs as the owner (SECURITY DEFINER) because the
-- receiver may not write the uuid column, and the uuid is made by uuid_generate_v7() inside the
-- statement, from the database clock.
CREATE OR REPLACE FUNCTION store_input_batch(
    sender_numbers      TEXT[],
    sms_messages        TEXT[],
    received_timestamps TIMESTAMPTZ[],
    batch_source        TEXT
) RETURNS SETOF UUID
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH incoming AS MATERIALIZED (
        SELECT uuid_generate_v7() AS uuid, item.*
        FROM unnest(sender_numbers, sms_messages, received_timestamps)
             WITH ORDINALITY AS item (sender_number, sms_message, received_timestamp, position)
    ),
    stored AS (
        INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp, source)
        SELECT uuid, sender_number, sms_message, received_timestamp, batch_source
        FROM incoming
    )
    SELECT uuid FROM incoming ORDER BY position
$$;
REVOKE ALL ON FUNCTION store_input_batch(TEXT[], TEXT[], TIMESTAMPTZ[], TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION store_input_batch(TEXT[], TEXT[], TIMESTAMPTZ[], TEXT) TO sms_receiver;

INSERT INTO schema_migrations (version) VALUES ('0010_receiver_batch') ON CONFLICT DO NOTHING;
