"""`make bench-stats` (issue 13): the read side at size. A campaign of BENCH_STATS_EVENTS events
(default 10,000,000) from BENCH_STATS_EVENTS / 5 recipients is built through the writer's own path,
so that every rollup is the one the trigger keeps; then a real `trackd serve` answers stats, links,
series and the event feed, and the analyst cookbook of docs/analytics.md runs through asyncpg.

    make bench-stats                                   # 10M events: about 5-10 minutes here
    BENCH_STATS_EVENTS=200000 make bench-stats         # a dry run: about a minute

The build: events as the hot path records them (app.copyrows.RowEncoder rows over token claims),
appended to a real app.journal.Journal and shipped by app.writer.Writer (COPY into `events`, the
statement trigger keeping the rollups), a chunk at a time so that memory stays flat. The claims are
made with the token layout of trackd_links.tokens, checked byte for byte against KeyRing-signed
tokens for a sample (signing 10M tokens would take minutes and measure nothing here). 3 opens to
1 click over 8 links (the first links clicked most), about 15 % machine user agents (Apple's privacy
proxy, a security scanner, a crawler, HEAD requests), receipt times over 48 hours decaying as real
campaigns do, sent_at in every token (sends spread over the half hour before the first event).

Then each endpoint BENCH_STATS_REQUESTS times (default 300) back to back over one keep-alive
connection, and each cookbook query BENCH_STATS_QUERIES times (default 100): p50 and p99 against
the issue's targets (p50 < 10 ms, p99 < 50 ms), PASS/FAIL per line. An endpoint the server does not
have (404) is reported as such. BENCH_STATS_TRACKD_ROOT serves another checkout (one with the
analytics API while it is not merged) against the same database. Results: BENCH_OUT (default
docs/bench/stats.json) and the lines printed, to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import random
import re
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import httpx

from app.copyrows import RowEncoder
from app.db import create_pool, migrate
from app.events import EventIds
from app.journal import Journal
from app.metrics import Metrics
from app.settings import FsyncPolicy, Settings
from app.writer import Writer
from loadtests import harness
from loadtests.bench_writer import _drain, _journal
from trackd_links.tokens import FLAG_LINK_NAME, KIND_CLICK, KIND_OPEN, KeyRing

ROOT = harness.ROOT
COOKBOOK = ROOT / "docs" / "analytics.md"
P50_TARGET_MS = 10.0
P99_TARGET_MS = 50.0
CAMPAIGN = "bench-stats"
LINKS = 8
LINK_WEIGHTS = (30, 20, 14, 10, 8, 7, 6, 5)
SPAN_S = 48 * 3600
DECAY_S = 6 * 3600  # most opens come in the first hours
CHUNK = 200_000  # events generated, journaled and written at a time
_URLS = [f"https://shop.example.com/spring/item-{i}?utm_source=mail&utm_campaign=spring" for i in range(LINKS)]
_NAMES = ["hero", "cta", "item-1", "item-2", "item-3", "footer-shop", "footer-blog", "unsubscribe"]

# (user agent, is_head, share): about 15 % machines. "Mozilla/5.0" alone is Apple's privacy proxy
# for an open (for a click it is nobody in particular: a person); Google's image proxy is a person.
_PEOPLE = [
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    b"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1",
]
_APPLE = b"Mozilla/5.0"
_SCANNER = b"Mozilla/5.0 (compatible; Barracuda Sentinel URL Scanner)"
_BOT = b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def _field(value: str) -> bytes:
    data = value.encode("utf-8")
    return bytes((len(data),)) + data


_CAMPAIGN_FIELD = _field(CAMPAIGN)
_OPEN_HEAD = struct.Struct(">IB")
_CLICK_HEAD = struct.Struct(">IHB")


def open_claims(recipient: str, sent_at: int) -> bytes:
    """What KeyRing.verify returns for sign_open(CAMPAIGN, recipient, sent_at=sent_at)."""
    return _OPEN_HEAD.pack(sent_at, 0) + _CAMPAIGN_FIELD + _field(recipient)


def click_claims(recipient: str, link: int, sent_at: int) -> bytes:
    """What KeyRing.verify returns for sign_click(CAMPAIGN, recipient, link, _URLS[link],
    sent_at=sent_at, link_name=_NAMES[link], part='html')."""
    flags = 1 | FLAG_LINK_NAME  # part html (1), a link name follows the ids
    return (_CLICK_HEAD.pack(sent_at, link, flags) + _CAMPAIGN_FIELD + _field(recipient) + _field(_NAMES[link])
            + _URLS[link].encode("ascii"))  # fmt: skip


def check_claims(sample: int = 50) -> None:
    """The claims made here are the ones real signed tokens carry."""
    ring = KeyRing.from_specs([harness.SIGNING_KEYS])
    for i in range(sample):
        recipient, sent, link = f"r-{i:07d}", 1_800_000_000 + i, i % LINKS
        assert ring.verify(ring.sign_open(CAMPAIGN, recipient, sent_at=sent), KIND_OPEN) == open_claims(recipient, sent)
        token = ring.sign_click(CAMPAIGN, recipient, link, _URLS[link], sent_at=sent, link_name=_NAMES[link],
                                part="html")  # fmt: skip
        assert ring.verify(token, KIND_CLICK) == click_claims(recipient, link, sent)


@dataclass
class Campaign:
    events: int
    recipients: int
    base: dt.datetime  # the hour of the first event

    @property
    def base_s(self) -> int:
        return int(self.base.timestamp())

    def sent_at(self, r: int) -> int:
        return self.base_s - 60 - r % 1800

    def offset_s(self, i: int) -> float:
        """Receipt time of the i-th event after base: increasing in i, most of it early."""
        u = (i + 0.5) / self.events
        return -DECAY_S * math.log(1 - u * (1 - math.exp(-SPAN_S / DECAY_S)))


def chunk_rows(encoder: RowEncoder, ids: EventIds, c: Campaign, start: int, stop: int,
               rnd: random.Random) -> list[tuple[bytes, int]]:  # fmt: skip
    client = encoder.client("198.51.100.7", None)
    out = []
    links = list(range(LINKS))
    for i in range(start, stop):
        received_us = (c.base_s * 1_000_000) + int(c.offset_s(i) * 1_000_000)
        r = rnd.randrange(c.recipients)
        recipient = f"r-{r:07d}"
        click = rnd.random() < 0.25
        u = rnd.random()
        is_head = False
        if u < 0.09:
            ua = _SCANNER if click else _APPLE
        elif u < 0.12:
            ua = _SCANNER
        elif u < 0.14:
            ua = _BOT
        elif u < 0.15:
            ua, is_head = _PEOPLE[0], True
        else:
            ua = _PEOPLE[int(u * 1000) % len(_PEOPLE)]
        if click:
            link = rnd.choices(links, LINK_WEIGHTS)[0]
            claims, kind = click_claims(recipient, link, c.sent_at(r)), KIND_CLICK
        else:
            claims, kind = open_claims(recipient, c.sent_at(r)), KIND_OPEN
        id_hi, id_lo = ids.pair(received_us // 1000)
        out.append((encoder.row(id_hi, id_lo, received_us, kind, 1 if is_head else 0, ua, client, claims), received_us))
    return out


@dataclass
class Build:
    events: int
    rows: int
    recipients_with_events: int
    writer_seconds: float
    generate_seconds: float
    drift_rows: int | None  # trackd_rollup_drift rows (None: not run, too big)
    sample_recipient: str  # one who opened and clicked: the recipient queries' argument

    @property
    def writer_events_per_s(self) -> float:
        return self.rows / self.writer_seconds


async def build(dsn: str, c: Campaign, verify: bool) -> Build:
    settings = Settings(db_pool_max=2)
    pool = await create_pool(settings, dsn)
    writer_s = generate_s = 0.0
    with tempfile.TemporaryDirectory(prefix="trackd-bench-stats-journal-") as tmp:
        journal = Journal(Path(tmp), max_bytes=1 << 40, segment_bytes=64 << 20, fsync=FsyncPolicy.never,
                          fsync_interval_s=1)  # fmt: skip
        journal.open()
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            writer = Writer(settings, journal, pool, Metrics())
            encoder, ids, rnd = RowEncoder(settings), EventIds(), random.Random(13)
            for start in range(0, c.events, CHUNK):
                t0 = time.perf_counter()
                rows = chunk_rows(encoder, ids, c, start, min(c.events, start + CHUNK), rnd)
                await _journal(journal, rows)
                t1 = time.perf_counter()
                await _drain(writer)
                t2 = time.perf_counter()
                generate_s += t1 - t0
                writer_s += t2 - t1
                done = min(c.events, start + CHUNK)
                print(f"  built {done:,} events: writer {done / writer_s:,.0f} events/s", flush=True)
            await writer.stop(30)
        finally:
            await journal.close()
        async with pool.acquire() as conn:
            # Bookkeeping over the whole build (a count DISTINCT over millions of touch rows), not
            # the service's own statements: the pool's 10 s timeout cut it short on a busy machine.
            await conn.execute("SET statement_timeout = 0")
            await conn.execute("ANALYZE")
            rows = await conn.fetchval("SELECT count(*) FROM events")
            people = await conn.fetchval(
                "SELECT sum(uniques) FROM rollup_uniques WHERE campaign_id = $1 AND kind = 'open' AND link_index = -1",
                CAMPAIGN,
            )
            recipients = await conn.fetchval(
                "SELECT count(DISTINCT recipient_id) FROM recipient_touch WHERE campaign_id = $1 AND link_index = -1",
                CAMPAIGN,
            )
            assert people is not None
            sample = await conn.fetchval(
                "SELECT c.recipient_id FROM recipient_touch c JOIN recipient_touch o ON o.campaign_id = c.campaign_id"
                " AND o.kind = 'open' AND o.link_index = -1 AND o.recipient_id = c.recipient_id"
                " WHERE c.campaign_id = $1 AND c.kind = 'click' AND c.link_index = -1 LIMIT 1",
                CAMPAIGN,
            )
    await pool.close()
    drift = await rollup_drift(dsn) if verify else None
    return Build(c.events, rows, recipients, writer_s, generate_s, drift, sample)


async def rollup_drift(dsn: str) -> int:
    """Rows of trackd_rollup_drift for the campaign: a recomputation from every event (about 3.5
    minutes at 10M here), on a connection of its own without the pool's statement timeout."""
    conn = await asyncpg.connect(dsn, command_timeout=None)
    try:
        await conn.execute("SET statement_timeout = 0")
        return len(await conn.fetch("SELECT * FROM trackd_rollup_drift($1)", CAMPAIGN))
    finally:
        await conn.close()


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    count: int
    p50_ms: float | None
    p99_ms: float | None
    note: str = ""
    failed: bool = False  # an answer other than 200

    @property
    def passed(self) -> bool:
        return not self.failed and (
            self.p50_ms is not None
            and self.p99_ms is not None
            and (self.p50_ms < P50_TARGET_MS and self.p99_ms < P99_TARGET_MS)
        )

    @property
    def is_target(self) -> bool:
        """The issue's targets are stats, links and series (and the cookbook); the feed's page
        time is reported, not judged (a page of 1,000 events is 1,000 events to encode)."""
        return not self.name.startswith(_NOT_TARGETS)

    def line(self) -> str:
        if self.p50_ms is None or self.p99_ms is None:
            return f"SKIP  {self.name}: {self.note}"
        verdict = ("PASS" if self.passed else "FAIL") if self.is_target else "INFO"
        return (f"{verdict}  {self.name}: p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms over {self.count}"
                f"{' (' + self.note + ')' if self.note else ''}")  # fmt: skip


