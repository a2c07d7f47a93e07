"""`make bench-verdicts`: how fast trackd_judge_verdicts (migration 011) judges new events.

    make bench-verdicts                                        # 200,000 new events over 1,000,000 stored
    BENCH_VERDICTS_EVENTS=1000000 make bench-verdicts          # more
    BENCH_VERDICTS_LIMIT=20000 make bench-verdicts             # the service's batch size

An embedded PostgreSQL with the durable settings of `make run` (loadtests/harness.py), migrated.
First BENCH_VERDICTS_HISTORY events (default 1,000,000) already stored and judged (another
campaign, spread over the same hours), so the neighbourhood lookups go through a table of some
size. Then BENCH_VERDICTS_EVENTS new events (default 200,000) committed in writer-sized
transactions of 5,000 rows, in receipt order: 90 % single opens or clicks of distinct recipients,
10 % scanner bursts (per recipient: the pixel from the scanner's address, then 30 s later five
clicks 0.2 s apart from the same address), the events of one burst falling into different
transactions as different pods' would. Then the judge, as the service calls it: calls of
BENCH_VERDICTS_LIMIT (default 50,000) until one returns less than a full batch, each timed.

Printed: events judged per second over all calls (examined / time), per-call times, events revised,
and a check that exactly the bursts' events were judged machines (with the reasons expected) and
that the campaign's rollups equal a recomputation from events. BENCH_OUT (default
docs/bench/verdicts.json) keeps the result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from app.db import migrate
from loadtests import harness

ROOT = harness.ROOT
CAMPAIGN = "bench-verdicts"
HISTORY_CAMPAIGN = "bench-verdicts-history"
TX_ROWS = 5_000
BASE = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
SPAN_S = 4 * 3600
# The share of recipients scanned so that 10 % of events are a scan's (6 events each): 6p / (1 + 5p) = 0.1.
BURST_RECIPIENTS = 0.1 / 5.5

_INSERT = """
INSERT INTO events (id, occurred_at, kind, campaign_id, recipient_id, link_index, url, is_machine, machine_reason,
                    sent_at, evidence, addr_tag)
SELECT id, occurred_at, kind, $9, recipient_id, link_index,
       CASE WHEN link_index IS NULL THEN NULL ELSE 'https://example.com/' || link_index END,
       false, NULL, sent_at, evidence, addr_tag
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::smallint[],
            $8::smallint[]) AS u(id, occurred_at, kind, recipient_id, link_index, sent_at, evidence, addr_tag)
ORDER BY occurred_at, id
"""
_HISTORY = """
INSERT INTO events (id, occurred_at, kind, campaign_id, recipient_id, link_index, is_machine, sent_at, evidence,
                    addr_tag)
SELECT gen_random_uuid(), $1::timestamptz + make_interval(secs => (i % $3) * ($4::float8 / $3)),
       CASE WHEN i % 4 = 0 THEN 'click' ELSE 'open' END, $5, 'h' || (i % ($2 / 3)),
       CASE WHEN i % 4 = 0 THEN i % 8 END, false, $1::timestamptz - interval '10 minutes', 12::smallint,
       (i % 30000)::smallint
