"""The analytics API (app.analytics, #13) against a real server and PostgreSQL: every number of
stats, links, series and the recipient view equals a recomputation from `events` (made-up events
with machine and human mixes, several links, several hours and days), before and after an
erasure; the event feed hands out every event once, across a writer restart; bad input is a 4xx
JSON error."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import analytics
from app.db import migrate
from tests.rollup_support import BASE, REASONS, Ev, assert_exact, insert
from tests.support import API_KEY, ServerProcess, wait_for_count

pytestmark = pytest.mark.e2e

KINDS = {"open": "opens", "click": "clicks"}


def made_up(campaign: str, seed: int, n: int = 240, recipients: int = 25) -> list[Ev]:
    """Opens and clicks over 30 hours (two UTC days), a third machines' with every reason, four links."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rnd.choice(("open", "open", "click"))
        machine = rnd.random() < 0.35
        out.append(Ev(
            campaign=campaign, kind=kind, recipient=f"{campaign}.r{rnd.randrange(recipients)}",
            link=rnd.randrange(4) if kind == "click" else None,
            at=BASE + dt.timedelta(seconds=rnd.randrange(30 * 3600)),
            sent=BASE - dt.timedelta(seconds=rnd.choice((0, 30, 600, 7000))) if rnd.random() < 0.8 else None,
            machine=machine, reason=rnd.choice(REASONS) if machine else None,
        ))  # fmt: skip
    return out