_NOT_TARGETS = ("GET /v1/events",)


def quantile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(q * len(sorted_ms)) - 1))]


def timing(name: str, samples: list[float], note: str = "", failed: bool = False) -> Timing:
    ordered = sorted(samples)
    return Timing(name, len(ordered), quantile(ordered, 0.5), quantile(ordered, 0.99), note, failed)


def measure_http(base_url: str, c: Campaign, requests: int, budget_s: float) -> list[Timing]:
    headers = {"Authorization": f"Bearer {harness.API_KEY}"}
    day = c.base + dt.timedelta(hours=12)
    paths = {
        "GET stats": f"/v1/campaigns/{CAMPAIGN}/stats",
        "GET links": f"/v1/campaigns/{CAMPAIGN}/links",
        "GET series?interval=hour": f"/v1/campaigns/{CAMPAIGN}/series?interval=hour",
        "GET series?interval=minute (24 h)": (
            f"/v1/campaigns/{CAMPAIGN}/series?interval=minute&since={int(day.timestamp())}"
            f"&until={int((day + dt.timedelta(hours=24)).timestamp())}"
        ),
        "GET series?interval=day": f"/v1/campaigns/{CAMPAIGN}/series?interval=day",
    }
    out = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for name, path in paths.items():
            out.append(_time_gets(client, name, lambda path=path: path, requests, budget_s))  # type: ignore[misc]
        # The feed: page after page from the start, each request resuming from the last `next`.
        for name, query in (("GET /v1/events?campaign_id (page of 1000)", f"campaign_id={CAMPAIGN}&"),
                            ("GET /v1/events (all campaigns, page of 1000)", "")):  # fmt: skip
            cursor: dict[str, str] = {}

            def page(query: str = query, cursor: dict[str, str] = cursor) -> str:
                after = f"&after={cursor['next']}" if "next" in cursor else ""
                return f"/v1/events?{query}limit=1000{after}"

            out.append(_time_gets(client, name, page, requests, budget_s, cursor))
    return out


