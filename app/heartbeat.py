"""Writer heartbeats (migration 006): every trackd process upserts a row with its backlog every
few seconds, so that the live page served by any one pod shows every pod's backlog
(`GET /v1/fleet`), and says plainly when PostgreSQL cannot be reached.

The heartbeat is a task of its own, with a statement of its own, on a short timeout: it never
runs in the path that ships events, and whatever happens to it (database down, table missing, a
lock) is swallowed here, so it can neither delay nor stop the writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, Literal

import asyncpg

from app import __version__
from app.db import Pool
from app.writer import Writer

log = logging.getLogger("trackd.heartbeat")

INTERVAL_S = 5.0
# A row older than this (by the database's clock) is a pod that is gone, hung, or cut off from
# PostgreSQL: shown as "not reporting", left out of the totals. Six missed beats.
STALE_AFTER_S = 30.0
# Rows older than this are deleted by whichever writer beats next: a pod that left long ago.
PRUNE_AFTER_S = 900.0
# The page polls every second: it must hear "unreachable" within about that, not after a
# TCP connect timeout.
TIMEOUT_S = 1.5

DatabaseState = Literal["ok", "unreachable", "busy", "error"]  # busy: no free pool connection in time
# Failures that mean "PostgreSQL cannot be reached (now)", as opposed to a refusal (no table yet,
# no right): the server is down, restarting, shutting down, or the network is cut.
_UNREACHABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError)  # fmt: skip

_BEAT = """
WITH pruned AS (
    DELETE FROM writer_heartbeats WHERE updated_at < now() - make_interval(secs => $10::float8) AND instance <> $1
)
INSERT INTO writer_heartbeats AS h (instance, host, pid, version, writer_state, backlog_rows, backlog_bytes,
                                    oldest_pending_age_s, last_commit_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::float8), now())
ON CONFLICT (instance) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
    writer_state = EXCLUDED.writer_state, backlog_rows = EXCLUDED.backlog_rows,
    backlog_bytes = EXCLUDED.backlog_bytes, oldest_pending_age_s = EXCLUDED.oldest_pending_age_s,
    last_commit_at = EXCLUDED.last_commit_at, updated_at = now()
"""
_FLEET = """
SELECT instance, host, pid, version, writer_state, backlog_rows, backlog_bytes, oldest_pending_age_s,
       extract(epoch FROM last_commit_at)::float8 AS last_commit_at,
       extract(epoch FROM now() - updated_at)::float8 AS age_s
