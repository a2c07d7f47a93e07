"""`make eval-truth`: trackd's verdicts measured on the labelled evaluation set.

Every case of tests/data/engagement/cases.json (real user agents and behaviours, each with its
public source) is replayed through the real hot path (`HotPath.answer`: headers, user agent,
address lists, tokens signed like any sender's) at the times the case gives, into a real
PostgreSQL; the deferred rules then run as the service runs them (`trackd_judge_verdicts`), and
each event's final verdict is compared with its label. Printed: machine recall and the share of
people flagged, overall and per class, and every event judged wrongly.

    python -m tests.tools.eval_truth [--cases FILE] [--verbose]

Uses DATABASE_URL when set (a database it may create another database in), else an embedded
PostgreSQL of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.copyrows import COLUMNS, COPY_HEADER, COPY_TRAILER, RowEncoder, decode_row
from app.db import migrate
from app.hotpath import HotPath
from app.metrics import HotPathMeter, Metrics
from app.settings import Settings
from app.verdicts.deferred import judge_on
from app.verdicts.networks import Networks
from trackd_links.tokens import KeyRing, SigningKey

CASES = Path(__file__).resolve().parents[1] / "data" / "engagement" / "cases.json"
# Every case is sent at the same moment; cases never meet (each is its own campaign).
SENT_AT = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
_RING = KeyRing([SigningKey.parse("eval:" + "e" * 43)])


class RowsJournal:
    """Keeps the rows the hot path appends (the caller inserts or decodes them itself)."""

    def __init__(self) -> None:
        self.rows: list[bytes] = []

    def append(self, row: bytes, received_us: int) -> object:
        self.rows.append(row)
        return self  # "written": the evaluation inserts the rows itself


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never reached
    raise AssertionError("not a tracked path")


@dataclass
class Tally:
    machine: int = 0
    caught: int = 0
    people: int = 0
    flagged: int = 0

    def add(self, truth: bool, verdict: bool) -> None:
        if truth:
            self.machine += 1
            self.caught += verdict
        else:
            self.people += 1
            self.flagged += verdict

    @property
    def recall(self) -> float | None:
        return self.caught / self.machine if self.machine else None

    @property
    def flagged_share(self) -> float | None:
        return self.flagged / self.people if self.people else None


@dataclass
class Report:
    overall: Tally = field(default_factory=Tally)
    # The same without the machines the set itself says no passive rule can see ("limit").
    visible: Tally = field(default_factory=Tally)
    classes: dict[str, Tally] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    cases: int = 0

    def render(self, verbose: bool = False) -> str:
        def pct(x: float | None) -> str:
            return "     -" if x is None else f"{100 * x:5.1f}%"

        lines = [f"{'class':<20} {'machine':>8} {'caught':>7} {'recall':>7} {'people':>7} {'flagged':>8} {'share':>7}"]
        rows = [*sorted(self.classes.items()), ("overall", self.overall), ("overall, visible", self.visible)]
        for name, t in rows:
            lines.append(
                f"{name:<20} {t.machine:>8} {t.caught:>7} {pct(t.recall):>7} {t.people:>7} {t.flagged:>8}"
                f" {pct(t.flagged_share):>7}"
            )
        lines.append(f"{self.cases} cases; targets: machine recall >= 95%, people flagged <= 1%")
        if self.wrong:
            lines.append(f"judged wrongly ({len(self.wrong)}):")
            lines += [f"  {w}" for w in (self.wrong if verbose else self.wrong[:40])]
            if not verbose and len(self.wrong) > 40:
                lines.append(f"  ... {len(self.wrong) - 40} more (--verbose)")
        return "\n".join(lines)


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return cases


def _headers(event: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    out = [(b"host", b"track.example.com")]
    if event.get("ua") is not None:
        out.append((b"user-agent", event["ua"].encode("utf-8")))
    out += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in event.get("headers", {}).items()]
    return out


Which = dict[uuid.UUID, tuple[dict[str, Any], int]]


def hot_path(
    settings: Settings, ring: KeyRing = _RING, networks: Networks | None = None, tag_key: bytes | None = None
) -> tuple[HotPath, RowsJournal]:
    """The real hot path (no server) with its rows kept in memory: the evaluation, and the tests
    of what a request leaves in its row (tests/test_verdict_evidence.py)."""
    metrics = Metrics(None)
    rows = RowEncoder(settings, networks if networks is not None else Networks.load(settings.networks_file),
                      tag_key=ring.keys[0].secret if tag_key is None else tag_key)  # fmt: skip
    hot = HotPath(_no_app, ring, metrics, HotPathMeter(metrics), rows,
                  user_agent_max_bytes=settings.user_agent_max_bytes,
                  capture_forwarded_for=bool(settings.trusted_proxies), fallback_url=None)  # fmt: skip
    journal = RowsJournal()
    hot.journal = journal
    return hot, journal


def replay(cases: Iterable[dict[str, Any]], settings: Settings | None = None) -> tuple[list[bytes], Which]:
    """The `events` rows the hot path makes for every case's events, and which case event each
    row's id is."""
    hot, journal = hot_path(settings or Settings())
    sent = int(SENT_AT.timestamp())
    which: Which = {}
    for case in cases:
        campaign = f"eval-{case['id']}"
        links = int(case.get("links", 3))
        for i, event in enumerate(case["events"]):
            recipient = f"{case['id']}-{event.get('recipient', 'r1')}"
            kind = "open" if event["kind"] == "open" else "click"
            if event["kind"] == "open":
                token = _RING.sign_open(campaign, recipient, sent_at=sent)
            elif event["kind"] == "honeypot":
                token = _RING.sign_click(campaign, recipient, links, "https://example.com/hp", sent_at=sent,
                                         part="html", honeypot=True)  # fmt: skip
            else:
                link = int(event.get("link", 0))
                token = _RING.sign_click(campaign, recipient, link, f"https://shop.example/{link}", sent_at=sent,
                                         part="html")  # fmt: skip
            at_ns = (sent * 1_000_000 + round(float(event["t"]) * 1_000_000)) * 1000
            hot.clock = lambda at_ns=at_ns: at_ns  # type: ignore[misc]
            answer = hot.answer(kind, event.get("method", "GET") == "HEAD", token, _headers(event), event["address"])
            if answer.outcome != "recorded":
                raise ValueError(f"case {case['id']} event {i}: not recorded ({answer.outcome})")
            which[decode_row(journal.rows[-1])["id"]] = (case, i)
    return journal.rows, which


