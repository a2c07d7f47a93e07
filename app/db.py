"""The PostgreSQL side: where it is (given or embedded), the pool, and the schema migrations."""

from __future__ import annotations

import logging
from importlib import resources
from typing import TypeAlias

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


async def migrate(conn: Connection) -> list[str]:
    """Apply pending migrations in order, each in its own transaction, under an advisory lock
    so that several pods or workers starting at once apply each migration exactly once. Then
    (re)apply the database roles' grants (migration 005), so that a role a DBA created since the
    last run gets them."""
    applied: list[str] = []
    conn.add_log_listener(_log_trackd_notice)
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS trackd_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM trackd_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO trackd_migrations (name) VALUES ($1)", name)
            log.info("applied migration %s", name)
            applied.append(name)
        if not applied and await conn.fetchval("SELECT to_regprocedure('trackd_apply_grants()')") is not None:
            await conn.execute("SELECT trackd_apply_grants()")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        conn.remove_log_listener(_log_trackd_notice)
    return applied


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


async def create_pool(settings: Settings, dsn: str) -> Pool:
    return await asyncpg.create_pool(
        dsn,
        # No floor: with the database down, a floor makes asyncpg log a traceback every second.
        min_size=0,
        max_size=settings.db_pool_max,
        init=_init_connection,
        # The server's statement_timeout cancels a slow statement cleanly; the client-side timeout
        # is the backstop for a server or network that no longer answers at all.
        command_timeout=settings.db_statement_timeout_ms / 1000 + 2,
        server_settings={
            "application_name": "trackd",
            "statement_timeout": str(settings.db_statement_timeout_ms),
        },
        # A connection that survived a server restart is found dead at its next use; close idle
        # ones early so that a restart costs at most one failed batch (asyncpg #447, #624, #704).
        max_inactive_connection_lifetime=30,
    )
