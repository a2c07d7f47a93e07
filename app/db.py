"""The PostgreSQL side: where it is (given or embedded), the pool, and the schema migrations."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from app.settings import Settings

log = logging.getLogger("trackd.db")

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x7472_6B64  # "trkd"

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
# A connection of its own (the CLI, the tests) or one borrowed from the pool. asyncpg makes the
# pool's proxy pass for a Connection at run time; its stubs keep them apart, so code that works
# on either says so. (Quoted: asyncpg's classes are not subscriptable at run time.)
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("app") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text("utf-8")) for name in names]


async def pending_migrations(conn: Connection) -> list[str]:
    """The migrations this version has that the database has not applied yet. Needs only SELECT
    on trackd_migrations, so the service role (docs/database-roles.md) can ask."""
    names = [name for name, _ in migration_files()]
    if await conn.fetchval("SELECT to_regclass('trackd_migrations')") is None:
        return names
    done = {r["name"] for r in await conn.fetch("SELECT name FROM trackd_migrations")}
    return [name for name in names if name not in done]


def _log_trackd_notice(conn: Connection, message: asyncpg.PostgresLogMessage, /) -> None:
    # Only trackd's own notices (migration 005: a group role that could not be created), not
    # PostgreSQL's chatter ("relation already exists, skipping").
    text = str(getattr(message, "message", message))
    if text.startswith("trackd: "):
        log.warning("%s", text.removeprefix("trackd: "))


# How long the client waits for one migration (the server's statement_timeout is off for them).
_MIGRATION_TIMEOUT_S = 6 * 3600.0


async def migrate(conn: Connection) -> list[str]:
    """Apply pending migrations in order, each in its own transaction, under a transaction-level
    advisory lock, so that several pods or workers starting at once apply each exactly once. Then
    (re)apply the database roles' grants (migration 005), so that a role a DBA created since the
    last run gets them.

    Transaction-level, not session-level: through PgBouncer in transaction pooling mode a session
    lock is taken on whichever server connection ran that one statement, while the next statement
    may run on another; and another pod sharing that server connection would "take" it again at
    once (session locks are re-entrant). A transaction holds its server connection to the end, so
    pg_advisory_xact_lock holds there as it does on a direct connection (tests/test_pgbouncer.py).
    """
    applied: list[str] = []
    conn.add_log_listener(_log_trackd_notice)
    try:
        for name, sql in migration_files():
            async with conn.transaction(isolation="read_committed"):
                # A migration may rebuild what a big table holds (a backfill), and waiting for the
                # lock is waiting for another pod's migration: neither is cut short by
                # TRACKD_DB_STATEMENT_TIMEOUT_MS, which is meant for the service's own statements.
                await conn.execute("SET LOCAL statement_timeout = 0")
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK, timeout=_MIGRATION_TIMEOUT_S)
                # Inside the lock: whoever held it before us may have just applied this one.
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS trackd_migrations"
                    " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                if await conn.fetchval("SELECT 1 FROM trackd_migrations WHERE name = $1", name):
                    continue
                await conn.execute(sql, timeout=_MIGRATION_TIMEOUT_S)
                await conn.execute("INSERT INTO trackd_migrations (name) VALUES ($1)", name)
            log.info("applied migration %s", name)
            applied.append(name)
        if not applied and await conn.fetchval("SELECT to_regprocedure('trackd_apply_grants()')") is not None:
            async with conn.transaction(isolation="read_committed"):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute("SELECT trackd_apply_grants()")
    finally:
        conn.remove_log_listener(_log_trackd_notice)
    return applied


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


async def _no_reset(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Through PgBouncer (transaction pooling) a connection has no session state of its own to
    reset: asyncpg's default reset (pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL)
    would run on whichever server connection is free, undoing the settings PgBouncer keeps for
    another client there (its TimeZone, application_name) and releasing its session locks."""


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """What asyncpg needs to talk to PostgreSQL directly or through PgBouncer (db_pgbouncer)."""
    if not settings.db_pgbouncer:
        return {
            "server_settings": {
                "application_name": "trackd",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        }
    return {
        # No named prepared statements: they live in one server connection, and in transaction
        # pooling the next query may run on another (or on one where another client already
        # prepared __asyncpg_stmt_1__). asyncpg then uses the unnamed statement, which PgBouncer
        # keeps on one server connection from Parse to Sync. PgBouncer 1.18 (bookworm) has no
        # prepared statement support at all (max_prepared_statements came in 1.21).
        "statement_cache_size": 0,
        # PgBouncer refuses startup parameters it does not track itself ("unsupported startup
        # parameter: statement_timeout"), and ignore_startup_parameters would silently drop it.
        # It does track application_name and TimeZone, and sets them on whichever server
        # connection runs our transaction; the statement timeout is set per transaction where it
        # matters (the writer) and on the role (docs/scaling.md).
        "server_settings": {"application_name": "trackd", "TimeZone": "UTC"},
    }


async def connect(settings: Settings, dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection of its own (`trackd migrate`), direct or through PgBouncer."""
    return await asyncpg.connect(dsn, **connect_kwargs(settings))


async def create_pool(settings: Settings, dsn: str) -> Pool:
    bounced = settings.db_pgbouncer
    return await asyncpg.create_pool(
        dsn,
        # No floor: with the database down, a floor makes asyncpg log a traceback every second.
        min_size=0,
        max_size=settings.db_pool_max,
        # Through PgBouncer a session SET lands on one server connection and leaks to whichever
        # client gets it next: the time zone is a startup parameter PgBouncer tracks instead.
        init=None if bounced else _init_connection,
        reset=_no_reset if bounced else None,
        # The server's statement_timeout cancels a slow statement cleanly; the client-side timeout
        # is the backstop for a server or network that no longer answers at all.
        command_timeout=settings.db_statement_timeout_ms / 1000 + 2,
        # A connection that survived a server restart is found dead at its next use; close idle
        # ones early so that a restart costs at most one failed batch (asyncpg #447, #624, #704).
        max_inactive_connection_lifetime=30,
        **connect_kwargs(settings),
    )