async def insert_in_batches(db: asyncpg.Connection, events: list[Ev], batches: int = 6) -> None:
    size = -(-len(events) // batches)
    for i in range(0, len(events), size):
        await insert(db, events[i : i + size])


def iso(at: dt.datetime) -> str:
    return analytics.iso(at) or ""


def recompute(rows: list[asyncpg.Record]) -> dict[str, Any]:
    """Every number of the API, counted from the campaign's events in Python."""
    out: dict[str, Any] = {}
    by = defaultdict(list)
    for r in rows:
        by[r["kind"]].append(r)
    machine: dict[str, dict[str, int]] = {"opens": {}, "clicks": {}}
    for kind, plural in KINDS.items():
        evs = by[kind]
        human = [r for r in evs if not r["is_machine"]]
        out[plural] = len(evs)
        out[f"unique_{plural}"] = len({r["recipient_id"] for r in evs})
        out[f"human_{plural}"] = len(human)
        out[f"human_unique_{plural}"] = len({r["recipient_id"] for r in human})
        out[f"machine_{plural}"] = len(evs) - len(human)
        for r in evs:
            if r["is_machine"]:
                reason = r["machine_reason"] or "machine"
                machine[plural][reason] = machine[plural].get(reason, 0) + 1
    out["machine"] = {k: dict(sorted(v.items())) for k, v in machine.items()}
    out["unique_link_clicks"] = len({(r["link_index"], r["recipient_id"]) for r in by["click"]})
    for kind in KINDS:
        firsts: dict[str, list[Any]] = {}
        for r in by[kind]:
            f = firsts.setdefault(r["recipient_id"], [None, None, None])
            f[0] = r["occurred_at"] if f[0] is None else min(f[0], r["occurred_at"])
            if not r["is_machine"]:
                f[1] = r["occurred_at"] if f[1] is None else min(f[1], r["occurred_at"])
            if r["sent_at"] is not None:
                f[2] = r["sent_at"] if f[2] is None else min(f[2], r["sent_at"])
        buckets = [[0, 0] for _ in range(11)]
        for first, first_human, sent in firsts.values():
            if sent is not None:
                buckets[_tto_bucket(first - sent)][0] += 1
                if first_human is not None:
                    buckets[_tto_bucket(first_human - sent)][1] += 1
        out[f"tto_{kind}"] = buckets
        out[f"firsts_{kind}"] = firsts
    links: dict[int, dict[str, Any]] = {}
    for r in by["click"]:
        link = links.setdefault(r["link_index"], {"index": r["link_index"], "name": r["link_name"], "url": r["url"],
                                                  "clicks": 0, "human_clicks": 0, "u": set(), "hu": set()})  # fmt: skip
        link["clicks"] += 1
        link["u"].add(r["recipient_id"])
        if not r["is_machine"]:
            link["human_clicks"] += 1
            link["hu"].add(r["recipient_id"])
    out["links"] = [
        {"index": i, "name": v["name"], "url": v["url"], "clicks": v["clicks"], "unique_clicks": len(v["u"]),
         "human_clicks": v["human_clicks"], "human_unique_clicks": len(v["hu"])}
        for i, v in sorted(links.items())
    ]  # fmt: skip
    return out


def _tto_bucket(delay: dt.timedelta) -> int:
    return sum(1 for bound in analytics.TTO_BOUNDS if delay.total_seconds() > bound)


def expected_series(rows: list[asyncpg.Record], expect: dict[str, Any], interval: str) -> list[dict[str, Any]]:
    def start(at: dt.datetime) -> str:
        at = at.astimezone(dt.UTC)
        cut = {"minute": at.replace(second=0, microsecond=0), "hour": at.replace(minute=0, second=0, microsecond=0),
               "day": at.replace(hour=0, minute=0, second=0, microsecond=0)}[interval]  # fmt: skip
        return iso(cut)

    buckets: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        plural = KINDS[r["kind"]]
        b = buckets[start(r["occurred_at"])]
        b[plural] += 1
        b[f"human_{plural}"] += 0 if r["is_machine"] else 1
    for kind, plural in KINDS.items():
        for first, first_human, _ in expect[f"firsts_{kind}"].values():
            buckets[start(first)][f"unique_{plural}"] += 1
            if first_human is not None:
                buckets[start(first_human)][f"human_unique_{plural}"] += 1
    fields = ("opens", "unique_opens", "clicks", "unique_clicks", "human_opens", "human_clicks",
              "human_unique_opens", "human_unique_clicks")  # fmt: skip
    return [{"start": s, **{f: buckets[s][f] for f in fields}} for s in sorted(buckets)]


async def events_of(db: asyncpg.Connection, campaign: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM events WHERE campaign_id = $1", campaign)


def check_everything(api: httpx.Client, campaign: str, rows: list[asyncpg.Record]) -> dict[str, Any]:
    """stats, links and series of `campaign` equal the recomputation from `rows`."""
    expect = recompute(rows)
    stats = api.get(f"/v1/campaigns/{campaign}/stats").json()
    for field in ("opens", "unique_opens", "clicks", "unique_clicks", "human_opens", "human_unique_opens",
                  "human_clicks", "human_unique_clicks", "machine_opens", "machine_clicks", "machine",
                  "unique_link_clicks"):  # fmt: skip
        assert stats[field] == expect[field], field
    for kind in KINDS:
        buckets = stats[f"time_to_first_{kind}"]["buckets"]
        assert [b["le_seconds"] for b in buckets] == [*analytics.TTO_BOUNDS, None]
        assert [[b["recipients"], b["human_recipients"]] for b in buckets] == expect[f"tto_{kind}"], kind
    links = api.get(f"/v1/campaigns/{campaign}/links").json()
    assert links["campaign_id"] == campaign
    assert [link for link in links["links"] if link["clicks"]] == expect["links"]
    assert all(link["unique_clicks"] == 0 for link in links["links"] if not link["clicks"])
    for interval in ("minute", "hour", "day"):
        params = {"interval": interval, "since": "2026-11-20T00:00:00Z", "until": "2026-11-22T00:00:00Z"}
        series = api.get(f"/v1/campaigns/{campaign}/series", params=params)
        assert series.status_code == 200, series.text
        assert series.json()["interval"] == interval
        assert series.json()["series"] == expected_series(rows, expect, interval), interval
    return stats


@pytest.fixture
def campaign() -> str:
    return f"an-{uuid.uuid4()}"


async def test_stats_links_and_series_equal_a_recomputation(api: httpx.Client, db: asyncpg.Connection,
                                                            campaign: str) -> None:  # fmt: skip
    events = made_up(campaign, 1)
    await insert_in_batches(db, events)
    await insert(db, events[:50])  # a replay counts nothing
    await assert_exact(db, campaign)
    rows = await events_of(db, campaign)
    assert len(rows) == len(events)
    stats = check_everything(api, campaign, rows)
    expect = recompute(rows)
    assert stats["first_at"] == min(r["occurred_at"] for r in rows).timestamp()
    assert stats["last_at"] == max(r["occurred_at"] for r in rows).timestamp()
    assert stats["sent"] is None and stats["open_rate"] is None and stats["click_rate"] is None
    assert stats["click_to_open_rate"] == expect["human_unique_clicks"] / expect["human_unique_opens"]
    assert set(stats["machine"]["opens"]) <= set(REASONS)
    # The hours add up to the campaign's uniques (new uniques per bucket).
    window = {
        "interval": "hour",
        "since": str(BASE.timestamp()),
        "until": str((BASE + dt.timedelta(days=2)).timestamp()),
    }
    hours = api.get(f"/v1/campaigns/{campaign}/series", params=window).json()["series"]
    assert sum(h["unique_opens"] for h in hours) == stats["unique_opens"]
    assert sum(h["human_unique_clicks"] for h in hours) == stats["human_unique_clicks"]
    # A range outside the data: no buckets.
    empty = api.get(f"/v1/campaigns/{campaign}/series", params={"interval": "day", "since": "2020-01-01",
                                                                 "until": "2020-02-01"}).json()  # fmt: skip
    assert empty["series"] == []


async def test_an_unknown_campaign_has_zeros(api: httpx.Client) -> None:
    stats = api.get("/v1/campaigns/nothing-here/stats").json()
    assert stats["opens"] == stats["unique_clicks"] == stats["unique_link_clicks"] == 0
    assert stats["first_at"] is None and stats["sent"] is None and stats["click_to_open_rate"] is None
    assert stats["machine"] == {"opens": {}, "clicks": {}}
    assert stats["time_to_first_open"]["recipients"] == 0 and len(stats["time_to_first_open"]["buckets"]) == 11
    assert api.get("/v1/campaigns/nothing-here/links").json() == {"campaign_id": "nothing-here", "links": []}
    assert api.get("/v1/campaigns/nothing-here/series").json()["series"] == []
    feed = api.get("/v1/events", params={"campaign_id": "nothing-here"}).json()
    assert feed == {"events": [], "next": analytics.encode_cursor(*analytics.START)}


async def test_time_to_first_bounds_are_the_databases(db: asyncpg.Connection, api: httpx.Client) -> None:
    assert tuple(await db.fetchval("SELECT trackd_tto_bounds()")) == analytics.TTO_BOUNDS


async def test_sends_give_the_rates(api: httpx.Client, db: asyncpg.Connection, campaign: str) -> None:
    await insert_in_batches(db, made_up(campaign, 2))
    first = api.post(f"/v1/campaigns/{campaign}/sends", json={"messages": 100, "report_id": "batch-1"})
    assert first.status_code == 201, first.text
    assert first.json() == {"campaign_id": campaign, "report_id": "batch-1", "sent": 100, "recorded": True}
    again = api.post(f"/v1/campaigns/{campaign}/sends", json={"messages": 100, "report_id": "batch-1"})
    assert again.status_code == 200 and again.json()["sent"] == 100 and not again.json()["recorded"]
    other = api.post(f"/v1/campaigns/{campaign}/sends", json={"messages": 50})
    assert other.status_code == 201 and other.json()["sent"] == 150
    uuid.UUID(other.json()["report_id"])
    assert api.post(f"/v1/campaigns/{campaign}/sends", json={"messages": 0}).json()["sent"] == 150
    stats = api.get(f"/v1/campaigns/{campaign}/stats").json()
    assert stats["sent"] == 150
    assert stats["open_rate"] == stats["human_unique_opens"] / 150
    assert stats["click_rate"] == stats["human_unique_clicks"] / 150
    assert await db.fetchval("SELECT sum(messages) FROM campaign_sends WHERE campaign_id = $1", campaign) == 150


def feed_all(api: httpx.Client, params: dict[str, Any], after: str | None = None,
             pages: int | None = None) -> tuple[list[dict[str, Any]], str]:  # fmt: skip
    """Pages of the feed until nothing is new (or `pages` were read)."""
    out: list[dict[str, Any]] = []
    read = 0
    while pages is None or read < pages:
        response = api.get("/v1/events", params={**params, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        read += 1
        if not body["events"] and (after is None or body["next"] == after):
            return out, body["next"]  # nothing new (an empty page may still move past erased batches)
        out += body["events"]
        after = body["next"]
    assert after is not None
    return out, after


async def test_the_feed_hands_out_every_event_once_in_order(api: httpx.Client, db: asyncpg.Connection,
                                                            campaign: str) -> None:  # fmt: skip
    other = f"{campaign}-other"
    events = made_up(campaign, 3, n=120)
    for i in range(0, 120, 20):  # batches of both campaigns interleaved
        await insert(db, events[i : i + 20])
        await insert(db, made_up(other, 4 + i, n=7))
    ids = {str(r["id"]) for r in await events_of(db, campaign)}
    assert len(ids) == 120

    mine, cursor = feed_all(api, {"campaign_id": campaign, "limit": 7})
    in_order = [str(r["id"]) for r in await db.fetch(
        "SELECT id FROM events WHERE campaign_id = $1 ORDER BY xid, id", campaign)]  # fmt: skip
    assert [e["id"] for e in mine] == in_order and set(in_order) == ids
    assert {e["campaign_id"] for e in mine} == {campaign}
    # Nothing new: the same cursor back; new events come after it.
    more = made_up(campaign, 9, n=5)
    await insert(db, more)
    newer, _ = feed_all(api, {"campaign_id": campaign}, after=cursor)
    assert {e["id"] for e in newer} == {str(e.id) for e in more}

    # The whole feed from the start holds both campaigns' events once each, in the same order.
    everything, _ = feed_all(api, {"limit": 500})
    assert len({e["id"] for e in everything}) == len(everything)
    assert [e["id"] for e in everything if e["campaign_id"] == campaign] == [e["id"] for e in mine + newer]
    assert len([e for e in everything if e["campaign_id"] == other]) == 42

    row = await db.fetchrow("SELECT * FROM events WHERE id = $1", uuid.UUID(mine[0]["id"]))
    first = mine[0]
    assert first["occurred_at"] == iso(row["occurred_at"]) and first["kind"] == row["kind"]
    assert (first["recipient_id"], first["link_index"], first["link_name"], first["url"], first["part"]) == (
        row["recipient_id"], row["link_index"], row["link_name"], row["url"], row["part"])  # fmt: skip
    assert first["is_machine"] == row["is_machine"] and first["machine_reason"] == row["machine_reason"]
    assert set(first) == {"id", "occurred_at", "kind", "campaign_id", "recipient_id", "link_index", "link_name",
                          "url", "part", "message_id", "is_machine", "machine_reason", "sent_at", "user_agent",
                          "ip"}  # fmt: skip


async def test_the_feed_passes_batches_whose_events_were_erased(api: httpx.Client, db: asyncpg.Connection,
                                                                campaign: str) -> None:  # fmt: skip
    gone = [Ev(campaign, "open", f"{campaign}.gone", None, BASE + dt.timedelta(seconds=i), None, False, None)
            for i in range(5)]  # fmt: skip
    for e in gone:  # five batches, each of one event of a recipient about to be erased
        await insert(db, [e])
    kept = made_up(campaign, 5, n=3)
    await insert(db, kept)
    assert api.delete(f"/v1/recipients/{campaign}.gone").json()["erased_events"] == 5
    start = api.get("/v1/events", params={"campaign_id": campaign, "limit": 2}).json()
    assert start["events"] == [] or {e["id"] for e in start["events"]} <= {str(e.id) for e in kept}
    rest, _ = feed_all(api, {"campaign_id": campaign, "limit": 2}, after=start["next"])
    assert {e["id"] for e in start["events"] + rest} == {str(e.id) for e in kept}


async def test_the_feed_queries_use_indexes(db: asyncpg.Connection, api: httpx.Client) -> None:
    await db.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway: ask what an index gives
    try:
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + analytics.FEED_SQL, "0", uuid.UUID(int=0), 10))
        assert "events_feed_idx" in plan or "xid_id_idx" in plan, plan
        assert "Seq Scan" not in plan, plan
        args = ("c", ["1", "2"], "0", uuid.UUID(int=0), dt.date(2026, 11, 20), 10)
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + analytics.FEED_CAMPAIGN_SQL, *args))
        assert "Index" in plan and "Seq Scan" not in plan, plan
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + analytics.FEED_BATCHES_SQL, "c", "0", 10))
        assert "campaign_batches_pkey" in plan, plan
    finally:
        await db.execute("RESET enable_seqscan")


