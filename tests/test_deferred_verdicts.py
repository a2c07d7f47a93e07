"""Deferred verdicts (migration 011, trackd_judge_verdicts): bursts, address bursts, the rest of a
scan, honeypot scans and probable networks, judged in PostgreSQL across every pod's events, each
rule with the case it must not catch; rollups exact after every judgement (tests/rollup_support)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from app.db import create_pool
from app.metrics import Metrics
from app.settings import Settings
from app.verdicts.deferred import DeferredJudge
from tests.conftest import _with_database, apply_migrations, create_database
from tests.rollup_support import BASE, assert_exact

CAMPAIGN = "camp-deferred"
SENT = BASE - dt.timedelta(minutes=1)
EV_HONEYPOT = 64
EV_PROBABLE = 32

INSERT = """
INSERT INTO events (id, occurred_at, kind, campaign_id, recipient_id, link_index, url, is_machine,
                    machine_reason, sent_at, link_name, part, evidence, addr_tag)
SELECT id, occurred_at, kind, campaign_id, recipient_id, link_index,
       CASE WHEN link_index IS NULL THEN NULL ELSE 'https://example.com/' || link_index END,
       is_machine, machine_reason, sent_at,
       CASE WHEN link_index IS NULL THEN NULL ELSE 'link-' || link_index END,
       CASE WHEN link_index IS NULL THEN NULL ELSE 'html' END, evidence, addr_tag
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bool[],
            $8::text[], $9::timestamptz[], $10::smallint[], $11::smallint[])
     AS u(id, occurred_at, kind, campaign_id, recipient_id, link_index, is_machine, machine_reason, sent_at,
          evidence, addr_tag)
ORDER BY occurred_at, id
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class E:
    """One event, `s` seconds after BASE."""

    s: float
    kind: str = "click"
    link: int | None = 0
    addr: int | None = 1
    recipient: str = "r1"
    evidence: int | None = 12  # Accept-Language and Sec-Fetch-* sent: a browser
    machine: bool = False
    reason: str | None = None
    campaign: str = CAMPAIGN
    sent: dt.datetime | None = SENT
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def at(self) -> dt.datetime:
        return BASE + dt.timedelta(seconds=self.s)


def click(s: float, **kw: object) -> E:
    return E(s, **kw)  # type: ignore[arg-type]


def pixel(s: float, **kw: object) -> E:
    return E(s, kind="open", link=None, **kw)  # type: ignore[arg-type]


async def insert(conn: asyncpg.Connection, events: list[E]) -> None:
    """One transaction, like one writer's batch."""
    await conn.execute("SELECT trackd_ensure_partitions($1::date[])", sorted({e.at.date() for e in events}))
    await conn.execute(
        INSERT,
        [e.id for e in events], [e.at for e in events], [e.kind for e in events],
        [e.campaign for e in events], [e.recipient for e in events],
        [None if e.kind == "open" else e.link for e in events], [e.machine for e in events],
        [e.reason for e in events], [e.sent for e in events], [e.evidence for e in events],
        [e.addr for e in events],
    )  # fmt: skip


# Committed events the judge has not passed yet (past its watermark).
_UNJUDGED = (
    "SELECT EXISTS (SELECT 1 FROM events e, verdict_progress p WHERE (e.xid, e.id) > (p.watermark_xid, p.watermark_id))"
)


async def judge(conn: asyncpg.Connection, limit: int = 50_000, settle: bool = True) -> dict[str, Any]:
    """One call of trackd_judge_verdicts. With `settle`, called again (what it examined and
    revised summed) while committed events are still past the watermark: they wait behind a
    transaction running anywhere on the server (pg_snapshot_xmin is the whole server's, and
    another test's writer may be in the middle of a batch: seen once in a full run). Not when the
    call did not judge (another caller holds the lock) or stopped at its limit. Bounded; a test
    that holds a transaction open on purpose, or interleaves callers, says settle=False."""
    total: dict[str, Any] = {}
    for _ in range(100):
        row = await conn.fetchrow("SELECT * FROM trackd_judge_verdicts($1)", limit)
        assert row is not None
        total = dict(row) if not total else {
            **dict(row), "judged": total["judged"] or row["judged"],
            "newest_at": row["newest_at"] or total["newest_at"],
            "examined": total["examined"] + row["examined"], "revised": total["revised"] + row["revised"],
        }  # fmt: skip
        if not settle or not row["judged"] or row["more"] or not await conn.fetchval(_UNJUDGED):
            break
        await asyncio.sleep(0.05)
    return total


