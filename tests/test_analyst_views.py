"""The analysts' views (migration 009, docs/analytics.md) against a recomputation from `events`
(count, count DISTINCT): after batches of made-up events, after verdict revisions and after an
erasure, every view says what the events say; and no view but human_events reads `events`."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from loadtests.bench_stats import bind, cookbook
from tests.rollup_support import BASE, REASONS, Ev, assert_exact, insert

VIEWS = ("campaign_summary", "link_summary", "campaign_hourly", "campaign_daily", "time_to_first",
         "human_events", "recipient_engagement")  # fmt: skip

# -- the recomputations: what each view must say, from `events` alone --------------------------------

_SUMMARY = """
SELECT campaign_id,
       count(*) FILTER (WHERE kind = 'open') AS opens,
       count(DISTINCT recipient_id) FILTER (WHERE kind = 'open') AS unique_opens,
       count(*) FILTER (WHERE kind = 'open' AND NOT is_machine) AS human_opens,
       count(DISTINCT recipient_id) FILTER (WHERE kind = 'open' AND NOT is_machine) AS human_unique_opens,
       count(*) FILTER (WHERE kind = 'click') AS clicks,
       count(DISTINCT recipient_id) FILTER (WHERE kind = 'click') AS unique_clicks,
       count(*) FILTER (WHERE kind = 'click' AND NOT is_machine) AS human_clicks,
       count(DISTINCT recipient_id) FILTER (WHERE kind = 'click' AND NOT is_machine) AS human_unique_clicks,
       (SELECT count(*) FROM (SELECT DISTINCT link_index, recipient_id FROM events l
                              WHERE l.campaign_id = e.campaign_id AND l.kind = 'click') x) AS unique_link_clicks,
       count(*) FILTER (WHERE kind = 'open' AND is_machine) AS machine_opens,
       count(*) FILTER (WHERE kind = 'click' AND is_machine) AS machine_clicks,
       (SELECT sum(messages) FROM campaign_sends s WHERE s.campaign_id = e.campaign_id)::bigint AS sent
FROM events e GROUP BY campaign_id
"""
_SUMMARY_COLUMNS = ("campaign_id", "opens", "unique_opens", "human_opens", "human_unique_opens", "clicks",
                    "unique_clicks", "human_clicks", "human_unique_clicks", "unique_link_clicks", "machine_opens",
                    "machine_clicks", "sent")  # fmt: skip

_LINKS = """
SELECT campaign_id, link_index, count(*) AS clicks, count(DISTINCT recipient_id) AS unique_clicks,
       count(*) FILTER (WHERE NOT is_machine) AS human_clicks,
       count(DISTINCT recipient_id) FILTER (WHERE NOT is_machine) AS human_unique_clicks,
       min(url) AS url, min(link_name) AS link_name
FROM events WHERE kind = 'click' GROUP BY campaign_id, link_index
"""

# New uniques per bucket: each recipient counted at their first event (first human event).
_SERIES = """
WITH firsts AS (
    SELECT campaign_id, kind, recipient_id, min(occurred_at) AS f,
           min(occurred_at) FILTER (WHERE NOT is_machine) AS fh
    FROM events GROUP BY 1, 2, 3
),
b AS (
    SELECT campaign_id, kind, date_trunc($1, occurred_at) AS at, 1 AS ev, (NOT is_machine)::int AS hev,
           0 AS u, 0 AS hu FROM events
    UNION ALL SELECT campaign_id, kind, date_trunc($1, f), 0, 0, 1, 0 FROM firsts
    UNION ALL SELECT campaign_id, kind, date_trunc($1, fh), 0, 0, 0, 1 FROM firsts WHERE fh IS NOT NULL
)
SELECT campaign_id, at, kind, sum(ev)::bigint AS events, sum(hev)::bigint AS human_events,
       sum(u)::bigint AS new_uniques, sum(hu)::bigint AS new_human_uniques
FROM b GROUP BY 1, 2, 3
"""

_TIME_TO_FIRST = """
WITH firsts AS (
    SELECT campaign_id, kind, recipient_id, min(occurred_at) AS f,
           min(occurred_at) FILTER (WHERE NOT is_machine) AS fh, min(sent_at) AS s
    FROM events GROUP BY 1, 2, 3
)
SELECT campaign_id, kind, b AS bucket, sum(u)::bigint AS recipients, sum(hu)::bigint AS human_recipients
FROM (SELECT campaign_id, kind, trackd_tto_bucket(f - s) AS b, 1 AS u, 0 AS hu FROM firsts WHERE s IS NOT NULL
      UNION ALL
      SELECT campaign_id, kind, trackd_tto_bucket(fh - s), 0, 1 FROM firsts WHERE s IS NOT NULL AND fh IS NOT NULL) x
