"""GET /stats at scale: fill a database with a million SMS or more, show the plan of every query
behind /stats, and time the endpoint against a baseline measured in the same run (the naive
GROUP BY over sms_monitor that the counters of db/init/0007 replace).

Run against a stack of its own (docs/benchmarks.md, "Admin: /stats at scale"):

    export SMSGW_STACK_DIR=.stack-bench-admin SMSGW_PGBOUNCER_PORT=6504 \
           SMSGW_REDIS_PORT=6514 SMSGW_DB_NAME=smsgw_bench_admin
    .venv/bin/sms-stack up --infra-only
    .venv/bin/python -m bench.admin_stats_plans --rows 1000000
    .venv/bin/sms-stack down

It refuses any database whose name does not start with `smsgw_bench`: it empties the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any
from uuid import UUID

import asyncpg
import httpx

import checks
from services.admin import queries
from services.admin.app import create_app
from services.admin.config import AdminConfig
from services.admin.routes.stats import BACKLOG_COUNT_CAP, THROUGHPUT_WINDOW_SECONDS
from services.admin.state import ADMIN
from sms_gateway.devstack import StackConfig

BENCH_TOKEN = "bench:admin-bench-token-0123456789"

# Every SMS arrives 2 ms after the previous one (500 SMS/s) and ends at the time of the fill.
# The uuid is a UUIDv7 of its arrival time (then a counter), so uuid order is arrival order.
FILL_INPUT = """
INSERT INTO input_sms (uuid, sender_number, sms_message, received_timestamp, created_at, source)
SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
        || '7' || lpad(to_hex(n % 4096), 3, '0') || '8' || lpad(to_hex(n), 15, '0'))::uuid,
       '4477' || lpad(sender::text, 8, '0'),
       'ACME ' || substr(md5(n::text), 1, 16) || ' +4477' || lpad(sender::text, 8, '0'),
       at - interval '3 seconds',
       at,
       CASE WHEN n % 10 = 0 THEN 'twilio' ELSE 'api' END
FROM generate_series(1, $1::bigint) AS n,
     LATERAL (SELECT now() - ($1::bigint - n) * interval '2 milliseconds' AS at,
                     -- one SMS in 7 comes from a tenth of the senders, which end up blacklisted
                     CASE WHEN n % 7 = 0 THEN n % ($2 / 10) ELSE n % $2 END AS sender) AS t
"""


def fill_monitor(check_names: tuple[str, ...]) -> str:
    """Every SMS but the last $2 judged, 200 ms after arrival, in batches of 20: about 70 %
    valid, 22 % invalid (at the check numbered n modulo the number of checks), 6 % skipped,
    0.1 % error (at `mobile`, or the last check), a few requeued. A column per registered check
    (`checks.result_columns`)."""
    n = len(check_names)
    error_at = check_names.index("mobile") if "mobile" in check_names else n - 1
    results = []
    for k in range(n):
        not_run = "kind IN ('pending', 'error')" if k >= error_at else "kind = 'pending'"
        results.append(
            f"CASE WHEN kind = 'invalid' AND n % {n} = {k} THEN 2 WHEN kind = 'skipped' THEN 3\n"
            f"            WHEN {not_run} OR (kind = 'invalid' AND n % {n} < {k}) THEN 0"
            " ELSE 1 END"
        )
    judged = ",\n       ".join(results)
    names = ", ".join(f"'{name}'" for name in check_names)
    columns = ", ".join(checks.result_columns(check_names))
    return f"""
INSERT INTO sms_monitor (uuid, {columns}, overall_status, failed_at_check,
                         processing_started_at, processing_completed_at, batch_id, retry_count)
SELECT uuid,
       {judged},
       kind,
       CASE WHEN kind = 'invalid' THEN (ARRAY[{names}])[n % {n} + 1]
            WHEN kind = 'error' THEN '{check_names[error_at]}' END,
       CASE WHEN kind = 'pending' THEN NULL ELSE created_at + interval '200 milliseconds' END,
       CASE WHEN kind = 'pending' THEN NULL ELSE created_at + interval '230 milliseconds' END,
       ('00000000-0000-7000-8000-' || lpad(to_hex(n / 20), 12, '0'))::uuid,
       CASE WHEN kind = 'error' THEN 3 ELSE 0 END
FROM (
    SELECT uuid, created_at, n,
           CASE WHEN n % 1000 = 7 THEN 'error'
                WHEN n % 10000 = 3 THEN 'pending'
                WHEN n % 100 < 70 THEN 'valid'
                WHEN n % 100 < 92 THEN 'invalid'
                ELSE 'skipped' END AS kind
    FROM (SELECT uuid, created_at, row_number() OVER (ORDER BY uuid) AS n FROM input_sms) AS s
    WHERE n <= $1::bigint - $2::bigint
) AS judged
"""


FILL_MONITOR = fill_monitor(tuple(checks.REGISTRY))

FILL_OUT = """
INSERT INTO out_sms (uuid, sender_number, sms_message, forwarded_timestamp, created_at)
SELECT i.uuid, i.sender_number, i.sms_message, m.processing_completed_at,
       m.processing_completed_at