async def test_erasure_leaves_what_the_remaining_events_give(api: httpx.Client, db: asyncpg.Connection,
                                                             campaign: str) -> None:  # fmt: skip
    events = made_up(campaign, 6)
    await insert_in_batches(db, events)
    victim = events[0].recipient
    theirs = sum(1 for e in events if e.recipient == victim)
    before = api.get(f"/v1/recipients/{victim}").json()
    assert [c["campaign_id"] for c in before["campaigns"]] == [campaign] and before["erased_at"] is None
    response = api.delete(f"/v1/recipients/{victim}")
    assert response.status_code == 200, response.text
    assert response.json() == {"recipient_id": victim, "erased_events": theirs}
    await assert_exact(db, campaign)
    rows = await events_of(db, campaign)
    assert len(rows) == len(events) - theirs and victim not in {r["recipient_id"] for r in rows}
    check_everything(api, campaign, rows)
    after = api.get(f"/v1/recipients/{victim}").json()
    assert after["campaigns"] == [] and after["erased_at"] is not None
    assert api.delete(f"/v1/recipients/{victim}").json()["erased_events"] == 0


async def test_a_recipients_engagement(api: httpx.Client, db: asyncpg.Connection, campaign: str) -> None:
    events = made_up(campaign, 7) + made_up(f"{campaign}-b", 7)
    await insert_in_batches(db, events)
    who = f"{campaign}.r3"
    await insert(db, [Ev(f"{campaign}-b", "open", who, None, BASE, None, True, "prefetch")])
    body = api.get(f"/v1/recipients/{who}").json()
    assert body["recipient_id"] == who and not body["truncated"]
    rows = await db.fetch("SELECT * FROM events WHERE recipient_id = $1", who)
    assert [c["campaign_id"] for c in body["campaigns"]] == sorted({r["campaign_id"] for r in rows})
    for c in body["campaigns"]:
        mine = [r for r in rows if r["campaign_id"] == c["campaign_id"]]
        for e in c["engagement"]:
            evs = [r for r in mine if r["kind"] == e["kind"]]
            human = [r["occurred_at"] for r in evs if not r["is_machine"]]
            assert (e["events"], e["human_events"]) == (len(evs), len(human))
            assert e["first_at"] == iso(min(r["occurred_at"] for r in evs))
            assert e["last_at"] == iso(max(r["occurred_at"] for r in evs))
            assert e["first_human_at"] == (iso(min(human)) if human else None)
        assert {e["kind"] for e in c["engagement"]} == {r["kind"] for r in mine}
        clicks = [r for r in mine if r["kind"] == "click"]
        assert [(link["index"], link["clicks"]) for link in c["links"]] == sorted(
            (i, sum(1 for r in clicks if r["link_index"] == i)) for i in {r["link_index"] for r in clicks}
        )
        assert all(link["url"] == f"https://example.com/{link['index']}" for link in c["links"])
    nobody = api.get("/v1/recipients/nobody-at-all").json()
    assert nobody == {"recipient_id": "nobody-at-all", "erased_at": None, "campaigns": [], "truncated": False}