FROM writer_heartbeats
WHERE updated_at >= now() - make_interval(secs => $1::float8)
ORDER BY instance
"""
_FORGET = "DELETE FROM writer_heartbeats WHERE instance = $1"


def instance_id() -> str:
    """hostname:pid. A pod's hostname is its name; the pid tells the workers of one pod apart."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    def __init__(self, pool: Pool, writer: Writer, *, interval_s: float = INTERVAL_S) -> None:
        self.pool = pool
        self.writer = writer
        self.interval_s = interval_s
        self.instance = instance_id()
        self.host = socket.gethostname()
        # When this process last found PostgreSQL unreachable, first in a row (None: it answered
        # the last time we asked). Kept here so the page can say "unreachable since ...".
        self.unreachable_since: float | None = None
        self.last_error: str | None = None

    # -- what this process knows without the database ----------------------------------------

    def own(self) -> dict[str, Any]:
        """This process's row, from the writer itself: never stale, and there when nothing else is."""
        w = self.writer
        now = time.time()
        oldest = w.oldest_pending_at()
        return {
            "instance": self.instance,
            "host": self.host,
            "pid": os.getpid(),
            "version": __version__,
            "writer_state": w.state,
            "backlog_rows": w.pending_rows,
            "backlog_bytes": w.pending_bytes(),
            "oldest_pending_age_s": None if oldest is None else round(max(0.0, now - oldest), 3),
            "last_commit_at": w.last_commit_at,
            "age_s": 0.0,
            "reporting": True,
            "this": True,
        }

    def _answered(self) -> None:
        if self.unreachable_since is not None:
            log.info("PostgreSQL answers heartbeats again")
        self.unreachable_since = None
        self.last_error = None

    def _pool_exhausted(self) -> bool:
        pool = self.pool
        return pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0

    def _failed(self, exc: BaseException) -> DatabaseState:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TimeoutError) and self._pool_exhausted():
            # Every connection busy (the writer, stats reads, other pages): that says nothing of
            # PostgreSQL, so no banner and no "unreachable since".
            return "busy"
        if isinstance(exc, _UNREACHABLE):
            if self.unreachable_since is None:
                self.unreachable_since = time.time()
            return "unreachable"
        return "error"

    # -- writing ------------------------------------------------------------------------------

    async def beat(self) -> None:
        own = self.own()
        values = [own[k] for k in ("instance", "host", "pid", "version", "writer_state", "backlog_rows",
                                   "backlog_bytes", "oldest_pending_age_s", "last_commit_at")]  # fmt: skip
        async with asyncio.timeout(TIMEOUT_S):
            async with self.pool.acquire() as conn:
                await conn.execute(_BEAT, *values, PRUNE_AFTER_S)

    async def run(self) -> None:
        """Beat every interval until cancelled. Never raises: a failed beat is logged once per kind
        of failure (the writer already says loudly that the database is down)."""
        said = ""
        while True:
            try:
                await self.beat()
                self._answered()
                said = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                kind = type(exc).__name__
                if kind != said:
                    log.warning("writing the heartbeat failed (%s: %s); the events are not affected", kind, exc)
                    said = kind
            await asyncio.sleep(self.interval_s)

    async def forget(self) -> None:
        """At a clean shutdown with nothing left in the journal: this process is not a pod that
        stopped reporting, it is gone. With a backlog left, the row stays (and goes stale)."""
        if self.unreachable_since is not None or self.writer.pending_rows:
            return
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async with self.pool.acquire() as conn:
                    await conn.execute(_FORGET, self.instance)
        except Exception as exc:  # shutdown goes on; the row goes stale, then is pruned
            log.debug("could not remove the heartbeat: %r", exc)

    # -- reading ------------------------------------------------------------------------------

    async def fleet(self) -> dict[str, Any]:
        """Every pod's last heartbeat (this one's live), the totals of the pods reporting, and
        whether PostgreSQL answers. Answers within TIMEOUT_S, whatever the database does."""
        own = self.own()
        pods: list[dict[str, Any]] = []
        database: DatabaseState = "ok"
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async with self.pool.acquire() as conn:
                    rows = await conn.fetch(_FLEET, PRUNE_AFTER_S)
            self._answered()
        except asyncpg.UndefinedTableError:
            rows = []  # migration 006 not applied yet: this pod is all we know of
        except Exception as exc:
            rows = []
            database = self._failed(exc)
        for row in rows:
            if row["instance"] == self.instance:
                continue
            pod = dict(row)
            pod["age_s"] = round(pod["age_s"], 3)
            pod["reporting"] = pod["age_s"] <= STALE_AFTER_S
            pod["this"] = False
            pods.append(pod)
        pods = sorted([own, *pods], key=lambda p: str(p["instance"]))
        live = [p for p in pods if p["reporting"]]
        ages = [p["oldest_pending_age_s"] for p in live if p["oldest_pending_age_s"] is not None]
        return {
            "database": database,
            "unreachable_since": self.unreachable_since if database == "unreachable" else None,
            "error": self.last_error if database != "ok" else None,
            "this": self.instance,
            "stale_after_s": STALE_AFTER_S,
            "backlog": {
                "rows": sum(p["backlog_rows"] for p in live),
                "bytes": sum(p["backlog_bytes"] for p in live),
                "oldest_pending_age_s": max(ages) if ages else None,
                "pods_reporting": len(live),
                "pods_not_reporting": len(pods) - len(live),
            },
            "pods": pods,
        }