GROUP BY 1, 2, 3
"""

_ENGAGEMENT = """
SELECT campaign_id, recipient_id,
       count(*) FILTER (WHERE kind = 'open') AS opens,
       count(*) FILTER (WHERE kind = 'open' AND NOT is_machine) AS human_opens,
       min(occurred_at) FILTER (WHERE kind = 'open') AS first_open_at,
       min(occurred_at) FILTER (WHERE kind = 'open' AND NOT is_machine) AS first_human_open_at,
       max(occurred_at) FILTER (WHERE kind = 'open') AS last_open_at,
       count(*) FILTER (WHERE kind = 'click') AS clicks,
       count(*) FILTER (WHERE kind = 'click' AND NOT is_machine) AS human_clicks,
       min(occurred_at) FILTER (WHERE kind = 'click') AS first_click_at,
       min(occurred_at) FILTER (WHERE kind = 'click' AND NOT is_machine) AS first_human_click_at,
       max(occurred_at) FILTER (WHERE kind = 'click') AS last_click_at,
       count(DISTINCT link_index) FILTER (WHERE kind = 'click') AS links_clicked,
       min(sent_at) AS sent_at
FROM events GROUP BY campaign_id, recipient_id
"""


@pytest.fixture
def db(fresh_db: asyncpg.Connection) -> asyncpg.Connection:
    return fresh_db  # every test here counts rows: a database of its own (tests/conftest.py)


def made_up(rnd: random.Random, n: int) -> list[Ev]:
    out = []
    for _ in range(n):
        kind = rnd.choice(("open", "open", "open", "click"))
        machine = rnd.random() < 0.3
        out.append(
            Ev(
                campaign=f"c{rnd.randrange(3)}",
                kind=kind,
                recipient=f"r{rnd.randrange(40)}",
                link=rnd.randrange(5) if kind == "click" else None,
                # Two and a half days: hours and UTC days both have several buckets.
                at=BASE + dt.timedelta(seconds=rnd.randrange(60 * 3600)),
                sent=BASE - dt.timedelta(seconds=rnd.randrange(3 * 86400)) if rnd.random() < 0.85 else None,
                machine=machine,
                reason=rnd.choice(REASONS) if machine else None,
            )
        )
    return out


def rows(
    records: list[asyncpg.Record], key: tuple[str, ...], columns: tuple[str, ...]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {tuple(r[k] for k in key): tuple(r[c] for c in columns) for r in records}


async def assert_views_match_events(db: asyncpg.Connection) -> None:
    await assert_exact(db)  # the rollups themselves first: a drift there would show up below anyway

    summary = await db.fetch("SELECT * FROM campaign_summary")
    expected = await db.fetch(_SUMMARY)
    key: tuple[str, ...] = ("campaign_id",)
    want = rows(expected, key, _SUMMARY_COLUMNS)
    got = rows(summary, key, _SUMMARY_COLUMNS)
    assert {k: v for k, v in got.items() if k in want} == want
    # Campaigns with a send report and no event: a row of zeros.
    assert all(v[1:-1] == (0,) * 11 for k, v in got.items() if k not in want)
    for r in summary:
        sent, hu_open, hu_click = r["sent"], r["human_unique_opens"], r["human_unique_clicks"]
        assert r["open_rate"] == (hu_open / sent if sent else None)
        assert r["click_rate"] == (hu_click / sent if sent else None)
        assert r["click_to_open_rate"] == (hu_click / hu_open if hu_open else None)

    links = await db.fetch("SELECT * FROM link_summary")
    expected = await db.fetch(_LINKS)
    link_cols = ("clicks", "unique_clicks", "human_clicks", "human_unique_clicks")
    assert rows(links, ("campaign_id", "link_index"), link_cols) == rows(
        expected, ("campaign_id", "link_index"), link_cols
    )
    totals = {r["campaign_id"]: r["clicks"] for r in summary}
    for r in links:
        assert r["url"] == f"https://example.com/{r['link_index']}"
        assert r["link_name"] == f"link-{r['link_index']}"
        assert r["click_share"] == pytest.approx(r["clicks"] / totals[r["campaign_id"]])

    cols: tuple[str, ...] = ("events", "human_events", "new_uniques", "new_human_uniques")
    hourly = await db.fetch("SELECT * FROM campaign_hourly")
    assert rows(hourly, ("campaign_id", "hour", "kind"), cols) == rows(
        await db.fetch(_SERIES, "hour"), ("campaign_id", "at", "kind"), cols
    )
    daily = await db.fetch("SELECT * FROM campaign_daily")
    per_day = rows(await db.fetch(_SERIES, "day"), ("campaign_id", "at", "kind"), cols)
    by_day = {(k[0], k[1].date(), k[2]): v for k, v in per_day.items()}
    assert rows(daily, ("campaign_id", "day", "kind"), cols) == by_day

    tto = await db.fetch("SELECT * FROM time_to_first")
    key, cols = ("campaign_id", "kind", "bucket"), ("recipients", "human_recipients")
    nonzero = {k: v for k, v in rows(tto, key, cols).items() if v != (0, 0)}
    assert nonzero == rows(await db.fetch(_TIME_TO_FIRST), key, cols)
    # Every (campaign, kind) has all eleven buckets, with their bounds and labels.
    for campaign, kind in {(r["campaign_id"], r["kind"]) for r in tto}:
        mine = sorted((r for r in tto if (r["campaign_id"], r["kind"]) == (campaign, kind)), key=lambda r: r["bucket"])
        assert [r["bucket"] for r in mine] == list(range(11))
        assert [r["upper_bound_seconds"] for r in mine][:2] == [60, 300] and mine[10]["upper_bound_seconds"] is None
        assert (mine[0]["label"], mine[9]["label"], mine[10]["label"]) == ("<1m", "<7d", ">=7d")

    engagement = await db.fetch("SELECT * FROM recipient_engagement")
    expected = await db.fetch(_ENGAGEMENT)
    key = ("campaign_id", "recipient_id")
    cols = tuple(c for c in expected[0].keys() if c not in key)
    assert rows(engagement, key, cols) == rows(expected, key, cols)

    people = await db.fetchval("SELECT count(*) FROM events WHERE NOT is_machine")
    assert await db.fetchval("SELECT count(*) FROM human_events") == people


async def test_the_views_say_what_the_events_say(db: asyncpg.Connection) -> None:
    rnd = random.Random(13)
    events = made_up(rnd, 2500)
    order = events[:]
    rnd.shuffle(order)  # arrival order is not time order (a journal that was behind)
    for at in range(0, len(order), 300):
        await insert(db, order[at : at + 300])
    await db.execute("INSERT INTO campaign_sends (campaign_id, report_id, messages) VALUES"
                     " ('c0', 'a', 300), ('c0', 'b', 25), ('c1', 'a', 0), ('c-none', 'a', 10)")  # fmt: skip
    await assert_views_match_events(db)
    # A campaign with a send report and no event yet has a row, with zeros and rates of zero.
    none = await db.fetchrow("SELECT * FROM campaign_summary WHERE campaign_id = 'c-none'")
    assert none is not None
    assert (none["sent"], none["opens"], none["open_rate"], none["click_to_open_rate"]) == (10, 0, 0.0, None)

    # Verdicts change: people judged machines and back. Every view follows.
    picked = rnd.sample(events, 600)
    verdicts = [(not e.machine, rnd.choice(REASONS) if not e.machine else None) for e in picked]
    changed = await db.fetchval(
        "SELECT trackd_revise_verdicts($1, $2, $3, $4)",
        [e.at for e in picked], [e.id for e in picked], [v[0] for v in verdicts], [v[1] for v in verdicts],
    )  # fmt: skip
    assert changed == 600
    await assert_views_match_events(db)

    # An erasure: the recipient is in no view any more, and every number is the remaining events'.
    await db.execute("SELECT trackd_erase_recipient('r7')")
    assert await db.fetchval("SELECT count(*) FROM recipient_engagement WHERE recipient_id = 'r7'") == 0
    await assert_views_match_events(db)


async def test_a_recipients_only_human_open_judged_a_machine(db: asyncpg.Connection) -> None:
    sent = BASE - dt.timedelta(minutes=3)
    only = Ev("solo", "open", "r1", None, BASE, sent, False, None)
    await insert(db, [only, Ev("solo", "open", "r1", None, BASE + dt.timedelta(hours=1), sent, True, "head")])
    before = await db.fetchrow("SELECT * FROM campaign_summary WHERE campaign_id = 'solo'")
    assert before is not None
    assert (before["unique_opens"], before["human_unique_opens"], before["machine_opens"]) == (1, 1, 1)
    await db.execute("SELECT trackd_revise_verdicts($1, $2, $3, $4)", [only.at], [only.id], [True], ["bot"])
    after = await db.fetchrow("SELECT * FROM campaign_summary WHERE campaign_id = 'solo'")
    assert after is not None
    assert (after["unique_opens"], after["human_unique_opens"], after["machine_opens"]) == (1, 0, 2)
    hist = await db.fetch(
        "SELECT label, recipients, human_recipients FROM time_to_first"
        " WHERE campaign_id = 'solo' AND kind = 'open' AND recipients + human_recipients > 0"
    )
    assert [tuple(r) for r in hist] == [("<5m", 1, 0)]
    await assert_views_match_events(db)


def scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(table, index condition) of every scan of a table in a plan; a bitmap heap scan's
    condition is its bitmap index scan's."""
    cond = plan.get("Index Cond", "")
    for child in plan.get("Plans", []):
        if plan["Node Type"] == "Bitmap Heap Scan" and child["Node Type"] == "Bitmap Index Scan":
            cond = child.get("Index Cond", "")
        else:
            yield from scans(child)
    if "Relation Name" in plan:
        yield plan["Relation Name"], cond