async def verdicts(conn: asyncpg.Connection, events: list[E]) -> list[str | None]:
    """Each event's reason codes (None: a person), in the order given."""
    rows = await conn.fetch("SELECT id, is_machine, machine_reason FROM events WHERE id = ANY($1::uuid[])",
                            [e.id for e in events])  # fmt: skip
    got = {r["id"]: (r["machine_reason"] or "machine") if r["is_machine"] else None for r in rows}
    return [got[e.id] for e in events]


async def scenario(conn: asyncpg.Connection, events: list[E]) -> list[str | None]:
    """Insert the events, judge them, check the rollups, and return each event's verdict."""
    await insert(conn, events)
    await judge(conn)
    await assert_exact(conn)
    return await verdicts(conn, events)


async def human_clicks(conn: asyncpg.Connection, campaign: str = CAMPAIGN) -> tuple[int, int]:
    """What GET stats reads for human_clicks and human_unique_clicks (the rollups)."""
    totals = await conn.fetchval(
        "SELECT coalesce(sum(events), 0) FROM rollup_totals WHERE campaign_id = $1 AND kind = 'click'"
        " AND link_index = -1 AND NOT is_machine",
        campaign,
    )
    uniques = await conn.fetchval(
        "SELECT coalesce(sum(human_uniques), 0) FROM rollup_uniques WHERE campaign_id = $1 AND kind = 'click'"
        " AND link_index = -1",
        campaign,
    )
    return int(totals), int(uniques)


# -- burst ------------------------------------------------------------------------------------------


async def test_two_clicks_far_enough_apart_are_people(fresh_db: asyncpg.Connection) -> None:
    assert await scenario(fresh_db, [click(0), click(2.5, link=1)]) == [None, None]


async def test_two_clicks_within_a_burst_are_both_machines(fresh_db: asyncpg.Connection) -> None:
    events = [click(0), click(0.3, link=1)]
    assert await scenario(fresh_db, events) == ["burst", "burst"]
    assert await human_clicks(fresh_db) == (0, 0)


async def test_a_chain_of_clicks_is_one_burst(fresh_db: asyncpg.Connection) -> None:
    events = [click(i * 0.5, link=i) for i in range(5)]
    assert await scenario(fresh_db, events) == ["burst"] * 5


async def test_a_chain_longer_than_the_window_is_one_burst(fresh_db: asyncpg.Connection) -> None:
    """Gaps of 0.9 s over most of a minute: every click is within the window of the next."""
    events = [click(i * 0.9, link=i % 4) for i in range(60)]
    assert await scenario(fresh_db, events) == ["burst"] * 60


async def test_a_persons_later_click_from_another_network_stays_a_persons(fresh_db: asyncpg.Connection) -> None:
    burst = [click(i * 0.2, link=i, addr=7) for i in range(5)]
    person = click(600, link=2, addr=9)
    assert await scenario(fresh_db, [*burst, person]) == ["burst"] * 5 + [None]
    assert await human_clicks(fresh_db) == (1, 1)


async def test_bursts_are_per_recipient(fresh_db: asyncpg.Connection) -> None:
    events = [click(0, recipient="a"), click(0.2, recipient="b"), click(0.4, recipient="c", campaign="other")]
    assert await scenario(fresh_db, events) == [None, None, None]


