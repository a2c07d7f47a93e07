"""Shared fixtures: a real PostgreSQL (embedded unless DATABASE_URL is set), a fresh database
per test session, and a real trackd server process talking to it."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from app.db import migrate, migration_files
from app.pgserver import EmbeddedPostgres
from tests.support import API_KEY, BROWSER_UA, PgBouncer, ServerProcess, embedded_postgres, pgbouncer


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres | None]:
    """The embedded server, or None when the tests run against DATABASE_URL."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    with embedded_postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def admin_dsn(embedded_pg: EmbeddedPostgres | None) -> str:
    return embedded_pg.dsn if embedded_pg else os.environ["DATABASE_URL"]


def _with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    query = ""
    if "?" in dsn.rsplit("/", 1)[1]:
        query = "?" + dsn.rsplit("?", 1)[1]
    return f"{base}/{name}{query}"


async def apply_migrations(conn: asyncpg.Connection, *, start: str = "", stop: str | None = None) -> None:
    """Apply the migrations named from `start` up to (not including) `stop` and record them as
    app.db.migrate does: a database left at an older version, to upgrade in a test."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS trackd_migrations"
        " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for name, sql in migration_files():
        if name < start or (stop is not None and name >= stop):
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("INSERT INTO trackd_migrations (name) VALUES ($1)", name)


async def create_database(admin_dsn: str) -> str:
    name = f"trackd_test_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(admin_dsn, name)


@pytest.fixture(scope="session")
def database_url(admin_dsn: str) -> str:
    """A fresh database for this test session."""
    return asyncio.run(create_database(admin_dsn))


@pytest.fixture
def fresh_database_url(admin_dsn: str) -> str:
    """A fresh database for one test (for tests that count every row)."""
    return asyncio.run(create_database(admin_dsn))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServerProcess]:
    """One real uvicorn server process shared by the end-to-end tests."""
    srv = ServerProcess(tmp_path_factory.mktemp("trackd"), database_url).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    # A person's browser: httpx's own user agent would be judged a machine's (http_library).
    with httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False,
                      headers={"User-Agent": BROWSER_UA}) as c:  # fmt: skip
        yield c


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.base_url, timeout=10, headers=headers) as c:
        yield c


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def bouncer(admin_dsn: str) -> Iterator[PgBouncer]:
    """A real pgbouncer (Debian package `pgbouncer`) in transaction pooling mode with one server
    connection per database, so that every client of a database shares it, as many pods do in
    production. Never skipped: a missing pgbouncer fails the tests, naming the package."""
    with pgbouncer(admin_dsn, pool_size=1) as b:
        yield b


@pytest.fixture
async def fresh_db(admin_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh, migrated database of its own (UTC), for tests that compare every
    rollup with a recount of the events (nothing else in it)."""
    conn = await asyncpg.connect(await create_database(admin_dsn))
    await conn.execute("SET TIME ZONE 'UTC'")
    await migrate(conn)
    try:
        yield conn
    finally:
        await conn.close()
