"""trackd through a real PgBouncer (Debian package `pgbouncer`, 1.18 on bookworm) in transaction
pooling mode, with one server connection per database shared by every client (the `bouncer`
fixture): each thing trackd does with PostgreSQL is tried through it, not assumed to work
(docs/scaling.md, "Through PgBouncer")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.copyrows import COPY_HEADER, COPY_TRAILER
from app.db import Pool, connect, create_pool, migrate, migration_files
from app.journal import Journal
from app.metrics import Metrics
from app.settings import FsyncPolicy, Settings
from app.writer import Writer
from tests.support import API_KEY, ROOT, PgBouncer, ServerProcess, pgbouncer, wait_for_count
from tests.test_writer import chunks_of, raw_events

BOUNCED = {"TRACKD_DB_PGBOUNCER": "true"}


def bounced_settings(dsn: str, tmp_path: Path) -> Settings:
    return Settings(database_url=dsn, data_dir=tmp_path, db_pgbouncer=True)


@pytest.fixture
def bounced_url(bouncer: PgBouncer, fresh_database_url: str) -> str:
    """A fresh database, reached through pgbouncer."""
    return bouncer.dsn(fresh_database_url)


@pytest.fixture
async def bounced_pool(bounced_url: str, tmp_path: Path) -> AsyncIterator[Pool]:
    pool = await create_pool(bounced_settings(bounced_url, tmp_path), bounced_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), 10)


def test_the_bouncer_really_pools_transactions(bouncer: PgBouncer) -> None:
    # The fixture is what production runs: a regression in it would make every test below vacuous.
    config = (bouncer.dir / "pgbouncer.ini").read_text()
    assert "pool_mode = transaction" in config and "default_pool_size = 1" in config
    assert "ignore_startup_parameters =\n" in config


def test_the_setting_is_off_by_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().db_pgbouncer is False
    monkeypatch.setenv("TRACKD_DB_PGBOUNCER", "true")
    assert Settings().db_pgbouncer is True


@pytest.mark.parametrize("server_connections", [1, 3])
async def test_many_pools_share_few_server_connections(server_connections: int, admin_dsn: str,
                                                       fresh_database_url: str, tmp_path: Path) -> None:  # fmt: skip
    # Three "pods", each a pool of several connections, on one server connection (or on three,
    # so that consecutive statements of one client land on different ones): asyncpg's named
    # prepared statements (its statement cache) would collide there ("prepared statement
    # __asyncpg_stmt_1__ already exists") or be missing on the server a query lands on, and a
    # statement_timeout startup parameter is refused by PgBouncer outright. (asyncpg's unnamed
    # statement is safe: Parse/Describe end in Flush, not Sync, so PgBouncer keeps the server
    # connection until the Bind/Execute's Sync.)
    with pgbouncer(admin_dsn, pool_size=server_connections) as own:
        await _many_pools(own.dsn(fresh_database_url), tmp_path)


async def _many_pools(bounced_url: str, tmp_path: Path) -> None:
    settings = bounced_settings(bounced_url, tmp_path)
    # Server sessions start in another time zone, and another client leaves a session SET on the
    # one server connection: trackd's connections must still be in UTC.
    database = bounced_url.rsplit("/", 1)[1]
    await execute_once(bounced_url, f"ALTER DATABASE \"{database}\" SET TimeZone = 'Asia/Tokyo'")
    pools = [await create_pool(settings, bounced_url) for _ in range(3)]
    await execute_once(bounced_url, "SET TimeZone = 'America/New_York'")
    try:

        async def queries(pool: Pool) -> list[int]:
            out = []
            for i in range(20):
                # Parameters, so that asyncpg must use the extended protocol; types asyncpg must
                # know (uuid, inet, timestamptz, arrays).
                value = await pool.fetchval(
                    "SELECT $1::int + cardinality($2::text[]) + (CASE WHEN $3::uuid IS NULL THEN 0 ELSE 1 END)"
                    " + (CASE WHEN $4::inet << '10.0.0.0/8' THEN 1 ELSE 0 END)"
                    " + extract(year FROM $5::timestamptz)::int",
                    i, ["a", "b"], uuid.uuid4(), "10.1.2.3", time_of(2026),
                )  # fmt: skip
                out.append(value)
            return out

        results = await asyncio.gather(*(queries(pool) for pool in pools for _ in range(3)))
        assert all(r == [i + 2 + 1 + 1 + 2026 for i in range(20)] for r in results)
        # The session settings trackd relies on still hold on whichever server connection runs it.
        for pool in pools:
            assert await pool.fetchval("SHOW TimeZone") == "UTC"
            assert await pool.fetchval("SELECT current_setting('application_name')") == "trackd"
    finally:
        for pool in pools:
            await asyncio.wait_for(pool.close(), 10)


async def execute_once(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def time_of(year: int) -> object:
    import datetime as dt

    return dt.datetime(year, 6, 1, tzinfo=dt.UTC)


async def test_concurrent_migrations_through_pgbouncer_apply_each_once(bounced_url: str, tmp_path: Path) -> None:
    # A session advisory lock means nothing through transaction pooling: the lock is taken on
    # whichever server connection ran that statement, and another pod on the same server
    # connection "takes" it again at once (session locks are re-entrant), so both migrate.
    settings = bounced_settings(bounced_url, tmp_path)
    conns = [await connect(settings, bounced_url) for _ in range(4)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(migrate(c) for c in conns)), 60)
    finally:
        for c in conns:
            await c.close()
    names = [name for name, _ in migration_files()]
    assert sorted(n for applied in results for n in applied) == names  # each exactly once
    direct = await asyncpg.connect(bounced_url)  # through pgbouncer too: nothing left locked
    try:
        # This database's locks: pg_locks is the whole cluster's, where other tests' servers judge
        # deferred verdicts every second (a transaction-level advisory lock for a few ms).
        assert await direct.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ) == 0  # fmt: skip
        assert await direct.fetchval("SELECT count(*) FROM trackd_migrations") == len(names)
    finally:
        await direct.close()


async def test_writer_batches_through_pgbouncer(bounced_pool: Pool, tmp_path: Path, fresh_database_url: str) -> None:
    # The straight COPY into events, the stage table with INSERT ... ON CONFLICT (a replay), SET
    # LOCAL for the per-second trigger, and executemany into the dead letters: all on the one
    # server connection other clients use between our transactions.
    settings = bounced_settings("postgresql://unused@127.0.0.1:1/x", tmp_path)
    journal = Journal(tmp_path / "j", max_bytes=1 << 20, segment_bytes=1 << 16, fsync=FsyncPolicy.never,
                      fsync_interval_s=1)  # fmt: skip
    writer = Writer(settings, journal, bounced_pool, Metrics())
    rows = chunks_of(raw_events("bounced", 200))
    other = await asyncpg.connect(fresh_database_url)  # a direct connection, to look
    try:
        async with bounced_pool.acquire() as conn:
            assert await writer._write(conn, rows, [], direct=True) == 200
        # Another client's transactions run on the same server connection in between.
        async with bounced_pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM events") == 200
        async with bounced_pool.acquire() as conn:
            assert await writer._write(conn, rows, [], direct=True) == 0  # COPY fails: the stage path
            assert await writer._write(conn, rows[:50], [], direct=False) == 0
        extra = chunks_of(raw_events("bounced", 30))
        dead = [(b"not a row", "test: refused", None)]
        async with bounced_pool.acquire() as conn:
            assert await writer._write(conn, extra, dead, direct=False) == 30  # stage path, fresh rows
        # A batch refused as data is bisected through the stage table, row by row.
        broken = b"".join([COPY_HEADER, b"\x00\x01garbage", COPY_TRAILER])
        async with bounced_pool.acquire() as conn:
            with pytest.raises(asyncpg.PostgresError):
                await writer._copy(conn, broken, direct=False)
        assert await other.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'bounced'") == 230
        per_second = "SELECT sum(events) FROM interactions_per_second WHERE campaign_id = 'bounced'"
        assert await other.fetchval(per_second) == 230  # SET LOCAL held inside each transaction
        assert await other.fetchval("SELECT count(*) FROM events_dead_letter") == 1
        # Nothing of trackd's lingers in the server connection for the next client to trip on.
        leftovers = "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
        assert await other.fetchval(leftovers) == 0
        async with bounced_pool.acquire() as conn:  # the one server connection the stage used
            assert await conn.fetchval("SELECT to_regclass('pg_temp.trackd_stage')") is None
    finally:
        await other.close()
        await writer.stop(5)


def test_trackd_migrate_through_pgbouncer(bounced_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": bounced_url, **BOUNCED}
    for expected in ("applied: 001", "nothing (up to date)"):
        done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert expected in done.stdout


async def test_serve_end_to_end_through_pgbouncer(bounced_url: str, fresh_database_url: str, tmp_path: Path) -> None:
    # Two real `trackd serve` processes (two pods) with their own journals, one server connection:
    # the hot path answers, the writers ship the journals, the API reads.
    servers = [ServerProcess(tmp_path / f"pod{i}", bounced_url, env=BOUNCED) for i in range(2)]
    for srv in servers:
        srv.start()
    conn = await asyncpg.connect(fresh_database_url)
    try:
        campaign = f"bounced-{uuid.uuid4()}"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        for n, srv in enumerate(servers):
            with httpx.Client(base_url=srv.base_url, timeout=10) as http:
                signed = http.post("/v1/tracking-urls", headers=headers, json={
                    "campaign_id": campaign, "recipient_id": f"r{n}", "links": ["https://example.com/a"],
                })  # fmt: skip
                assert signed.status_code == 200, signed.text
                urls = signed.json()
                for _ in range(5):
                    assert http.get(httpx.URL(urls["click_urls"][0]).raw_path.decode()).status_code == 302
                    assert http.get(httpx.URL(urls["open_url"]).raw_path.decode()).status_code == 200
        await wait_for_count(conn, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=20,
                             timeout=15)  # fmt: skip
        for srv in servers:
            stats = httpx.get(f"{srv.base_url}/v1/campaigns/{campaign}/stats", headers=headers, timeout=10).json()
            assert (stats["clicks"], stats["opens"], stats["unique_clicks"]) == (10, 10, 2)
            assert httpx.get(f"{srv.base_url}/readyz", timeout=5).status_code == 200
            # The analytics reads (app.analytics) through the bouncer too: links, series, the feed.
            with httpx.Client(base_url=srv.base_url, headers=headers, timeout=10) as http:
                links = http.get(f"/v1/campaigns/{campaign}/links").json()["links"]
                assert [(link["index"], link["clicks"], link["unique_clicks"]) for link in links] == [(0, 10, 2)]
                series = http.get(f"/v1/campaigns/{campaign}/series", params={"interval": "minute"}).json()
                assert sum(b["clicks"] for b in series["series"]) == 10
                feed = http.get("/v1/events", params={"campaign_id": campaign, "limit": 15}).json()
                rest = http.get("/v1/events", params={"campaign_id": campaign, "after": feed["next"]}).json()
                assert len({e["id"] for e in feed["events"] + rest["events"]}) == 20
    finally:
        await conn.close()
        for srv in servers:
            srv.stop()
    logs = "".join(srv.log() for srv in servers)
    for bad in ("prepared statement", "unsupported startup parameter", "Traceback"):
        assert bad not in logs, logs
