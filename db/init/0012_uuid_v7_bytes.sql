-- 0012: uuid_generate_v7() (0001) made from two integers instead of text. The layout is 0001's,
-- bit for bit: 48 bits of Unix milliseconds | version 7 | 12 bits of microseconds within the
-- millisecond | variant 10 | 30 bits of uuid_v7_seq | 32 random bits. 0001 wrote each part as
-- hex text (lpad, to_hex, and an md5 of random() and the clock's text for the random part) and
-- parsed the concatenation: 2.2 ms of a backend's CPU per 1000 keys, where packing the two
-- 64-bit halves (int8send) costs 1.15 ms (gen_random_uuid(), for scale, 0.85 ms in the same
-- measurement). Every key of input_sms, from the receiver and from the column default, is made
-- here. uuid_v7_lower_bound and uuid_v7_time (0005) read the same layout.
CREATE OR REPLACE FUNCTION uuid_generate_v7() RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    micros   BIGINT := floor(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    sequence BIGINT := nextval('uuid_v7_seq') & 1073741823;
BEGIN
    RETURN encode(
        -- 0x7000: version 7, then the 12 bits of microseconds
        int8send((micros / 1000) << 16 | 28672 | (micros % 1000))
        -- 0x80000000: variant 10, then the 30 bits of the sequence; then 32 random bits. The
        -- shift sets the sign bit of the BIGINT: int8send writes its two's complement bytes.
        || int8send((2147483648 | sequence) << 32 | floor(random() * 4294967296)::BIGINT),
        'hex'
    )::uuid;
END
$$;

INSERT INTO schema_migrations (version) VALUES ('0012_uuid_v7_bytes') ON CONFLICT DO NOTHING;