BAD = [
    ("get", "/v1/campaigns/c/series", {"interval": "week"}, None),
    ("get", "/v1/campaigns/c/series", {"interval": "minute", "since": "2026-01-01", "until": "2026-03-01"}, None),
    ("get", "/v1/campaigns/c/series", {"interval": "hour", "since": "1000", "until": "10"}, None),
    ("get", "/v1/campaigns/c/series", {"since": "yesterday"}, None),
    ("get", "/v1/campaigns/c/series", {"until": "99999999999"}, None),
    ("get", "/v1/campaigns/c/series", {"since": "nan"}, None),
    ("get", "/v1/events", {"after": "not-a-cursor"}, None),
    ("get", "/v1/events", {"after": analytics.encode_cursor(1, uuid.UUID(int=1))[:-2]}, None),
    ("get", "/v1/events", {"after": "A" * 34}, None),
    ("get", "/v1/events", {"limit": "0"}, None),
    ("get", "/v1/events", {"limit": "10001"}, None),
    ("get", "/v1/events", {"limit": "many"}, None),
    ("get", "/v1/events", {"campaign_id": "a\x00b"}, None),
    ("post", "/v1/campaigns/c/sends", None, {"messages": -1}),
    ("post", "/v1/campaigns/c/sends", None, {"messages": "5"}),
    ("post", "/v1/campaigns/c/sends", None, {"messages": 1.5}),
    ("post", "/v1/campaigns/c/sends", None, {"messages": 2**63}),
    ("post", "/v1/campaigns/c/sends", None, {}),
    ("post", "/v1/campaigns/c/sends", None, {"messages": 1, "report_id": ""}),
    ("post", "/v1/campaigns/c/sends", None, {"messages": 1, "report_id": "a\x00b"}),
    ("post", "/v1/campaigns/c/sends", None, {"messages": 1, "extra": True}),
    ("post", "/v1/campaigns/c/sends", None, [1]),
    ("get", "/v1/recipients/a%00b", None, None),
    ("delete", "/v1/recipients/a%00b", None, None),
    ("get", "/v1/campaigns/a%00b/links", None, None),
    ("get", "/v1/campaigns/a%00b/series", None, None),
]


