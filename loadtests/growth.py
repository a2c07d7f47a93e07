"""Make `events` big fast: rows generated inside PostgreSQL (INSERT ... SELECT generate_series),
spread over past days, one partition per day, so growth can be measured in minutes."""

from __future__ import annotations

import datetime as dt
import time

import asyncpg


async def bulk_load(dsn: str, rows: int, days: int = 10, chunk: int = 500_000) -> float:
    """Add `rows` rows to `events` over the `days` days before today; returns seconds taken."""
    today = dt.datetime.now(dt.UTC).date()
    day_list = [today - dt.timedelta(days=d) for d in range(1, days + 1)]
    per_day = rows // days
    conn = await asyncpg.connect(dsn, command_timeout=3600)
    started = time.monotonic()
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        # Only this loader's own commits are asynchronous; the server under test is unaffected.
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SELECT trackd_ensure_partitions($1::date[])", day_list)
        for day in day_list:
            for lo in range(0, per_day, chunk):
                hi = min(per_day, lo + chunk) - 1
                # Ascending occurred_at, as live traffic arrives: the primary key index is appended to.
                await conn.execute(
                    """
                    INSERT INTO events (id, occurred_at, kind, campaign_id, recipient_id, link_index, url, ip,
                                        user_agent, is_machine, machine_reason, sent_at)
                    SELECT gen_random_uuid(), t.at,
                           CASE WHEN g % 4 = 0 THEN 'click' ELSE 'open' END,
                           'camp-' || (g % 500), 'r-' || g || '@example.com',
                           CASE WHEN g % 4 = 0 THEN g % 5 END,
                           CASE WHEN g % 4 = 0 THEN 'https://shop.example.com/item/' || (g % 5000) || '?utm=mail' END,
                           '203.0.113.0/24'::inet, 'Mozilla/5.0 (bulk)', g % 10 = 0,
                           CASE WHEN g % 10 = 0 THEN 'bot' END, t.at - interval '1 hour'
                    FROM generate_series($2::int, $3::int) AS g,
                         LATERAL (SELECT $1::timestamptz + g * ($4::float8 / $5::int) * interval '1 second' AS at) t
                    """,
                    dt.datetime.combine(day, dt.time(), dt.UTC), lo, hi, 86_399.0, per_day,
                )  # fmt: skip
        # What autovacuum would do next (set the visibility map, gather statistics of 10 new
        # partitions) done now, and a checkpoint: the measurement after the load must not share
        # the machine's two cores with the aftermath of the load itself.
        await conn.execute("VACUUM (ANALYZE) events")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.monotonic() - started


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
