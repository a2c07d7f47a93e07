"""The lifecycle of stored events (app/lifecycle.py): partitions made ahead by the service,
retention by `trackd prune` (and by the service when it owns `events`), against a real
PostgreSQL, through the real command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db import migrate
from app.lifecycle import drop_cutoff
from tests.conftest import create_database
from tests.rollup_support import Ev, assert_exact, insert
from tests.support import API_KEY, ROOT, ServerProcess, metric
from tests.test_cli import run_cli

ROLLUPS = ("rollup_totals", "rollup_uniques", "rollup_minutes", "rollup_hours", "rollup_time_to_first",
           "recipient_touch", "campaign_links")  # fmt: skip


class DB:
    def __init__(self, url: str, conn: asyncpg.Connection) -> None:
        self.url = url
        self.conn = conn


@pytest.fixture
async def fresh(admin_dsn: str) -> AsyncIterator[DB]:
    url = await create_database(admin_dsn)
    conn = await asyncpg.connect(url)
    await conn.execute("SET TIME ZONE 'UTC'")
    await migrate(conn)
    try:
        yield DB(url, conn)
    finally:
        await conn.close()


async def today(conn: asyncpg.Connection) -> dt.date:
    day: dt.date = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    return day


def noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), dt.UTC)


def events_on(day: dt.date, campaign: str, n: int = 3) -> list[Ev]:
    return [Ev(campaign, kind, f"r{i}", 0 if kind == "click" else None, noon(day) + dt.timedelta(minutes=i),
               None, i == 2, "head" if i == 2 else None)
            for i in range(n) for kind in ("open", "click")]  # fmt: skip


async def partition_days(conn: asyncpg.Connection) -> set[dt.date]:
    names = await conn.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                             " WHERE i.inhparent = 'events'::regclass")  # fmt: skip
    return {dt.datetime.strptime(r["relname"], "events_%Y%m%d").date() for r in names}


async def rollups(conn: asyncpg.Connection) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    for table in ROLLUPS:
        rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")
        out[table] = sorted(tuple(r.values()) for r in rows)
    return out


def prune(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("prune", env={"DATABASE_URL": url, **env})


async def test_prune_drops_only_partitions_past_retention_and_keeps_rollups(fresh: DB) -> None:
    conn = fresh.conn
    now = await today(conn)
    old, older, recent = now - dt.timedelta(days=10), now - dt.timedelta(days=30), now - dt.timedelta(days=3)
    await insert(conn, events_on(older, "spring") + events_on(old, "spring"))
    await insert(conn, events_on(recent, "summer") + events_on(now, "summer"))
    await conn.execute("SELECT trackd_ensure_partitions($1::date[])", [now + dt.timedelta(days=2)])
    before = await rollups(conn)
    assert await conn.fetchval("SELECT count(*) FROM campaign_batches WHERE campaign_id = 'spring'") == 1

    done = prune(fresh.url, TRACKD_RETENTION_DAYS="7")
    assert done.returncode == 0, done.stderr
    assert f"dropped events_{older:%Y%m%d}" in done.stdout and f"dropped events_{old:%Y%m%d}" in done.stdout
    assert done.stdout.count("dropped events_") == 2, done.stdout

    assert await partition_days(conn) == {recent, now, now + dt.timedelta(days=2)}
    assert await conn.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'spring'") == 0
    assert await rollups(conn) == before, "retention keeps every rollup"
    assert await conn.fetchval("SELECT count(*) FROM campaign_batches WHERE campaign_id = 'spring'") == 0
    assert await conn.fetchval("SELECT count(*) FROM campaign_batches WHERE campaign_id = 'summer'") == 1
    # A campaign wholly within retention is still exact; one whose early events are gone cannot
    # be recomputed and is left out (trackd_rollup_drift), so verify passes.
    await assert_exact(conn, "summer")
    verified = run_cli("verify", env={"DATABASE_URL": fresh.url})
    assert verified.returncode == 0, verified.stdout + verified.stderr

    again = prune(fresh.url, TRACKD_RETENTION_DAYS="7")
    assert again.returncode == 0 and "no partition to drop" in again.stdout, again.stdout


async def test_prune_never_drops_today_or_a_future_partition(fresh: DB) -> None:
    conn = fresh.conn
    now = await today(conn)
    days = [now - dt.timedelta(days=2), now - dt.timedelta(days=1), now, now + dt.timedelta(days=1)]
    await insert(conn, [e for d in days for e in events_on(d, f"c{d:%d}")])
    done = prune(fresh.url, TRACKD_RETENTION_DAYS="1")
    assert done.returncode == 0, done.stderr
    # Yesterday's partition still holds events younger than a day.
    assert await partition_days(conn) == set(days[1:])
    assert not prune(fresh.url).stdout.count("dropped"), "unset: kept forever"
    assert await partition_days(conn) == set(days[1:])


def test_the_cutoff_is_never_after_the_start_of_today() -> None:
    at = dt.datetime(2026, 12, 4, 0, 0, 1, tzinfo=dt.UTC)
    assert drop_cutoff(at, 0) is None
    assert drop_cutoff(at, 1) == dt.datetime(2026, 12, 3, 0, 0, 1, tzinfo=dt.UTC)
    late = dt.datetime(2026, 12, 4, 23, 59, tzinfo=dt.UTC)
    assert drop_cutoff(late, 1) == dt.datetime(2026, 12, 3, 23, 59, tzinfo=dt.UTC)
    assert drop_cutoff(late, 10_000) == late - dt.timedelta(days=10_000)


async def test_two_prunes_at_once_one_does_nothing_and_neither_fails(fresh: DB) -> None:
    conn = fresh.conn
    now = await today(conn)
    old = [now - dt.timedelta(days=d) for d in (20, 21, 22, 23)]
    await insert(conn, [e for d in old for e in events_on(d, "old")])
    env = {"DATABASE_URL": fresh.url, "TRACKD_RETENTION_DAYS": "5"}

    # Held by someone else: this run does nothing and says so.
    holder = await asyncpg.connect(fresh.url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock(hashtext('trackd_prune'))")
        busy = run_cli("prune", env=env)
        assert busy.returncode == 0 and "another trackd prune is running" in busy.stdout, busy.stdout
        assert await partition_days(conn) == set(old)
    finally:
        await holder.close()

    # Two at once: every partition dropped exactly once, both exit 0.
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "app.cli", "prune", cwd=ROOT,
                                                  env={**os.environ, **env}, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
    outs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    joined = "".join(out.decode() for out, _ in outs)
    for d in old:
        assert joined.count(f"dropped events_{d:%Y%m%d}") == 1, joined
    assert await partition_days(conn) == set()


async def test_prune_finishes_a_detach_an_earlier_run_left_pending(fresh: DB) -> None:
    conn = fresh.conn
    now = await today(conn)
    old = now - dt.timedelta(days=40)
    await insert(conn, events_on(old, "old"))
    # A transaction with a snapshot that can see the partition makes DETACH CONCURRENTLY wait in
    # its second phase; cancelled there (as a killed prune would be), the partition stays
    # detached-pending.
    blocker = await asyncpg.connect(fresh.url)
    try:
        tx = blocker.transaction(isolation="repeatable_read")
        await tx.start()
        await blocker.fetchval("SELECT count(*) FROM events")
        await conn.execute("SET statement_timeout = '1s'")
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.execute(f"ALTER TABLE events DETACH PARTITION events_{old:%Y%m%d} CONCURRENTLY")
        await conn.execute("RESET statement_timeout")
        await tx.rollback()
    finally:
        await blocker.close()
    assert await conn.fetchval("SELECT bool_or(inhdetachpending) FROM pg_inherits WHERE inhparent = 'events'::regclass")

    done = prune(fresh.url, TRACKD_RETENTION_DAYS="30")
    assert done.returncode == 0, done.stderr
    assert f"finished the detach of events_{old:%Y%m%d}" in done.stdout, done.stdout
    assert f"dropped events_{old:%Y%m%d}" in done.stdout
    assert await conn.fetchval("SELECT to_regclass($1)", f"events_{old:%Y%m%d}") is None


async def test_per_second_rows_have_their_own_retention(fresh: DB) -> None:
    conn = fresh.conn
    await conn.execute(
        "INSERT INTO interactions_per_second (second, campaign_id, kind, is_machine, events, max_lag_ms)"
        " SELECT date_trunc('second', now()) - make_interval(days => d), 'c', 'open', false, 1, 0"
        " FROM unnest(ARRAY[1, 13, 15, 40]) AS d"
    )
    done = prune(fresh.url, TRACKD_PER_SECOND_RETENTION_DAYS="14")
    assert done.returncode == 0, done.stderr
    assert "deleted 2 interactions_per_second rows older than 14 days" in done.stdout, done.stdout
    kept = await conn.fetchval("SELECT array_agg(extract(day FROM now() - second)::int ORDER BY second DESC)"
                               " FROM interactions_per_second")  # fmt: skip
    assert kept == [1, 13]
    forever = prune(fresh.url, TRACKD_PER_SECOND_RETENTION_DAYS="0")
    assert "deleted 0 interactions_per_second rows" in forever.stdout
    assert await conn.fetchval("SELECT count(*) FROM interactions_per_second") == 2


def test_prune_refuses_pgbouncer() -> None:
    done = run_cli("prune", env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/db", "TRACKD_DB_PGBOUNCER": "true"})
    assert done.returncode == 78 and "direct connection" in done.stderr, done.stderr


@pytest.mark.e2e
async def test_the_service_makes_partitions_ahead_and_reports_them(server: ServerProcess,
                                                                   db: asyncpg.Connection) -> None:  # fmt: skip
    now = await today(db)
    ahead = {now + dt.timedelta(days=i) for i in range(8)}  # TRACKD_PARTITIONS_AHEAD_DAYS=7
    deadline = time.monotonic() + 10  # the first round runs as the server becomes ready
    while not (ahead <= await partition_days(db) and metric(server.base_url, "trackd_events_partitions")):
        assert time.monotonic() < deadline, server.log()
        await asyncio.sleep(0.05)
    newest = max(await partition_days(db))
    assert metric(server.base_url, "trackd_events_newest_partition_timestamp_seconds") == (
        dt.datetime.combine(newest, dt.time(), dt.UTC).timestamp()
    )
    # Other tests of the session add partitions of their own after the last round: at least.
    assert metric(server.base_url, "trackd_events_partitions") >= len(ahead)
    assert metric(server.base_url, "trackd_events_bytes") > 0
    oldest = metric(server.base_url, "trackd_events_oldest_partition_timestamp_seconds")
    assert 0 < oldest <= dt.datetime.combine(now, dt.time(), dt.UTC).timestamp()


@pytest.mark.e2e
async def test_the_service_prunes_when_its_role_owns_events(tmp_path: Path, fresh: DB) -> None:
    conn = fresh.conn
    now = await today(conn)
    old = now - dt.timedelta(days=9)
    await insert(conn, events_on(old, "gone") + events_on(now, "kept"))
    env = {"TRACKD_RETENTION_DAYS": "3", "TRACKD_PARTITIONS_AHEAD_DAYS": "2"}
    with ServerProcess(tmp_path / "trackd", fresh.url, env=env) as srv:
        deadline = time.monotonic() + 20
        while old in await partition_days(conn) or "dropped events_" not in srv.log():
            assert time.monotonic() < deadline, srv.log()
            await asyncio.sleep(0.1)
        assert await partition_days(conn) == {now, now + dt.timedelta(days=1), now + dt.timedelta(days=2)}
        # The stats answer from the rollups, which retention keeps.
        stats = httpx.get(f"{srv.base_url}/v1/campaigns/gone/stats", headers={"Authorization": f"Bearer {API_KEY}"})
        assert stats.status_code == 200, stats.text
        assert (stats.json()["opens"], stats.json()["clicks"]) == (3, 3), stats.json()
        assert await conn.fetchval("SELECT sum(events) FROM rollup_totals WHERE campaign_id = 'gone'"
                                   " AND link_index = -1") == 6  # fmt: skip


@pytest.mark.e2e
async def test_the_service_role_makes_partitions_ahead_and_says_once_to_schedule_prune(tmp_path: Path,
                                                                                       fresh: DB) -> None:  # fmt: skip
    conn = fresh.conn
    now = await today(conn)
    old = now - dt.timedelta(days=9)
    await insert(conn, events_on(old, "old"))
    role = f"svc_{secrets.token_hex(4)}"
    await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE trackd_service")
    as_service = fresh.url.replace("postgres@", f"{role}@", 1)
    env = {"TRACKD_RETENTION_DAYS": "3", "TRACKD_MIGRATE": "false", "TRACKD_LIFECYCLE_INTERVAL_S": "0.2"}
    with ServerProcess(tmp_path / "trackd", as_service, env=env) as srv:
        ahead = {now + dt.timedelta(days=i) for i in range(8)}
        deadline = time.monotonic() + 10
        while not ahead <= await partition_days(conn):
            assert time.monotonic() < deadline, srv.log()
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # several rounds
        assert srv.log().count("this server does not prune (this role does not own `events`)") == 1, srv.log()
        assert "schedule `trackd prune`" in srv.log()
        assert old in await partition_days(conn)
        assert metric(srv.base_url, "trackd_events_partitions") == 9


async def test_prune_drops_a_table_an_earlier_run_detached_but_did_not_drop(fresh: DB) -> None:
    """A prune killed between its DETACH and its DROP leaves a table no partition list shows."""
    conn = fresh.conn
    now = await today(conn)
    old = now - dt.timedelta(days=20)
    await insert(conn, events_on(old, "autumn"))
    await conn.execute(f"ALTER TABLE events DETACH PARTITION events_{old:%Y%m%d}")
    done = prune(fresh.url, TRACKD_RETENTION_DAYS="7")
    assert done.returncode == 0, done.stderr
    assert f"dropped events_{old:%Y%m%d}, detached by an earlier prune" in done.stdout, done.stdout
    assert await conn.fetchval("SELECT to_regclass($1)", f"events_{old:%Y%m%d}") is None