FROM generate_series($6::bigint, $7::bigint) AS i
"""


def make_events(count: int, rng: random.Random) -> tuple[list[tuple], int]:
    """The new events in receipt order, and how many belong to bursts."""
    rows: list[tuple] = []
    burst_events = 0
    recipient = 0
    while len(rows) < count:
        recipient += 1
        t = rng.uniform(0, SPAN_S)
        at = BASE + dt.timedelta(seconds=t)
        sent = at - dt.timedelta(seconds=rng.uniform(20, 3600))
        addr = rng.randrange(-32768, 32767)
        r = f"r{recipient}"
        if rng.random() < BURST_RECIPIENTS:
            pixel = at - dt.timedelta(seconds=30)
            rows.append((uuid.uuid4(), pixel, "open", r, None, sent, 12, addr))
            for i in range(5):
                rows.append((uuid.uuid4(), at + dt.timedelta(seconds=0.2 * i), "click", r, i, sent, 12, addr))
            burst_events += 6
        elif rng.random() < 0.75:
            rows.append((uuid.uuid4(), at, "open", r, None, sent, 12, addr))
        else:
            rows.append((uuid.uuid4(), at, "click", r, rng.randrange(8), sent, 12, addr))
    rows.sort(key=lambda row: row[1])  # receipt order: a burst's events land in different transactions
    return rows, burst_events


async def insert(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    for start in range(0, len(rows), TX_ROWS):
        part = rows[start : start + TX_ROWS]
        cols = list(zip(*part, strict=True))
        await conn.execute(_INSERT, *cols, CAMPAIGN)


async def run(events: int, history: int, limit: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="trackd-bench-verdicts-") as tmp:
        pg = harness.start_postgres(Path(tmp) / "pg")
        try:
            conn = await asyncpg.connect(pg.dsn)
            try:
                await conn.execute("SET TIME ZONE 'UTC'")
                await migrate(conn)
                days = sorted({(BASE + dt.timedelta(seconds=s)).date() for s in (-3600, 0, SPAN_S)})
                await conn.execute("SELECT trackd_ensure_partitions($1::date[])", days)
                started = time.perf_counter()
                for lo in range(0, history, 100_000):
                    hi = min(history, lo + 100_000) - 1
                    await conn.execute(_HISTORY, BASE, max(history, 3), history or 1, SPAN_S, HISTORY_CAMPAIGN, lo, hi)
                if history:
                    print(f"{history:,} stored events in {time.perf_counter() - started:.1f} s", flush=True)
                # The stored events count as judged: the watermark moves past them.
                await conn.execute(
                    "UPDATE verdict_progress SET watermark_id = 'ffffffff-ffff-ffff-ffff-ffffffffffff',"
                    " watermark_xid = ((pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1)::text)::xid8"
                )
                await conn.execute("VACUUM ANALYZE events")
                rows, burst_events = make_events(events, random.Random(11))
                started = time.perf_counter()
                await insert(conn, rows)
                insert_s = time.perf_counter() - started
                print(f"{len(rows):,} new events ({burst_events:,} in bursts) committed in"
                      f" {len(rows) // TX_ROWS + 1} transactions in {insert_s:.1f} s", flush=True)  # fmt: skip
                calls = []
                while True:
                    started = time.perf_counter()
                    result = await conn.fetchrow("SELECT * FROM trackd_judge_verdicts($1)", limit)
                    seconds = time.perf_counter() - started
                    assert result is not None and result["judged"]
                    calls.append({"examined": result["examined"], "revised": result["revised"], "seconds": seconds})
                    print(f"  call {len(calls)}: {result['examined']:,} examined, {result['revised']:,} revised"
                          f" in {seconds * 1000:.0f} ms", flush=True)  # fmt: skip
                    if not result["more"]:
                        break
                examined = sum(c["examined"] for c in calls)
                total_s = sum(c["seconds"] for c in calls)
                machines = await conn.fetch(
                    "SELECT machine_reason, count(*) AS n FROM events WHERE campaign_id = $1 AND is_machine GROUP BY 1"
                    " ORDER BY 1",
                    CAMPAIGN,
                )
                by_reason = {r["machine_reason"]: r["n"] for r in machines}
                drift = await conn.fetch("SELECT * FROM trackd_rollup_drift($1)", CAMPAIGN)
            finally:
                await conn.close()
        finally:
            pg.stop("fast")
    expected = {"burst": burst_events // 6 * 5, "scan": burst_events // 6}
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "events": len(rows),
        "burst_events": burst_events,
        "history": history,
        "limit": limit,
        "calls": calls,
        "examined": examined,
        "seconds": total_s,
        "events_per_s": examined / total_s if total_s else None,
        "machines_by_reason": by_reason,
        "verdicts_as_expected": by_reason == expected,
        "drift_rows": len(drift),
    }
    print(f"judged {examined:,} events in {total_s:.2f} s = {examined / total_s:,.0f} events/s"
          f" (batches of {limit:,}; {history:,} events stored before)", flush=True)  # fmt: skip
    print(f"machines by reason: {by_reason} (expected {expected}): {'OK' if by_reason == expected else 'WRONG'}")
    print("rollups exact (trackd_rollup_drift empty)" if not drift else f"rollup drift rows: {len(drift)}")
    return result


def main() -> None:
    events = int(os.environ.get("BENCH_VERDICTS_EVENTS", "200000"))
    history = int(os.environ.get("BENCH_VERDICTS_HISTORY", "1000000"))
    limit = int(os.environ.get("BENCH_VERDICTS_LIMIT", "50000"))
    out = os.environ.get("BENCH_OUT", str(ROOT / "docs" / "bench" / "verdicts.json"))
    result = asyncio.run(run(events, history, limit))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    raise SystemExit(0 if result["verdicts_as_expected"] and result["drift_rows"] == 0 else 1)


if __name__ == "__main__":
    main()