async def test_reasons_are_added_not_replaced(fresh_db: asyncpg.Connection) -> None:
    events = [click(0, machine=True, reason="address_burst"), click(0.4, machine=True, reason="burst"), click(0.8)]
    assert await scenario(fresh_db, events) == ["address_burst,burst", "burst", "burst"]


async def test_a_click_judged_at_receipt_does_not_take_the_persons_click_into_a_burst(
    fresh_db: asyncpg.Connection,
) -> None:
    """Office probes a link (office_discovery), then opens the browser 0.7 s later; Safe Links
    checks a link from Microsoft's network just before the person's own click: neither is a burst
    with the click that follows (tests/data/engagement: office-probe-then-browser-click)."""
    probe = [click(0, machine=True, reason="office_discovery", addr=3), click(0.7, addr=3)]
    check = [click(0, recipient="r2", machine=True, reason="scanner_network", addr=4),
             click(0.4, recipient="r2", addr=5)]  # fmt: skip
    assert await scenario(fresh_db, [*probe, *check]) == ["office_discovery", None, "scanner_network", None]


# -- scan: the rest of a burst's scan ---------------------------------------------------------------


async def test_the_scanners_pixel_before_its_burst_is_a_scan(fresh_db: asyncpg.Connection) -> None:
    events = [pixel(0, addr=5), *(click(30 + i * 0.2, link=i, addr=5) for i in range(3))]
    assert await scenario(fresh_db, events) == ["scan", "burst", "burst", "burst"]
    assert await fresh_db.fetchval(
        "SELECT sum(human_uniques) FROM rollup_uniques WHERE campaign_id = $1 AND kind = 'open' AND link_index = -1",
        CAMPAIGN,
    ) == 0  # fmt: skip


async def test_an_open_from_another_address_is_not_a_scan(fresh_db: asyncpg.Connection) -> None:
    events = [pixel(20, addr=6), *(click(30 + i * 0.2, link=i, addr=5) for i in range(3))]
    assert await scenario(fresh_db, events) == [None, "burst", "burst", "burst"]


async def test_the_same_address_long_after_the_burst_is_not_a_scan(fresh_db: asyncpg.Connection) -> None:
    events = [*(click(i * 0.2, link=i, addr=5) for i in range(3)), pixel(90, addr=5), click(90, link=3, addr=5)]
    assert await scenario(fresh_db, events) == ["burst", "burst", "burst", None, None]


# -- address_burst -----------------------------------------------------------------------------------


async def test_one_link_from_three_addresses_within_30s_is_machine(fresh_db: asyncpg.Connection) -> None:
    events = [click(0, addr=1), click(12, addr=2), click(25, addr=3)]
    assert await scenario(fresh_db, events) == ["address_burst"] * 3


async def test_one_pixel_from_three_addresses_within_30s_is_machine(fresh_db: asyncpg.Connection) -> None:
    events = [pixel(0, addr=1), pixel(10, addr=2), pixel(20, addr=3), pixel(300, addr=1)]
    assert await scenario(fresh_db, events) == ["address_burst"] * 3 + [None]


async def test_two_addresses_are_people(fresh_db: asyncpg.Connection) -> None:
    events = [click(0, addr=1), click(10, addr=2), click(20, addr=1), click(29, addr=2)]
    assert await scenario(fresh_db, events) == [None] * 4


async def test_three_addresses_over_40s_are_people(fresh_db: asyncpg.Connection) -> None:
    events = [click(0, addr=1), click(20, addr=2), click(40, addr=3)]
    assert await scenario(fresh_db, events) == [None] * 3


async def test_three_addresses_on_different_links_are_people(fresh_db: asyncpg.Connection) -> None:
    events = [click(0, link=0, addr=1), click(10, link=1, addr=2), click(20, link=2, addr=3)]
    assert await scenario(fresh_db, events) == [None] * 3