def _time_gets(client: httpx.Client, name: str, path: Callable[[], str], requests: int, budget_s: float,
               cursor: dict[str, str] | None = None) -> Timing:  # fmt: skip
    t0 = time.perf_counter()
    first = client.get(path())
    first_ms = (time.perf_counter() - t0) * 1000
    if first.status_code == 404:
        return Timing(name, 0, None, None, "HTTP 404: not on this server")
    if first.status_code != 200:  # e.g. 503: the statement timed out
        return Timing(name, 1, first_ms, first_ms, f"HTTP {first.status_code}: {first.text[:120]}", failed=True)
    samples: list[float] = []
    deadline = time.monotonic() + budget_s
    while len(samples) < requests and time.monotonic() < deadline:
        url = path()
        t0 = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            return timing(name, samples, f"HTTP {response.status_code}: {response.text[:120]}", failed=True)
        if cursor is not None:
            cursor["next"] = response.json()["next"]
    note = "" if len(samples) == requests else f"stopped at the {budget_s:.0f} s budget"
    return timing(name, samples, note)


def cookbook(path: Path = COOKBOOK) -> dict[str, str]:
    """The SQL blocks of docs/analytics.md that start with `-- cookbook: NAME`, by name."""
    blocks = re.findall(r"```sql\n(.*?)```", path.read_text("utf-8"), re.S)
    out = {}
    for block in blocks:
        m = re.match(r"-- cookbook: (.+)\n", block)
        if m:
            out[m.group(1).strip()] = block
    return out


