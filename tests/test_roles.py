"""Least privilege (docs/database-roles.md, migration 005): the owner migrates, the service role
records and reads events and makes partitions but cannot change the schema, and the grants
documented are the grants made.

Roles belong to a whole PostgreSQL cluster, not to one database: these tests run on an embedded
cluster of their own, so that which roles exist does not depend on what other tests did."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app import analytics
from app.api import _PER_SECOND_SQL
from app.db import create_pool, migrate, migration_files, pending_migrations
from app.events import EventIds, RawEvent
from app.heartbeat import Heartbeat
from app.journal import Journal
from app.metrics import Metrics
from app.pgserver import EmbeddedPostgres
from app.settings import FsyncPolicy, Settings
from app.writer import Writer
from tests.support import API_KEY, SIGNING_KEYS, ServerProcess, embedded_postgres, v1_payload, wait_for_count
from tests.test_writer import RING, chunks_of, raw_events
from trackd_links.tokens import KIND_CLICK, KeyRing

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "database-roles.md"


def dsn(pg: EmbeddedPostgres, user: str, database: str) -> str:
    return f"postgresql://{user}@127.0.0.1:{pg.port}/{database}"


async def run_as(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def migrate_as(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedPostgres]:
    with embedded_postgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def owned(cluster: EmbeddedPostgres) -> str:
    """A database owned by `trackd_owner` (may create roles, is no superuser), migrated by it;
    `svc` logs in as a member of trackd_service, `analyst` of trackd_reader. The database name."""
    admin = dsn(cluster, "postgres", "postgres")
    asyncio.run(run_as(admin, "CREATE ROLE trackd_owner LOGIN CREATEROLE", "CREATE DATABASE trackd OWNER trackd_owner"))
    applied = asyncio.run(migrate_as(dsn(cluster, "trackd_owner", "trackd")))
    assert "005_roles" in applied
    # The owner created the group roles, so it may grant them (PostgreSQL 16+: ADMIN OPTION).
    owner = dsn(cluster, "trackd_owner", "trackd")
    asyncio.run(run_as(owner, "CREATE ROLE svc LOGIN IN ROLE trackd_service",
                       "CREATE ROLE analyst LOGIN IN ROLE trackd_reader"))  # fmt: skip
    return "trackd"


@pytest.fixture
async def svc(cluster: EmbeddedPostgres, owned: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn(cluster, "svc", owned))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def owner(cluster: EmbeddedPostgres, owned: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn(cluster, "trackd_owner", owned))
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_owner_creates_the_group_roles_without_login(owner: asyncpg.Connection) -> None:
    roles = await owner.fetch(
        "SELECT rolname, rolcanlogin, rolcreaterole, rolcreatedb, rolsuper FROM pg_roles"
        " WHERE rolname IN ('trackd_service', 'trackd_reader') ORDER BY rolname"
    )
    assert [tuple(r) for r in roles] == [("trackd_reader", False, False, False, False),
                                         ("trackd_service", False, False, False, False)]  # fmt: skip


# -- the documented grants are the granted ones -----------------------------------------------------

_CATALOG_GRANTS = """
SELECT r.rolname, 'database' AS object, a.privilege_type
FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE d.datname = current_database()
UNION ALL
SELECT r.rolname, 'schema', a.privilege_type
FROM pg_namespace n, aclexplode(n.nspacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE n.oid = current_schema()::regnamespace
UNION ALL
SELECT r.rolname, 'table ' || c.relname, a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relnamespace = current_schema()::regnamespace
UNION ALL
SELECT r.rolname, 'function ' || p.oid::regprocedure::text, a.privilege_type
FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE p.pronamespace = current_schema()::regnamespace
"""


async def group_grants(conn: asyncpg.Connection) -> set[tuple[str, str, str]]:
    """What the catalog says trackd_service and trackd_reader may do, as (role, object, privilege)."""
    rows = await conn.fetch(_CATALOG_GRANTS)
    return {(r[0], r[1], r[2]) for r in rows if r[0] in ("trackd_service", "trackd_reader")}


def documented_grants() -> set[tuple[str, str, str]]:
    """The grants table of docs/database-roles.md, as (role, object, privilege)."""
    text = DOC.read_text("utf-8")
    table = text.split("<!-- grants:begin -->", 1)[1].split("<!-- grants:end -->", 1)[0]
    grants = set()
    for line in table.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("Role", "") or set(cells[0]) <= {"-"}:
            continue
        role, obj, privileges = cells
        obj = re.sub(r"`", "", obj)
        for privilege in privileges.split(","):
            grants.add((role, obj, privilege.strip()))
    return grants


async def test_the_documented_grants_are_the_granted_ones(owner: asyncpg.Connection) -> None:
    granted = await group_grants(owner)
    assert granted == documented_grants()
    # trackd's functions are not executable by everyone (PUBLIC), as functions are by default.
    public = await owner.fetch(
        "SELECT p.oid::regprocedure::text FROM pg_proc p, aclexplode(p.proacl) a"
        " WHERE p.pronamespace = current_schema()::regnamespace AND a.grantee = 0"
    )
    assert public == []
    # And running the grants again (every `trackd migrate` does) changes nothing.
    assert await migrate(owner) == []
    assert await group_grants(owner) == granted


# -- what the service role can do -----------------------------------------------------------------


@pytest.fixture
async def svc_writer(tmp_path: Path, cluster: EmbeddedPostgres, owned: str) -> AsyncIterator[Writer]:
    url = dsn(cluster, "svc", owned)
    settings = Settings(database_url=url, data_dir=tmp_path)
    pool = await create_pool(settings, url)
    journal = Journal(tmp_path / "j", max_bytes=1 << 20, segment_bytes=1 << 16, fsync=FsyncPolicy.never,
                      fsync_interval_s=1)  # fmt: skip
    writer = Writer(settings, journal, pool, Metrics())
    yield writer
    await writer.stop(5)
    await asyncio.wait_for(pool.close(), 10)


async def test_the_service_role_runs_the_writers_real_paths(svc_writer: Writer, owner: asyncpg.Connection) -> None:
    rows = chunks_of(raw_events("roles-writer", 50))
    # Rows of a day no partition exists for yet: the writer makes it (trackd_ensure_partitions).
    later = time.time() + 40 * 86_400
    day = dt.datetime.fromtimestamp(later, dt.UTC).strftime("%Y%m%d")
    payload = v1_payload(RING, KIND_CLICK, "roles-writer", "r", "https://example.com/")
    ids = EventIds()
    events = [RawEvent(ids.next(later), later + i, False, payload, "127.0.0.1", None, b"UA") for i in range(5)]
    future = chunks_of(events)
    assert await owner.fetchval("SELECT to_regclass($1)", f"events_{day}") is None
    async with svc_writer.pool.acquire() as conn:
        assert await svc_writer._write(conn, rows + future, [], direct=True) == 55  # COPY into events
        # A replay: COPY into the temporary stage table, then INSERT ... ON CONFLICT DO NOTHING.
        assert await svc_writer._write(conn, rows + future, [], direct=True) == 0
        assert await svc_writer._write(conn, rows[:10], [], direct=False) == 0
        # A refused record goes to the dead letters.
        await svc_writer._write(conn, [], [(None, "test: refused", b"junk")], direct=False)
    assert await owner.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'roles-writer'") == 55
    counted = "SELECT sum(events) FROM interactions_per_second WHERE campaign_id = 'roles-writer'"
    assert await owner.fetchval(counted) == 55
    assert await owner.fetchval("SELECT count(*) FROM events_dead_letter WHERE error = 'test: refused'") == 1
    # The new partition belongs to the owner: the service cannot drop or alter it.
    partition_owner = "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass($1)"
    assert await owner.fetchval(partition_owner, f"events_{day}") == "trackd_owner"


async def test_the_service_role_keeps_the_heartbeats(svc_writer: Writer, owner: asyncpg.Connection) -> None:
    """As the service role: a writer upserts its heartbeat, a pod that stopped beating shows as not
    reporting (and out of the totals), and one gone for long is pruned (migration 006)."""
    await owner.execute("DELETE FROM writer_heartbeats")
    insert = ("INSERT INTO writer_heartbeats (instance, host, pid, version, writer_state, backlog_rows,"
              " backlog_bytes, updated_at) VALUES ($1, 'h', 1, 'v', 'retrying', 7, 70,"
              " now() - make_interval(secs => $2))")  # fmt: skip
    await owner.execute(insert, "quiet:1", 45.0)
    await owner.execute(insert, "long-gone:1", 7200.0)
    beat = Heartbeat(svc_writer.pool, svc_writer)
    await beat.beat()
    await beat.beat()  # an update of the same row, not a second row
    assert await owner.fetchval("SELECT count(*) FROM writer_heartbeats WHERE instance = $1", beat.instance) == 1
    assert await owner.fetchval("SELECT count(*) FROM writer_heartbeats WHERE instance = 'long-gone:1'") == 0
    fleet = await beat.fleet()
    assert fleet["database"] == "ok"
    by_instance = {p["instance"]: p for p in fleet["pods"]}
    assert set(by_instance) == {beat.instance, "quiet:1"}
    assert by_instance[beat.instance]["this"] and by_instance[beat.instance]["reporting"]
    assert not by_instance["quiet:1"]["reporting"] and by_instance["quiet:1"]["age_s"] >= 45
    assert fleet["backlog"] == {"rows": 0, "bytes": 0, "oldest_pending_age_s": None, "pods_reporting": 1,
                                "pods_not_reporting": 1}  # fmt: skip
    await beat.forget()  # a clean stop with nothing pending: the row goes
    assert await owner.fetchval("SELECT count(*) FROM writer_heartbeats WHERE instance = $1", beat.instance) == 0


async def test_the_service_role_reads_what_the_api_reads(svc: asyncpg.Connection) -> None:
    await svc.execute("SET TIME ZONE 'UTC'")
    stats = analytics.stats("roles-nothing", await svc.fetch(analytics.STATS_SQL, "roles-nothing"))
    assert stats["opens"] == 0 and stats["sent"] is None
    assert await svc.fetch(analytics.LINKS_SQL, "roles-nothing") == []
    window = analytics.series_window("minute", None, None, time.time())
    assert await svc.fetch(window.interval.sql, *analytics.series_args("roles-nothing", window)) == []
    start = analytics.START
    await svc.fetch(analytics.FEED_SQL, str(start[0]), start[1], 10)
    assert await svc.fetch(analytics.FEED_BATCHES_SQL, *analytics.feed_batches_args("roles-nothing", start, 10)) == []
    (nobody,) = await svc.fetch(analytics.RECIPIENT_SQL, *analytics.recipient_args("roles-nobody"))
    assert nobody["campaign_id"] is None
    (sent,) = await svc.fetch(analytics.SENDS_SQL, "roles-sends", "r1", 5)
    assert (sent["recorded"], sent["sent"]) == (1, 5)
    assert await svc.fetchval(analytics.ERASE_SQL, "roles-nobody") == 0
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert len(await svc.fetch(_PER_SECOND_SQL, now - dt.timedelta(seconds=9), now, None)) == 10
    assert await pending_migrations(svc) == []


CANNOT = [
    "DROP TABLE events",
    "ALTER TABLE events ADD COLUMN extra text",
    "ALTER TABLE events DROP COLUMN url",
    "ALTER TABLE events RENAME TO old_events",
    "ALTER TABLE events DISABLE TRIGGER events_rollup",
    "TRUNCATE events",
    "DELETE FROM events",
    "UPDATE events SET url = NULL",
    "CREATE TABLE mine (x int)",
    "CREATE TABLE events_29991231 PARTITION OF events FOR VALUES FROM ('2999-12-31') TO ('3000-01-01')",
    "CREATE INDEX ON events (url)",
    "DROP FUNCTION trackd_ensure_partitions(date[])",
    "CREATE OR REPLACE FUNCTION trackd_rollup() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
    "SELECT * FROM events_dead_letter",
    "DELETE FROM interactions_per_second",
    "TRUNCATE interactions_per_second",
    "DROP TABLE interactions_per_second",
    "INSERT INTO trackd_migrations (name) VALUES ('999_mine')",
    "SELECT trackd_apply_grants()",
]


@pytest.mark.parametrize("sql", CANNOT)
async def test_the_service_role_cannot_change_the_schema_or_the_recorded_events(svc: asyncpg.Connection,
                                                                                sql: str) -> None:  # fmt: skip
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await svc.execute(sql)


async def test_the_service_role_cannot_drop_the_partitions_it_made(svc: asyncpg.Connection) -> None:
    await svc.execute("SELECT trackd_ensure_partitions(ARRAY['2030-01-02']::date[])")
    for sql in ("DROP TABLE events_20300102", "ALTER TABLE events DETACH PARTITION events_20300102",
                "TRUNCATE events_20300102", "SELECT * FROM events_20300102"):  # fmt: skip
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await svc.execute(sql)


async def test_the_partition_function_is_safe_to_run_with_the_owners_rights(svc: asyncpg.Connection) -> None:
    """SECURITY DEFINER with a fixed search_path: the caller's temporary tables cannot stand in
    for `events` or for a partition, and the function cannot be replaced by the service."""
    config = await svc.fetchrow(
        "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'trackd_ensure_partitions(date[])'::regprocedure"
    )
    assert config["prosecdef"] is True and config["proconfig"] == ["search_path=pg_catalog, pg_temp"]
    await svc.execute("CREATE TEMP TABLE events_20300105 (x int)")
    await svc.execute("CREATE TEMP TABLE events (LIKE public.events)")
    await svc.execute("SET search_path = pg_temp, public")
    await svc.execute("SELECT trackd_ensure_partitions(ARRAY['2030-01-05']::date[])")
    partition = await svc.fetchrow(
        "SELECT c.relispartition, pg_get_userbyid(c.relowner) AS owner, i.inhparent::regclass::text AS parent"
        " FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.oid = 'public.events_20300105'::regclass"
    )
    assert tuple(partition) == (True, "trackd_owner", "public.events")
    with pytest.raises(asyncpg.NullValueNotAllowedError):  # a NULL day is refused, not skipped
        await svc.execute("SELECT trackd_ensure_partitions(ARRAY[NULL]::date[])")


async def test_the_service_role_cannot_migrate(cluster: EmbeddedPostgres, owned: str) -> None:
    admin = dsn(cluster, "postgres", "postgres")
    await run_as(admin, "CREATE DATABASE trackd_unmigrated OWNER trackd_owner")
    conn = await asyncpg.connect(dsn(cluster, "svc", "trackd_unmigrated"))
    try:
        assert await pending_migrations(conn) == [name for name, _ in migration_files()]
        assert len(migration_files()) >= 8
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await migrate(conn)
    finally:
        await conn.close()


async def test_the_reader_role_only_reads(cluster: EmbeddedPostgres, owned: str) -> None:
    conn = await asyncpg.connect(dsn(cluster, "analyst", owned))
    try:
        for table in (
            "events",
            "interactions_per_second",
            "events_dead_letter",
            "trackd_migrations",
            "writer_heartbeats",
        ):
            await conn.fetch(f"SELECT * FROM {table} LIMIT 1")
        for sql in ("INSERT INTO events_dead_letter (error, row_repr) VALUES ('x', 'y')", "DELETE FROM events",
                    "SELECT trackd_ensure_partitions(ARRAY['2030-01-03']::date[])", "DROP TABLE events"):  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()


# -- a migrating role that may not create roles ------------------------------------------------------


async def test_migrate_without_createrole_succeeds_and_says_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    with embedded_postgres() as pg:  # a cluster where the group roles do not exist
        admin = dsn(pg, "postgres", "postgres")
        await run_as(admin, "CREATE ROLE plain_owner LOGIN", "CREATE DATABASE trackd OWNER plain_owner")
        url = dsn(pg, "plain_owner", "trackd")
        with caplog.at_level(logging.WARNING, logger="trackd.db"):
            assert "005_roles" in await migrate_as(url)
        said = [r.getMessage() for r in caplog.records if r.name == "trackd.db"]
        assert any("role trackd_service does not exist" in m and "CREATE ROLE trackd_service NOLOGIN" in m
                   for m in said), said  # fmt: skip
        # The DBA does as told (docs/database-roles.md), then the owner runs `trackd migrate` again.
        await run_as(admin, "CREATE ROLE trackd_service NOLOGIN", "CREATE ROLE trackd_reader NOLOGIN",
                     "CREATE ROLE svc LOGIN IN ROLE trackd_service")  # fmt: skip
        svc_url = dsn(pg, "svc", "trackd")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_as(svc_url, "SELECT trackd_ensure_partitions(ARRAY[current_date])")
        assert await migrate_as(url) == []
        await run_as(svc_url, "SELECT trackd_ensure_partitions(ARRAY[current_date])",
                     "INSERT INTO events_dead_letter (error, row_repr) VALUES ('x', 'y')")  # fmt: skip


# -- `trackd serve` as the service role, end to end ---------------------------------------------------


def test_serve_as_the_service_role_waits_for_the_owner_then_records_a_click(tmp_path: Path, cluster: EmbeddedPostgres,
                                                                            owned: str) -> None:  # fmt: skip
    admin = dsn(cluster, "postgres", "postgres")
    asyncio.run(run_as(admin, "CREATE DATABASE trackd_e2e OWNER trackd_owner"))
    svc_url = dsn(cluster, "svc", "trackd_e2e")

    def wait_for_line(server: ServerProcess, line: str) -> None:
        deadline = time.monotonic() + 20
        while line not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert line in server.log(), server.log()

    # Migrations pending, and serve (by default) tries them: one clear line, unready, no exit.
    # With TRACKD_MIGRATE=false it does not try: it waits for the owner's `trackd migrate`.
    with (
        ServerProcess(tmp_path / "a", svc_url).start(wait_ready=False) as tries,
        ServerProcess(tmp_path / "b", svc_url, env={"TRACKD_MIGRATE": "false"}).start(wait_ready=False) as waits,
    ):
        wait_for_line(tries, "may not apply migrations")
        assert "set TRACKD_MIGRATE=false" in tries.log()
        wait_for_line(waits, "waiting for `trackd migrate`")
        for server in (tries, waits):
            assert httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 503
        time.sleep(1)
        assert tries.log().count("may not apply migrations") == 1, "said once, not at every retry"

        # The owner migrates: both go ready by themselves (neither migrates a current schema).
        assert asyncio.run(migrate_as(dsn(cluster, "trackd_owner", "trackd_e2e")))
        tries.wait_ready(timeout=20)
        waits.wait_ready(timeout=20)

        token = KeyRing.from_specs(SIGNING_KEYS.split(",")).sign_click("roles-e2e", "r1", 0, "https://example.com/x")
        for server in (tries, waits):
            answer = httpx.get(f"{server.base_url}/c/{token}", timeout=5)
            assert answer.status_code == 302 and answer.headers["location"] == "https://example.com/x"

        async def recorded() -> None:
            conn = await asyncpg.connect(dsn(cluster, "trackd_owner", "trackd_e2e"))
            try:
                await wait_for_count(conn, "SELECT count(*) FROM events WHERE campaign_id = 'roles-e2e'", expected=2)
            finally:
                await conn.close()

        asyncio.run(recorded())
        # The API reads as the service role too.
        stats = httpx.get(f"{waits.base_url}/v1/campaigns/roles-e2e/stats", timeout=5,
                          headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
        assert stats.status_code == 200 and stats.json()["clicks"] == 2
        for server in (tries, waits):
            assert "Traceback" not in server.log()


async def test_a_planted_function_is_never_run_as_the_owner(svc: asyncpg.Connection, owner: asyncpg.Connection) -> None:
    """Where the service role may create objects in trackd's schema (PostgreSQL 14 and older let
    PUBLIC do so in `public`), it plants exact-match overloads of what the partition function
    calls: none of them runs, with the owner's rights or at all."""
    await owner.execute("GRANT CREATE ON SCHEMA public TO trackd_service")
    planted = [
        "public.to_char(date, text) RETURNS text",
        "public.format(text, text, text) RETURNS text",
        "public.hashtext(text) RETURNS int",
        "public.to_regclass(text) RETURNS regclass",
    ]
    try:
        for signature in planted:
            await svc.execute(
                f"CREATE FUNCTION {signature} LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'planted ran'; END $$"
            )
        await svc.execute("SET search_path = public, pg_catalog")
        await svc.execute("SELECT public.trackd_ensure_partitions(ARRAY['2030-02-07']::date[])")
        await svc.execute("RESET search_path")
        assert await svc.fetchval("SELECT pg_catalog.to_regclass('public.events_20300207') IS NOT NULL")
    finally:
        await svc.execute("RESET search_path")
        for signature in planted:
            await svc.execute(f"DROP FUNCTION IF EXISTS {signature.split(' RETURNS')[0]}")
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM trackd_service")