async def test_only_the_window_with_three_addresses_is_machine(fresh_db: asyncpg.Connection) -> None:
    events = [click(0, addr=1), click(35, addr=2), click(50, addr=3), click(60, addr=4), click(100, addr=2)]
    assert await scenario(fresh_db, events) == [None, "address_burst", "address_burst", "address_burst", None]


# -- honeypot ----------------------------------------------------------------------------------------


async def test_a_honeypot_hit_takes_its_scan_with_it(fresh_db: asyncpg.Connection) -> None:
    hit = click(30, link=9, addr=4, evidence=EV_HONEYPOT, machine=True, reason="honeypot")
    events = [
        pixel(0, addr=4),  # the scanner's pixel, 30 s before
        click(75, link=1, addr=4),  # the same address 45 s after
        hit,
        pixel(31, addr=8),  # another address, within a burst window of the hit
        click(50, link=1, addr=9),  # another address 20 s later: the person
        click(95, link=3, addr=4),  # the same address, but 65 s after
    ]
    assert await scenario(fresh_db, events) == ["honeypot_scan", "honeypot_scan", "honeypot", "honeypot_scan",
                                                None, None]  # fmt: skip


async def test_a_hit_known_only_by_its_reason_counts(fresh_db: asyncpg.Connection) -> None:
    """Rows without evidence (written before it was kept): the reason code says honeypot."""
    events = [click(0, link=9, evidence=None, machine=True, reason="honeypot", addr=None), click(0.5, link=0, addr=3)]
    assert await scenario(fresh_db, events) == ["honeypot", "honeypot_scan"]


async def test_a_hit_the_hot_path_did_not_call_machine_is_one(fresh_db: asyncpg.Connection) -> None:
    assert await scenario(fresh_db, [click(0, link=9, evidence=EV_HONEYPOT | 12)]) == ["honeypot"]


# -- probable networks ----------------------------------------------------------------------------------


async def test_a_probable_network_is_machine_only_near_delivery(fresh_db: asyncpg.Connection) -> None:
    near = click(0, evidence=EV_PROBABLE, sent=BASE - dt.timedelta(seconds=540))
    far = click(0, evidence=EV_PROBABLE, recipient="r2", sent=BASE - dt.timedelta(seconds=700))
    unsent = click(0, evidence=EV_PROBABLE, recipient="r3", sent=None)
    skewed = click(0, evidence=EV_PROBABLE, recipient="r4", sent=BASE + dt.timedelta(seconds=30))
    other = click(0, evidence=12, recipient="r5", sent=BASE - dt.timedelta(seconds=10))
    assert await scenario(fresh_db, [near, far, unsent, skewed, other]) == ["probable_network", None, None, None, None]


# -- how and when -------------------------------------------------------------------------------------


async def test_judging_again_changes_nothing(fresh_db: asyncpg.Connection) -> None:
    events = [pixel(0, addr=5), *(click(30 + i * 0.2, link=i, addr=5) for i in range(3)),
              click(40, link=0, addr=1), click(45, link=0, addr=2)]  # fmt: skip
    first = await scenario(fresh_db, events)
    assert (await judge(fresh_db))["examined"] == 0
    # The same events judged from the start again: nothing changes.
    await fresh_db.execute("UPDATE verdict_progress SET watermark_xid = '1', watermark_id = $1", uuid.UUID(int=0))
    again = await judge(fresh_db)
    assert again["examined"] == len(events) and again["revised"] == 0
    assert await verdicts(fresh_db, events) == first
    await assert_exact(fresh_db)


async def test_an_event_that_arrives_late_joins_its_burst(fresh_db: asyncpg.Connection) -> None:
    """The first click was judged alone, as a person's. Its partner, written an hour later (a pod's
    journal replayed after an outage), makes both machines'; and so does a pixel of the scan."""
    first = click(0, addr=5)
    assert await scenario(fresh_db, [first]) == [None]
    for i in range(50):  # other recipients' events committed meanwhile
        await insert(fresh_db, [click(3600 + i, recipient=f"x{i}")])
    assert (await judge(fresh_db))["examined"] == 50
    late = click(0.4, link=1, addr=5)
    assert await scenario(fresh_db, [late]) == ["burst"]
    assert await verdicts(fresh_db, [first]) == ["burst"]
    late_pixel = pixel(-20, addr=5)
    assert await scenario(fresh_db, [late_pixel]) == ["scan"]


