-- 0011: the receiver's insert of an unkeyed batch, with the items in one jsonb parameter and the
-- uuids back in one array (services/receiver/queries.py). 0010's store_input_batch took three
-- arrays and returned a row per item: encoding those arrays (a thousand timestamps) and decoding
-- a thousand rows cost the receiver 1.7-2.0 ms of CPU per batch of 1000 with its transaction,
-- where one JSON document written by a compiled encoder and one uuid[] cost 0.6-1.1 ms;
-- PostgreSQL's work is the same within the measurements' spread. Each item is
-- [sender_number, sms_message, received_timestamp], the time in ISO 8601 with its offset (the
-- receiver sends UTC); every field was validated by the receiver before it got here.
-- Like 0009's store_input_sms it runs as the owner (SECURITY DEFINER), because the receiver may
-- not write the uuid column; each uuid is made by uuid_generate_v7() inside the statement, in
-- the items' order. store_input_batch (0010) stays for a receiver of the previous version that
-- still runs during an upgrade.
-- PL/pgSQL rather than SQL: it keeps the statement's plan for the server connection's life,
-- where a SQL function plans its body at every call (0.3-0.4 ms of 5.8 per 1000 SMS).
CREATE OR REPLACE FUNCTION store_input_items(items JSONB, batch_source TEXT) RETURNS UUID[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    stored_uuids UUID[];
BEGIN
    WITH incoming AS MATERIALIZED (
        SELECT uuid_generate_v7() AS uuid,
               item.value ->> 0 AS sender_number,
               item.value ->> 1 AS sms_message,
               (item.value ->> 2)::TIMESTAMPTZ AS received_timestamp,
               item.position
        FROM jsonb_array_elements(items) WITH ORDINALITY AS item (value, position)
    ),
    stored AS (
        INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp, source)
        SELECT uuid, sender_number, sms_message, received_timestamp, batch_source
        FROM incoming
    )
    SELECT array_agg(uuid ORDER BY position) INTO stored_uuids FROM incoming;
    RETURN stored_uuids;
END
$$;
REVOKE ALL ON FUNCTION store_input_items(JSONB, TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION store_input_items(JSONB, TEXT) TO sms_receiver;

INSERT INTO schema_migrations (version) VALUES ('0011_receiver_batch_items') ON CONFLICT DO NOTHING;