FROM sms_monitor m JOIN input_sms i ON i.uuid = m.uuid
WHERE m.overall_status = 'valid'
"""

FILL_COUNTERS = """
INSERT INTO count_sms (sender_number, message_count, last_updated)
SELECT sender_number, count(*), max(created_at) FROM input_sms GROUP BY sender_number
"""

FILL_BLACKLIST = """
INSERT INTO blacklist_sms (sender_number, message_count)
SELECT sender_number, message_count FROM count_sms WHERE message_count > $1
"""

SET_CHECKPOINT = """
UPDATE system_settings SET setting_value = (
    SELECT uuid::text FROM sms_monitor WHERE overall_status <> 'pending'
    ORDER BY uuid DESC LIMIT 1)
WHERE setting_key = 'last_processed_uuid'
"""

NAIVE_COUNTS = "SELECT overall_status, count(*) FROM sms_monitor GROUP BY overall_status"


async def fill(connection: asyncpg.Connection, rows: int, unprocessed: int, senders: int) -> None:
    started = time.perf_counter()
    await connection.execute(
        "TRUNCATE input_sms, sms_monitor, out_sms, count_sms, blacklist_sms, settings_audit"
    )
    for label, sql, args in (
        ("input_sms", FILL_INPUT, (rows, senders)),
        ("sms_monitor", FILL_MONITOR, (rows, unprocessed)),
        ("out_sms", FILL_OUT, ()),
        ("count_sms", FILL_COUNTERS, ()),
        ("blacklist_sms", FILL_BLACKLIST, (rows // senders,)),
        ("checkpoint", SET_CHECKPOINT, ()),
    ):
        step = time.perf_counter()
        await connection.execute(sql, *args)
        print(f"-- filled {label} in {time.perf_counter() - step:.1f} s")
    await connection.execute("VACUUM ANALYZE")
    print(f"-- fill and VACUUM ANALYZE: {time.perf_counter() - started:.1f} s")


async def explain(connection: asyncpg.Connection, title: str, sql: str, *args: Any) -> None:
    rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    print(f"\n#### {title}\n\n```sql\n{sql.strip()}\n```\n\n```")
    for row in rows:
        print(row[0])
    print("```")


async def time_calls(call: Any, repeat: int) -> list[float]:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def summary(timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):.2f} ms, p95 {p95:.2f} ms (n={len(ordered)})"


async def main(rows: int, unprocessed: int, senders: int, repeat: int, skip_fill: bool) -> None:
    stack = StackConfig()
    if not stack.db_name.startswith("smsgw_bench"):
        raise SystemExit(f"refusing to empty {stack.db_name!r}: use SMSGW_DB_NAME=smsgw_bench_...")
    owner = await asyncpg.connect(stack.admin_url_for(stack.db_name))
    try:
        if not skip_fill:
            await fill(owner, rows, unprocessed, senders)
        counts = dict(await owner.fetch(NAIVE_COUNTS))
        print(f"-- sms_monitor by status: {counts}")
        checkpoint = await owner.fetchval(queries.CHECKPOINT)
        print("\n### Plans (EXPLAIN (ANALYZE, BUFFERS))")
        await explain(
            owner,
            "The statement behind GET /stats (after reading the checkpoint)",
            queries.STATS,
            UUID(checkpoint),
            BACKLOG_COUNT_CAP,
            float(THROUGHPUT_WINDOW_SECONDS),
        )
        await explain(
            owner, "Baseline: GROUP BY over sms_monitor (what the counters replace)", NAIVE_COUNTS
        )
        await explain(
            owner,
            "GET /blacklist?sender_prefix=447700000",
            queries.BLACKLIST_PAGE,
            "447700000%",
            None,
            101,
        )

        baseline = await time_calls(lambda: owner.fetch(NAIVE_COUNTS), max(3, repeat // 10))
    finally:
        await owner.close()

    config = AdminConfig(
        database_url=stack.pooled_url("sms_admin", stack.db_name),
        admin_tokens=BENCH_TOKEN,
        environment="development",
    )
    app = create_app(config)
    async with (
        ADMIN.serving(app) as (served, _),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served),
            base_url="http://admin",
            headers={"Authorization": f"Bearer {BENCH_TOKEN.split(':')[1]}"},
        ) as client,
    ):
        first = await client.get("/stats")
        first.raise_for_status()
        stats = first.json()
        endpoint = await time_calls(lambda: client.get("/stats"), repeat)
    print("\n### Timings")
    print(f"- GET /stats through pgbouncer, in-process ASGI client: {summary(endpoint)}")
    print(f"- baseline GROUP BY over sms_monitor alone: {summary(baseline)}")
    print(
        f"- ratio baseline / GET /stats (medians): "
        f"{statistics.median(baseline) / statistics.median(endpoint):.0f}x"
    )
    print(
        f"- GET /stats answered: by_status={stats['by_status']}, "
        f"backlog={stats['backlog']}, throughput={stats['throughput']}"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="SMS in input_sms")
    parser.add_argument(
        "--unprocessed",
        type=int,
        default=5_000,
        help="the newest SMS left without a result (the backlog)",
    )
    parser.add_argument("--senders", type=int, default=200_000, help="distinct senders")
    parser.add_argument("--repeat", type=int, default=50, help="GET /stats calls to time")
    parser.add_argument("--skip-fill", action="store_true", help="reuse the data of a run")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.unprocessed, args.senders, args.repeat, args.skip_fill))


if __name__ == "__main__":
    cli()
