"""The rollups (migrations 007, 008) against a recomputation from `events`: after batches with
duplicates, replays, late events, verdict revisions and erasures, in any order, every number the
API reads equals what the remaining events give (trackd_rollup_drift is empty)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db import migrate
from tests.conftest import create_database
from tests.rollup_support import BASE, REASONS, Ev, assert_exact, drift, insert, insert_counted


@pytest.fixture
def db(fresh_db: asyncpg.Connection) -> asyncpg.Connection:
    return fresh_db  # every test here counts rows: a database of its own (tests/conftest.py)


def made_up(rnd: random.Random, n: int, campaigns: int = 2, recipients: int = 30) -> list[Ev]:
    out = []
    for _ in range(n):
        kind = rnd.choice(("open", "open", "click"))
        machine = rnd.random() < 0.35
        out.append(
            Ev(
                campaign=f"c{rnd.randrange(campaigns)}",
                kind=kind,
                recipient=f"r{rnd.randrange(recipients)}",
                link=rnd.randrange(4) if kind == "click" else None,
                at=BASE + dt.timedelta(seconds=rnd.randrange(3 * 86400)),
                sent=BASE - dt.timedelta(seconds=rnd.randrange(7200)) if rnd.random() < 0.8 else None,
                machine=machine,
                reason=rnd.choice(REASONS) if machine else None,
            )
        )
    return out


async def revise(conn: asyncpg.Connection, events: list[Ev], verdicts: list[tuple[bool, str | None]]) -> int:
    return int(
        await conn.fetchval(
            "SELECT trackd_revise_verdicts($1, $2, $3, $4)",
            [e.at for e in events],
            [e.id for e in events],
            [v[0] for v in verdicts],
            [v[1] for v in verdicts],
        )
    )


async def stats(conn: asyncpg.Connection, campaign: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT kind, sum(uniques) AS u, sum(human_uniques) AS h FROM rollup_uniques"
        " WHERE campaign_id = $1 AND link_index = -1 GROUP BY kind",
        campaign,
    )
    return {f"{r['kind']}_{w}": int(r[w]) for r in rows for w in ("u", "h")}


async def test_batches_replays_and_late_events_are_counted_exactly_once(db: asyncpg.Connection) -> None:
    rnd = random.Random(7)
    events = made_up(rnd, 3000)
    # Arrival order is not time order: batches of a shuffled list, so that earlier events of a
    # recipient arrive after later ones (a journal that was behind) and move their first touch.
    order = events[:]
    rnd.shuffle(order)
    for at in range(0, len(order), 400):
        await insert(db, order[at : at + 400])
    await assert_exact(db)
    before = await db.fetch("SELECT * FROM trackd_rollup_actual(NULL) ORDER BY 1, 2, 3")
    # A replay of everything, in other batches, adds nothing and counts nothing.
    for at in range(0, len(events), 700):
        assert await insert(db, events[at : at + 700]) == "INSERT 0 0"
    assert await db.fetch("SELECT * FROM trackd_rollup_actual(NULL) ORDER BY 1, 2, 3") == before


async def test_drift_is_found_when_a_rollup_is_wrong(db: asyncpg.Connection) -> None:
    """The check the other tests rely on can fail: one number off is reported."""
    await insert(db, made_up(random.Random(3), 200))
    await assert_exact(db)
    await db.execute(
        "UPDATE rollup_uniques SET human_uniques = human_uniques + 1"
        " WHERE (campaign_id, kind, link_index, slot) IN"
        " (SELECT campaign_id, kind, link_index, slot FROM rollup_uniques LIMIT 1)"
    )
    found = await drift(db)
    assert len(found) == 1 and found[0]["rollup"] == "uniques"
    assert found[0]["actual"] == found[0]["expected"] + 1


async def test_a_recipients_only_human_open_judged_a_machines_drops_human_unique_opens(db: asyncpg.Connection) -> None:
    at = BASE + dt.timedelta(hours=1)
    person = Ev("c", "open", "alice", None, at, BASE, False, None)
    machine = Ev("c", "open", "alice", None, at - dt.timedelta(seconds=5), BASE, True, "prefetch")
    other = Ev("c", "open", "bob", None, at, BASE, False, None)
    await insert(db, [person, machine, other])
    assert await stats(db, "c") == {"open_u": 2, "open_h": 2}
    assert await revise(db, [person], [(True, "burst")]) == 1
    assert await stats(db, "c") == {"open_u": 2, "open_h": 1}
    await assert_exact(db)
    # And back: the verdict was wrong after all.
    assert await revise(db, [person], [(False, None)]) == 1
    assert await stats(db, "c") == {"open_u": 2, "open_h": 2}
    # The same verdict again changes nothing.
    assert await revise(db, [person], [(False, None)]) == 0
    await assert_exact(db)


async def test_erasure_removes_a_recipient_everywhere_and_late_events_stay_out(db: asyncpg.Connection) -> None:
    rnd = random.Random(11)
    events = made_up(rnd, 1500, campaigns=3)
    await insert(db, events)
    theirs = [e for e in events if e.recipient == "r5"]
    assert theirs
    assert await db.fetchval("SELECT trackd_erase_recipient('r5')") == len(theirs)
    assert await db.fetchval("SELECT count(*) FROM recipient_touch WHERE recipient_id = 'r5'") == 0
    await assert_exact(db)
    # Their events still in a journal somewhere arrive after the erasure: refused, counted nowhere.
    late = [Ev(e.campaign, e.kind, e.recipient, e.link, e.at, e.sent, e.machine, e.reason) for e in theirs]
    await insert(db, late + made_up(rnd, 100, campaigns=3, recipients=4))
    assert await db.fetchval("SELECT count(*) FROM events WHERE recipient_id = 'r5'") == 0
    await assert_exact(db)
    # A recipient erased can engage again later (a new subscription): those events count.
    after = Ev("c0", "open", "r5", None, dt.datetime.now(dt.UTC), None, False, None)
    await insert(db, [after])
    assert await db.fetchval("SELECT count(*) FROM events WHERE recipient_id = 'r5'") == 1
    await assert_exact(db)


async def per_second_total(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(events), 0) FROM interactions_per_second"))


async def test_an_erased_recipients_late_events_are_not_counted_per_second_either(db: asyncpg.Connection) -> None:
    """One trigger keeps both (migration 012): an erased recipient's late events, which the
    rollups refuse, are not counted per second either; a replay counts nothing. (What was counted
    per second before the erasure stays: that table holds no recipient.)"""
    rnd = random.Random(5)
    events = made_up(rnd, 600, campaigns=2, recipients=10)
    for _ in range(2):  # the second time a replay: nothing inserted, nothing counted
        await insert_counted(db, events)
        assert await per_second_total(db) == len(events)
    theirs = [e for e in events if e.recipient == "r3"]
    assert theirs
    await db.fetchval("SELECT trackd_erase_recipient('r3')")
    late = [Ev(e.campaign, e.kind, e.recipient, e.link, e.at, e.sent, e.machine, e.reason) for e in theirs]
    others = made_up(rnd, 50, campaigns=2, recipients=3)  # r0..r2: not erased
    await insert_counted(db, late + others)
    assert await per_second_total(db) == len(events) + len(others)
    by_key = await db.fetch(
        "SELECT campaign_id, kind, is_machine, sum(events) AS n FROM interactions_per_second GROUP BY 1, 2, 3"
        " EXCEPT SELECT campaign_id, kind, is_machine, count(*) FROM ("
        "   SELECT campaign_id, kind, is_machine"
        "   FROM unnest($1::text[], $2::text[], $3::bool[]) AS e(campaign_id, kind, is_machine)"
        " ) e GROUP BY 1, 2, 3",
        [e.campaign for e in events + others], [e.kind for e in events + others], [e.machine for e in events + others],
    )  # fmt: skip
    assert by_key == []
    await assert_exact(db)


async def test_concurrent_writers_revisions_and_erasures_stay_exact(admin_dsn: str) -> None:
    """Four connections insert overlapping batches of one hot campaign (shared events, so each
    row is won by one of them) while a fifth revises verdicts and erases recipients: no deadlock,
    and the rollups equal the recomputation."""
    url = await create_database(admin_dsn)
    setup = await asyncpg.connect(url)
    await migrate(setup)
    rnd = random.Random(5)
    events = made_up(rnd, 8000, campaigns=1, recipients=200)
    await insert(setup, events[:10])
    conns = [await asyncpg.connect(url) for _ in range(5)]

    async def write(conn: asyncpg.Connection, seed: int) -> None:
        mine = events[:]
        random.Random(seed).shuffle(mine)
        for at in range(0, len(mine), 500):
            await insert(conn, mine[at : at + 500])

    async def judge(conn: asyncpg.Connection) -> None:
        r = random.Random(9)
        for round_ in range(30):
            pick = r.sample(events, 50)
            await revise(conn, pick, [(r.random() < 0.5, r.choice(REASONS)) for _ in pick])
            if round_ % 10 == 9:
                await conn.execute("SELECT trackd_erase_recipient($1)", f"r{r.randrange(200)}")
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(write(c, i) for i, c in enumerate(conns[:4])), judge(conns[4]))
        await assert_exact(setup)
    finally:
        for c in [*conns, setup]:
            await c.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_random_histories_of_inserts_revisions_and_erasures_stay_exact(
    data: st.DataObject, admin_dsn: str
) -> None:
    """The property: any sequence of batches (with repeats), revisions and erasures leaves every
    rollup equal to its recomputation from `events`."""
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rnd = random.Random(seed)
    pool = made_up(rnd, 400, campaigns=2, recipients=12)
    conn = await asyncpg.connect(await create_database(admin_dsn))
    try:
        await migrate(conn)
        steps = data.draw(st.lists(st.sampled_from(("insert", "replay", "revise", "erase")), min_size=1, max_size=12))
        inserted: list[Ev] = []
        for step in steps:
            if step == "insert":
                batch = rnd.sample(pool, rnd.randrange(1, 80))
                await insert(conn, batch)
                inserted += batch
            elif step == "replay" and inserted:
                await insert(conn, rnd.sample(inserted, min(len(inserted), 60)))
            elif step == "revise" and inserted:
                pick = rnd.sample(inserted, min(len(inserted), rnd.randrange(1, 30)))
                await revise(conn, pick, [(rnd.random() < 0.5, rnd.choice((*REASONS, None))) for _ in pick])
            elif step == "erase":
                await conn.execute("SELECT trackd_erase_recipient($1)", f"r{rnd.randrange(12)}")
            await assert_exact(conn)
    finally:
        await conn.close()


async def test_rebuild_makes_the_same_rollups_again(db: asyncpg.Connection) -> None:
    await insert(db, made_up(random.Random(2), 800))
    before = await db.fetch("SELECT * FROM trackd_rollup_actual('c0') ORDER BY 1, 2, 3")
    feed_before = await db.fetch("SELECT xid, id FROM events WHERE campaign_id = 'c0' ORDER BY xid, id")
    await db.execute("SELECT trackd_rebuild_rollups('c0')")
    assert await db.fetch("SELECT * FROM trackd_rollup_actual('c0') ORDER BY 1, 2, 3") == before
    # The events keep their place in the feed.
    assert await db.fetch("SELECT xid, id FROM events WHERE campaign_id = 'c0' ORDER BY xid, id") == feed_before


async def test_revisions_and_erasures_on_separate_connections_never_deadlock(admin_dsn: str) -> None:
    """An erasure locks a recipient's touch rows, then deletes their events; a revision locks
    events, then touch rows: run side by side on the same recipients, neither may deadlock."""
    url = await create_database(admin_dsn)
    setup = await asyncpg.connect(url)
    await migrate(setup)
    rnd = random.Random(13)
    events = made_up(rnd, 3000, campaigns=2, recipients=8)
    await insert(setup, events)
    reviser, eraser = await asyncpg.connect(url), await asyncpg.connect(url)

    async def revise_all() -> None:
        for _ in range(40):
            pick = rnd.sample(events, 200)
            await revise(reviser, pick, [(rnd.random() < 0.5, "burst") for _ in pick])

    async def erase_some() -> None:
        for n in range(8):
            await eraser.execute("SELECT trackd_erase_recipient($1)", f"r{n}")
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(revise_all(), erase_some())
        await assert_exact(setup)
    finally:
        for c in (reviser, eraser, setup):
            await c.close()


async def test_a_revision_keeps_a_first_human_event_retention_dropped(db: asyncpg.Connection) -> None:
    """The day of a recipient's first human open is gone (retention); revising their later
    machine open to a person's and back must not move, nor lose, that first human open."""
    old = Ev("c", "open", "alice", None, BASE, BASE - dt.timedelta(seconds=30), False, None)
    later = Ev(
        "c", "open", "alice", None, BASE + dt.timedelta(days=2), BASE - dt.timedelta(seconds=30), True, "prefetch"
    )
    await insert(db, [old, later])
    await db.execute(f"DROP TABLE events_{BASE:%Y%m%d}")  # as trackd prune does, after detaching it
    before = await db.fetch("SELECT * FROM trackd_rollup_actual('c') WHERE rollup <> 'totals' ORDER BY 1, 2, 3")
    await revise(db, [later], [(False, None)])
    await revise(db, [later], [(True, "prefetch")])
    assert await db.fetch("SELECT * FROM trackd_rollup_actual('c') WHERE rollup <> 'totals' ORDER BY 1, 2, 3") == before
    assert await stats(db, "c") == {"open_u": 1, "open_h": 1}
    # And the campaign cannot be rebuilt from what is left.
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
        await db.execute("SELECT trackd_rebuild_rollups('c')")