async def test_a_batch_resumes_inside_one_transaction(fresh_db: asyncpg.Connection) -> None:
    """One writer batch larger than the limit: judged over several calls, none skipped."""
    events = [click(i * 10.0, recipient=f"r{i // 2}", link=i % 2, addr=1 + i % 2) for i in range(10)]
    events += [click(i * 10.0 + 0.5, recipient=f"r{i // 2}", link=3) for i in range(0, 10, 2)]
    await insert(fresh_db, events)
    seen = 0
    while True:
        result = await judge(fresh_db, limit=3)
        seen += result["examined"]
        if not result["more"]:
            break
    assert seen == len(events)
    got = await verdicts(fresh_db, events)
    assert got[:10] == ["burst", None] * 5 and got[10:] == ["burst"] * 5
    await assert_exact(fresh_db)


async def test_a_second_caller_returns_at_once(fresh_db: asyncpg.Connection, admin_dsn: str) -> None:
    await insert(fresh_db, [click(0), click(0.5)])
    other = await asyncpg.connect(await _same_database(fresh_db, admin_dsn))
    try:
        async with fresh_db.transaction():
            held = await judge(fresh_db)
            assert held["judged"] and held["examined"] == 2
            skipped = await asyncio.wait_for(judge(other), 2)
            assert not skipped["judged"] and skipped["examined"] == 0 and skipped["revised"] == 0
        again = await judge(other)
        assert again["judged"] and again["examined"] == 0
    finally:
        await other.close()
    await assert_exact(fresh_db)


async def test_callers_at_once_judge_every_event_once(fresh_db: asyncpg.Connection, admin_dsn: str) -> None:
    url = await _same_database(fresh_db, admin_dsn)
    conns = [await asyncpg.connect(url) for _ in range(4)]
    events: list[E] = []
    try:

        async def write(conn: asyncpg.Connection, first: int) -> None:
            for i in range(first, 20, 2):  # two writers, each committing one burst at a time
                batch = [click(i * 100 + j * 0.3, recipient=f"w{i % 5}", link=j) for j in range(3)]
                events.extend(batch)
                await insert(conn, batch)
                await asyncio.sleep(0)

        async def judge_loop(conn: asyncpg.Connection) -> None:
            for _ in range(30):
                await judge(conn, limit=4, settle=False)
                await asyncio.sleep(0)

        await asyncio.gather(write(conns[0], 0), write(conns[1], 1), judge_loop(conns[2]), judge_loop(conns[3]))
        while (await judge(fresh_db))["more"]:
            pass
        await judge(fresh_db)
    finally:
        for conn in conns:
            await conn.close()
    assert await verdicts(fresh_db, events) == ["burst"] * len(events)
    progress = await fresh_db.fetchrow("SELECT examined, revised FROM verdict_progress")
    assert progress["examined"] == len(events) and progress["revised"] == len(events)
    await assert_exact(fresh_db)


async def test_events_from_before_the_migration_are_not_judged(admin_dsn: str) -> None:
    """The first call starts at the migration, not at the beginning of the table."""
    conn = await asyncpg.connect(await create_database(admin_dsn))
    try:
        await apply_migrations(conn, stop="011")
        old = [click(0), click(0.2)]
        await insert(conn, old)
        await apply_migrations(conn, start="011")
        assert (await judge(conn))["examined"] == 0
        assert await verdicts(conn, old) == [None, None]
        new = [click(0.4, link=1)]
        assert await scenario(conn, new) == ["burst"]
    finally:
        await conn.close()