async def test_the_service_role_judges_deferred_verdicts(svc: asyncpg.Connection, owner: asyncpg.Connection) -> None:
    """As the service role: trackd_judge_verdicts (owner's rights) revises events and their
    rollups, which the service itself may not write; it reads how far judging has got."""
    at = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
    await owner.execute("SELECT trackd_ensure_partitions(ARRAY['2026-11-20']::date[])")
    await owner.execute(
        "INSERT INTO events (id, occurred_at, kind, campaign_id, recipient_id, link_index)"
        " SELECT gen_random_uuid(), $1::timestamptz + make_interval(secs => i * 0.3), 'click', 'roles-judge', 'r', i"
        " FROM generate_series(0, 2) AS i",
        at,
    )
    while (await svc.fetchrow("SELECT * FROM trackd_judge_verdicts()"))["more"]:
        pass
    reasons = await owner.fetch(
        "SELECT machine_reason FROM events WHERE campaign_id = 'roles-judge' ORDER BY occurred_at"
    )
    assert [r["machine_reason"] for r in reasons] == ["burst"] * 3
    assert await svc.fetchval("SELECT caught_up_at IS NOT NULL FROM verdict_progress")
    assert await owner.fetch("SELECT * FROM trackd_rollup_drift('roles-judge')") == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await svc.execute("UPDATE verdict_progress SET revised = 0")


async def test_a_migration_longer_than_the_statement_timeout_is_not_cut_short(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRACKD_DB_STATEMENT_TIMEOUT_MS is for the service's statements: a migration that rebuilds
    what a big table holds (and waiting for another pod's migration) takes what it takes."""
    import app.db

    files = migration_files()
    monkeypatch.setattr(app.db, "migration_files", lambda: [*files, ("999_slow.sql", "SELECT pg_sleep(0.6)")])
    conn = await asyncpg.connect(fresh_database_url, server_settings={"statement_timeout": "200"})
    try:
        applied = await migrate(conn)
        assert applied[-1] == "999_slow.sql"
        assert await conn.fetchval("SELECT count(*) FROM trackd_migrations WHERE name = '999_slow.sql'") == 1
        assert await conn.fetchval("SHOW statement_timeout") == "200ms"  # only the migrations' own
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.execute("SELECT pg_sleep(0.6)")
    finally:
        await conn.close()