async def test_verify_works_with_a_default_partition(db: asyncpg.Connection) -> None:
    await insert(db, made_up(random.Random(4), 100))
    await db.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    await assert_exact(db)


async def test_a_batch_across_midnight_is_kept_for_the_feed_until_its_last_day_goes(db: asyncpg.Connection) -> None:
    midnight = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    await insert(db, [Ev("c", "open", f"r{i}", None, midnight + dt.timedelta(seconds=s), None, False, None)
                      for i, s in enumerate((-5, 5))])  # fmt: skip
    assert await db.fetchval("SELECT day FROM campaign_batches WHERE campaign_id = 'c'") == midnight.date()


async def test_writers_running_at_once_never_share_a_counter_slot(admin_dsn: str) -> None:
    """What keeps many writers of one hot campaign from queueing on one counter row: every
    running transaction holds a slot no other holds; a slot is free again once its holder ends,
    and the lowest free one is taken (a key's rows stay as few as the writers at once)."""
    url = await create_database(admin_dsn)
    conns = [await asyncpg.connect(url) for _ in range(5)]
    try:
        await migrate(conns[0])
        for c in conns:
            await c.execute("BEGIN")
        slots = [await c.fetchval("SELECT trackd_take_slot(0, 64)") for c in conns]
        assert sorted(slots) == [0, 1, 2, 3, 4]
        # Asking again within a transaction gives the slot it holds.
        assert [await c.fetchval("SELECT trackd_take_slot(0, 64)") for c in conns] == slots
        await conns[2].execute("COMMIT")
        await conns[2].execute("BEGIN")
        assert await conns[2].fetchval("SELECT trackd_take_slot(0, 64)") == slots[2]
        # Revisions and erasures take theirs from 64..71, never a writer's.
        assert await conns[0].fetchval("SELECT trackd_take_slot(64, 8)") == 64
    finally:
        for c in conns:
            await c.close()