async def _same_database(conn: asyncpg.Connection, admin_dsn: str) -> str:
    return _with_database(admin_dsn, await conn.fetchval("SELECT current_database()"))


# -- the service's task -------------------------------------------------------------------------------


def test_the_rules_windows_are_settings_with_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKD_BURST_SECONDS", "1.5")
    monkeypatch.setenv("TRACKD_ADDRESS_BURST_COUNT", "4")
    settings = Settings()
    assert (settings.burst_seconds, settings.address_burst_count, settings.verdict_interval_s) == (1.5, 4, 1.0)
    for bad in ({"burst_seconds": 0}, {"address_burst_count": 1}, {"verdict_interval_s": 0},
                {"scan_window_s": -1}, {"verdict_batch_rows": 10}):  # fmt: skip
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]


async def test_the_task_judges_until_caught_up_and_counts(fresh_db: asyncpg.Connection, admin_dsn: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    url = await _same_database(fresh_db, admin_dsn)
    settings = Settings(database_url=url, data_dir=tmp_path, verdict_batch_rows=100)
    pool = await create_pool(settings, url)
    metrics = Metrics()
    try:
        events = [click(i * 10 + j * 0.4, recipient=f"t{i}", link=j) for i in range(150) for j in range(2)]
        await insert(fresh_db, events)
        judge_task = DeferredJudge(settings, pool, metrics)
        assert await judge_task.round() is False  # three calls of 100, then caught up
        assert await verdicts(fresh_db, events) == ["burst"] * 300
        assert metrics.verdicts_examined._value.get() == 300
        assert metrics.verdicts_revised._value.get() == 300
        judge_task._show_lag()
        assert 0 <= metrics.verdicts_lag._value.get() < 5
    finally:
        await asyncio.wait_for(pool.close(), 10)
    await assert_exact(fresh_db)


async def test_the_task_says_a_database_error_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql://nobody@127.0.0.1:9/nothing"  # nothing listens on the discard port
    settings = Settings(database_url=url, data_dir=tmp_path, verdict_interval_s=0.01)
    pool = await create_pool(settings, url)
    metrics = Metrics()
    task = asyncio.create_task(DeferredJudge(settings, pool, metrics).run())
    try:
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(pool.close(), 10)
    failures = [r for r in caplog.records if r.name == "trackd.verdicts"]
    assert len(failures) == 1 and "judging deferred verdicts failed" in failures[0].getMessage()
    assert not failures[0].exc_info
    assert metrics.verdict_errors._value.get() >= 3


async def test_the_lag_grows_while_events_wait_behind_an_open_transaction(
    fresh_db: asyncpg.Connection, admin_dsn: str
) -> None:
    """trackd_verdicts_lag_seconds is the age of what is not judged yet. A transaction that holds
    an xid (a stuck writer, a migration, a psql session left open) keeps every later event behind
    pg_snapshot_xmin; the lag must grow then, not read 0 (found in review)."""
    other = await asyncpg.connect(await _same_database(fresh_db, admin_dsn))
    try:
        tx = other.transaction()
        await tx.start()
        await other.fetchval("SELECT pg_current_xact_id()")  # holds an xid, like any open writer
        events = [click(0), click(0.3, link=1)]
        await insert(fresh_db, events)
        await fresh_db.execute("SELECT pg_sleep(1.2)")
        await judge(fresh_db, settle=False)
        assert await verdicts(fresh_db, events) == [None, None]  # not judged: behind the open transaction
        lag = await fresh_db.fetchval("SELECT extract(epoch FROM now() - caught_up_at) FROM verdict_progress")
        await tx.rollback()
    finally:
        await other.close()
    assert lag >= 1.0, f"lag {lag}s while two committed events wait unjudged"
    await judge(fresh_db)  # the transaction gone: judged, and caught up again
    assert await verdicts(fresh_db, events) == ["burst", "burst"]
    assert await fresh_db.fetchval("SELECT extract(epoch FROM now() - caught_up_at) FROM verdict_progress") < 1.0