async def judge_all(conn: asyncpg.Connection, settings: Settings) -> None:
    """Judge every committed event, as the service's DeferredJudge does (same statement)."""
    while True:
        done = await judge_on(conn, settings)
        assert done.judged, "another judge holds the lock"
        if not done.more:
            return


async def evaluate(conn: asyncpg.Connection, cases: list[dict[str, Any]], settings: Settings | None = None) -> Report:
    """Replay the cases into the (migrated) database of `conn`, judge, and compare."""
    settings = settings or Settings()
    rows, which = replay(cases, settings)
    last = max(float(e["t"]) for c in cases for e in c["events"])
    days = sorted({(SENT_AT + dt.timedelta(days=d)).date() for d in range(int(last // 86_400) + 2)})
    await conn.execute("SELECT trackd_ensure_partitions($1::date[])", days)
    data = COPY_HEADER + b"".join(rows) + COPY_TRAILER
    await conn.copy_to_table("events", source=memoryview(data), columns=COLUMNS, format="binary")  # type: ignore[arg-type]
    await judge_all(conn, settings)
    verdicts = {
        r["id"]: (r["is_machine"], r["machine_reason"])
        for r in await conn.fetch("SELECT id, is_machine, machine_reason FROM events WHERE campaign_id LIKE 'eval-%'")
    }
    report = Report(cases=len(cases))
    for event_id, (case, i) in which.items():
        event = case["events"][i]
        truth = bool(event["machine"])
        verdict, reason = verdicts[event_id]
        report.overall.add(truth, verdict)
        if not (truth and case.get("limit")):
            report.visible.add(truth, verdict)
        report.classes.setdefault(case["class"], Tally()).add(truth, verdict)
        if truth != verdict:
            what = "missed machine" if truth else f"person flagged ({reason})"
            ua = event.get("ua")
            report.wrong.append(f"{case['id']}#{i} [{case['class']}] {what}: {event['kind']} t={event['t']}"
                                f" {event.get('method', 'GET')} {event['address']} ua={ua!r}"
                                + (" (limit)" if case.get("limit") else ""))  # fmt: skip
    return report


async def _run(cases_path: Path, verbose: bool) -> Report:
    from tests.support import embedded_postgres

    async def on(dsn: str) -> Report:
        admin = await asyncpg.connect(dsn)
        name = f"trackd_eval_{uuid.uuid4().hex[:8]}"
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            conn = await asyncpg.connect(dsn, database=name)
            try:
                await migrate(conn)
                return await evaluate(conn, load_cases(cases_path))
            finally:
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.close()

    if os.environ.get("DATABASE_URL"):
        return await on(os.environ["DATABASE_URL"])
    with embedded_postgres() as server:
        return await on(server.dsn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval-truth", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument("--verbose", action="store_true", help="list every event judged wrongly")
    args = parser.parse_args(argv)
    report = asyncio.run(_run(args.cases, args.verbose))
    print(f"trackd eval-truth: {args.cases}")
    print(report.render(args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