@pytest.mark.parametrize(("method", "path", "params", "body"), BAD)
def test_bad_input_is_a_4xx_json_error(api: httpx.Client, method: str, path: str, params: dict[str, str] | None,
                                       body: object) -> None:  # fmt: skip
    response = api.request(method, path, params=params, json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json() or "detail" in response.json()


def test_the_routes_need_the_api_key(server: ServerProcess) -> None:
    for method, path in (("get", "/v1/campaigns/c/links"), ("get", "/v1/campaigns/c/series"), ("get", "/v1/events"),
                         ("post", "/v1/campaigns/c/sends"), ("get", "/v1/recipients/r"),
                         ("delete", "/v1/recipients/r")):  # fmt: skip
        response = httpx.request(method, f"{server.base_url}{path}", json={"messages": 1}, timeout=5)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized", path


def test_cursors_round_trip() -> None:
    position = (2**40 + 5, uuid.uuid4())
    cursor = analytics.encode_cursor(*position)
    assert analytics.decode_cursor(cursor) == position
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor


def _path(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


async def test_the_feed_resumes_across_a_writer_restart(tmp_path: Path, fresh_database_url: str) -> None:
    """Events recorded by a real server, the feed read part way, the server stopped (SIGTERM) and a
    new one started on the same database, more events recorded: resuming from the cursor gives
    every event exactly once, and none is missing."""
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await migrate(conn)
        campaign = "feed-restart"
        seen: list[dict[str, Any]] = []
        cursors: dict[str, str | None] = {"all": None, "campaign": None}
        mine: list[dict[str, Any]] = []
        for round_ in range(2):
            with ServerProcess(tmp_path / f"srv{round_}", fresh_database_url) as srv:
                headers = {"Authorization": f"Bearer {API_KEY}"}
                with httpx.Client(base_url=srv.base_url, headers=headers, timeout=10) as api:
                    for i in range(6):
                        signed = api.post("/v1/tracking-urls", json={
                            "campaign_id": campaign if i % 2 else "feed-other", "recipient_id": f"r{round_}-{i}",
                            "links": ["https://example.com/a", "https://example.com/b"]}).json()  # fmt: skip
                        for url in (signed["open_url"], *signed["click_urls"]):
                            assert httpx.get(srv.base_url + _path(url), timeout=5).status_code in (200, 302)
                    await wait_for_count(conn, "SELECT count(*) FROM events", expected=18 * (round_ + 1), timeout=10)
                    # Part way: a few pages of the whole feed and of the campaign's.
                    page, cursors["all"] = feed_all(api, {"limit": 5}, after=cursors["all"], pages=2)
                    seen += page
                    page, cursors["campaign"] = feed_all(api, {"campaign_id": campaign, "limit": 4},
                                                         after=cursors["campaign"], pages=2)  # fmt: skip
                    mine += page
            # Stopped with SIGTERM (ServerProcess.stop): the next round is a new process.
        with ServerProcess(tmp_path / "srv-last", fresh_database_url) as srv:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            with httpx.Client(base_url=srv.base_url, headers=headers, timeout=10) as api:
                rest, _ = feed_all(api, {"limit": 5}, after=cursors["all"])
                seen += rest
                rest, _ = feed_all(api, {"campaign_id": campaign, "limit": 4}, after=cursors["campaign"])
                mine += rest
        ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM events ORDER BY xid, id")]
        assert len(ids) == 36
        assert [e["id"] for e in seen] == ids  # every event once, in (xid, id) order
        ours = [str(r["id"]) for r in await conn.fetch(
            "SELECT id FROM events WHERE campaign_id = $1 ORDER BY xid, id", campaign)]  # fmt: skip
        assert [e["id"] for e in mine] == ours and len(ours) == 18
        assert {e["ip"] for e in seen} == {"127.0.0.0/24"}
    finally:
        await conn.close()


async def test_the_machine_breakdown_counts_an_event_under_each_of_its_reasons(fresh_db: asyncpg.Connection) -> None:
    """machine_reason holds several codes (docs/engagement.md): stats count an event under each."""

    from app.analytics import STATS_SQL, stats
    from tests.rollup_support import BASE, Ev, insert

    at = BASE + dt.timedelta(minutes=5)
    await insert(fresh_db, [
        Ev("multi", "click", "r1", 0, at, BASE, True, "scanner_network,burst"),
        Ev("multi", "click", "r1", 1, at + dt.timedelta(seconds=0.3), BASE, True, "burst"),
        Ev("multi", "click", "r2", 0, at, BASE, False, None),
        Ev("multi", "open", "r3", None, at, BASE, True, "apple_mpp"),
    ])  # fmt: skip
    got = stats("multi", await fresh_db.fetch(STATS_SQL, "multi"))
    assert got["machine"] == {"opens": {"apple_mpp": 1}, "clicks": {"burst": 2, "scanner_network": 1}}
    assert (got["machine_clicks"], got["human_clicks"], got["machine_opens"]) == (2, 1, 1)
