"""0013 on a database that already holds SMS: the rows stay where they are, in the legacy time
partition attached without a scan, and everything after goes on working (db/init/0013)."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg

from sms_gateway.migrate import MIGRATIONS_DIR, discover, migrate
from tests.conftest import FreshDatabase

BEFORE_TIME_PARTITIONS = "0013"


async def test_an_existing_database_keeps_its_rows_in_the_legacy_partition(
    empty_database: FreshDatabase, tmp_path: Path
) -> None:
    for migration in discover():
        if migration.version < BEFORE_TIME_PARTITIONS:
            shutil.copy(migration.path, tmp_path)
    url = empty_database.direct_url()
    await migrate(url, tmp_path)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            """
            INSERT INTO input_sms (sender_number, sms_message, received_timestamp, source,
                                   client_event_id)
            SELECT '4479111230' || (n % 10), 'm' || n, now(), 'api',
                   CASE WHEN n % 2 = 0 THEN 'key-' || n END
            FROM generate_series(1, 500) AS n;
            INSERT INTO sms_monitor (uuid, overall_status)
            SELECT uuid, CASE WHEN sms_message LIKE '%0' THEN 'valid' ELSE 'invalid' END
            FROM input_sms;
            INSERT INTO out_sms (uuid, sender_number, sms_message)
            SELECT uuid, sender_number, sms_message FROM input_sms WHERE sms_message LIKE '%0';
            """
        )
        before = {
            table: await connection.fetch(f"SELECT * FROM {table} ORDER BY uuid")
            for table in ("input_sms", "sms_monitor", "out_sms")
        }

        assert await migrate(url, MIGRATIONS_DIR) == ["0013_time_partitions"]

        for table, rows in before.items():
            assert await connection.fetch(f"SELECT * FROM {table} ORDER BY uuid") == rows
            where = await connection.fetch(
                f"SELECT DISTINCT tableoid::regclass::text AS part FROM {table}"
            )
            assert [r["part"] for r in where] == [f"{table}_legacy"]
        kinds = dict(
            await connection.fetch(
                "SELECT relname, relkind::text FROM pg_class WHERE relname IN "
                "('input_sms', 'sms_monitor', 'out_sms')"
            )
        )
        assert kinds == {"input_sms": "p", "sms_monitor": "p", "out_sms": "p"}
        legacy = await connection.fetchrow(
            "SELECT ends_at, ends_at > now() + interval '1 day' AS ahead "
            "FROM sms_time_partitions WHERE partition_name = 'legacy'"
        )
        assert legacy is not None
        assert legacy["ahead"]
        # Day partitions follow the legacy one without a gap.
        first_day = await connection.fetchval(
            "SELECT starts_at FROM sms_time_partitions WHERE partition_name <> 'legacy' "
            "ORDER BY starts_at LIMIT 1"
        )
        assert first_day == legacy["ends_at"]
        # The status counters of /stats are carried over, and the triggers count new results.
        counted = dict(
            await connection.fetch(
                "SELECT overall_status, sum(sms_count)::int FROM sms_status_counts GROUP BY 1"
            )
        )
        assert counted == {"valid": 50, "invalid": 450}
        await connection.execute(
            "UPDATE sms_monitor SET overall_status = 'pending' WHERE uuid = $1",
            before["sms_monitor"][0]["uuid"],
        )
        recounted = await connection.fetchval(
            "SELECT sum(sms_count)::int FROM sms_status_counts WHERE overall_status = 'pending'"
        )
        assert recounted == 1
        # A repeated delivery key is still found in the legacy partition.
        stored = await connection.fetch(
            "SELECT * FROM store_input_sms(ARRAY['447911123000', '447911123001'], "
            "ARRAY['again', 'new'], ARRAY[now(), now()], ARRAY['api', 'api'], "
            "ARRAY['key-2', 'key-new'])"
        )
        assert [r["sms_uuid"] is None for r in stored] == [True, False]
    finally:
        await connection.close()