@pytest.mark.parametrize(
    ("view", "column"),
    [(v, "campaign_id") for v in VIEWS if v not in ("human_events", "recipient_engagement")]
    + [("recipient_engagement", "recipient_id")],
)
async def test_the_views_read_by_index_and_only_rollups(db: asyncpg.Connection, view: str, column: str) -> None:
    """For one campaign, every table a campaign view reads is read through an index on that
    campaign, and `events` is not read at all: the cost does not grow with other campaigns or
    with `events`. recipient_engagement, for one recipient, reads their events through the hash
    index on recipient_id. Sequential scans are forbidden: on these tiny tables the planner would
    prefer them."""
    await insert(db, made_up(random.Random(1), 200))
    await db.execute("SET enable_seqscan = off")
    try:
        (plan,) = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) SELECT * FROM {view} WHERE {column} = 'c0'"))
    finally:
        await db.execute("RESET enable_seqscan")
    read = list(scans(plan["Plan"]))
    assert read, plan
    for table, cond in read:
        assert view == "recipient_engagement" or not table.startswith("events"), (view, table)
        assert column in cond, (view, table, cond)


async def test_the_time_to_first_bounds_are_the_rollups(db: asyncpg.Connection) -> None:
    await insert(db, made_up(random.Random(2), 100))
    bounds = await db.fetchval("SELECT trackd_tto_bounds()")
    view = await db.fetch("SELECT DISTINCT bucket, upper_bound_seconds FROM time_to_first ORDER BY bucket")
    assert [r["upper_bound_seconds"] for r in view] == [*bounds, None]


async def test_every_cookbook_query_of_the_docs_runs(db: asyncpg.Connection) -> None:
    """docs/analytics.md's `-- cookbook:` queries, with psql's :'campaign' and :'recipient' bound,
    run and answer (the same extraction `make bench-stats` times)."""
    events = made_up(random.Random(5), 800)
    await insert(db, events)
    queries = cookbook()
    assert len(queries) >= 10, sorted(queries)
    for name, sql in queries.items():
        rows = await db.fetch(bind(sql, "c0", "r3"))
        assert rows, name
    # The approximate median lands in the bucket that holds the middle recipient.
    median = await db.fetchrow(bind(queries["approximate median time to first open"], "c0", "r3"))
    assert median is not None
    hist = await db.fetch("SELECT label, human_recipients FROM time_to_first"
                          " WHERE campaign_id = 'c0' AND kind = 'open' ORDER BY bucket")  # fmt: skip
    total, upto = sum(r["human_recipients"] for r in hist), 0
    for r in hist:
        upto += r["human_recipients"]
        if upto >= total / 2:
            assert median["median_bucket"] == r["label"]
            break