def bind(sql: str, campaign: str, recipient: str) -> str:
    """psql's :'campaign' and :'recipient' as SQL literals."""

    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    return sql.replace(":'campaign'", literal(campaign)).replace(":'recipient'", literal(recipient))


async def measure_sql(dsn: str, runs: int, recipient: str) -> list[Timing]:
    conn = await asyncpg.connect(dsn)
    out = []
    try:
        for name, sql in cookbook().items():
            bound = bind(sql, CAMPAIGN, recipient)
            rows = await conn.fetch(bound)  # warm: plan, cache
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                await conn.fetch(bound)
                samples.append((time.perf_counter() - t0) * 1000)
            out.append(timing(f"SQL {name}", samples, f"{len(rows)} rows"))
    finally:
        await conn.close()
    return out


def run(events: int, requests: int, queries: int, budget_s: float, out: Path | None) -> int:
    check_claims()
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    c = Campaign(events, max(1, events // 5), now - dt.timedelta(hours=48))
    root = Path(os.environ.get("BENCH_STATS_TRACKD_ROOT", str(ROOT)))
    verify = events <= 1_000_000 or os.environ.get("BENCH_STATS_VERIFY") == "1"
    # BENCH_STATS_DIR keeps the database: a second run with the same size measures again
    # without building (another server, BENCH_STATS_TRACKD_ROOT, on the same data).
    kept = os.environ.get("BENCH_STATS_DIR")
    with tempfile.TemporaryDirectory(prefix="trackd-bench-stats-") as tmp:
        work = Path(kept) if kept else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        saved = work / "build.json"
        pg = harness.start_postgres(work / "pg")
        try:
            if saved.exists() and json.loads(saved.read_text())["campaign"]["events"] == events:
                state = json.loads(saved.read_text())
                base = dt.datetime.fromisoformat(state["campaign"]["base"])
                c = Campaign(events, state["campaign"]["recipients"], base)
                built = Build(**state["build"])
                print(f"reusing the {events:,} events built in {work}", flush=True)
            else:
                print(f"building {events:,} events, {c.recipients:,} recipients, through the writer ...", flush=True)
                built = asyncio.run(build(pg.dsn, c, verify))
                saved.write_text(json.dumps({"campaign": {"events": events, "recipients": c.recipients,
                                                          "base": c.base.isoformat()},
                                             "build": asdict(built)}))  # fmt: skip
            lines = [
                f"build: {built.rows:,} rows ({built.recipients_with_events:,} recipients with events) in"
                f" {built.writer_seconds:.1f} s of writer time = {built.writer_events_per_s:,.0f} events/s with"
                f" every rollup (generating rows and the journal: {built.generate_seconds:.1f} s more)",
                "rollups exact (trackd_rollup_drift empty)"
                if built.drift_rows == 0
                else f"rollup drift rows: {built.drift_rows}"
                if built.drift_rows is not None
                else "rollup drift not checked at this size (BENCH_STATS_VERIFY=1 does)",
            ]
            print("\n".join(lines), flush=True)
            server = harness.start_trackd(pg.dsn, work / "serve", root=root)
            try:
                _report_sends(server.base_url, pg.dsn, c)
                timings = measure_http(server.base_url, c, requests, budget_s)
            finally:
                server.stop()
            timings += asyncio.run(measure_sql(pg.dsn, queries, built.sample_recipient))
        finally:
            pg.stop("fast")
    for t in timings:
        print(t.line())
    failed = [t for t in timings if t.p50_ms is not None and t.is_target and not t.passed]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "events": events,
            "served_from": str(root), "build": {**asdict(built), "writer_events_per_s": built.writer_events_per_s},
            "targets_ms": {"p50": P50_TARGET_MS, "p99": P99_TARGET_MS},
            "timings": [{**asdict(t), "passed": t.passed} for t in timings],
        }, indent=2) + "\n")  # fmt: skip
    return 1 if failed else 0


def _report_sends(base_url: str, dsn: str, c: Campaign) -> None:
    """The sender's report of messages sent (the rates' denominator): through the API if this
    server has it, else straight into campaign_sends."""
    sent = c.recipients + c.recipients // 10  # some recipients never engage
    response = httpx.post(f"{base_url}/v1/campaigns/{CAMPAIGN}/sends", json={"messages": sent, "report_id": "bench"},
                          headers={"Authorization": f"Bearer {harness.API_KEY}"}, timeout=30)  # fmt: skip
    if response.status_code in (200, 201):
        return

    async def direct() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO campaign_sends (campaign_id, report_id, messages) VALUES ($1, 'bench', $2)"
                               " ON CONFLICT DO NOTHING", CAMPAIGN, sent)  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(direct())


def main() -> None:
    events = int(os.environ.get("BENCH_STATS_EVENTS", "10000000"))
    requests = int(os.environ.get("BENCH_STATS_REQUESTS", "300"))
    queries = int(os.environ.get("BENCH_STATS_QUERIES", "100"))
    budget_s = float(os.environ.get("BENCH_STATS_BUDGET_S", "60"))
    out = os.environ.get("BENCH_OUT", str(ROOT / "docs" / "bench" / "stats.json"))
    raise SystemExit(run(events, requests, queries, budget_s, Path(out) if out else None))


if __name__ == "__main__":
    main()
