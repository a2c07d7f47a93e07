"""The lifecycle of stored events: daily partitions made ahead of time, retention (dropping old
partitions and old per-second rows), erasure of a recipient, and the proof that the rollups are
exact (verify). Each is a function taking a connection and the settings; `trackd prune | erase |
verify` (app/cli.py) and the service's lifecycle task (LifecycleTask, started by app/main.py) call
them. Operators' side: docs/runbook.md, "Retention, erasure and verify".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from app.db import Connection, Pool
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger("trackd.lifecycle")

# One prune at a time, across every pod and cron job: a session-level advisory lock, held on a
# connection of its own for the whole run. Session-level because DETACH ... CONCURRENTLY cannot
# run inside a transaction (so a transaction-level lock could not cover it); which is also why
# prune must talk to PostgreSQL directly, never through PgBouncer in transaction pooling mode
# (there a session lock lands on whichever server connection ran that one statement).
PRUNE_LOCK = "trackd_prune"
# What `trackd verify` prints of the drift before it only counts.
VERIFY_SHOWN = 50
# Per-second rows are deleted in chunks, each its own short transaction: the first prune after
# enabling retention may have months of rows to delete.
_PER_SECOND_CHUNK = 10_000

# Every daily partition of `events`: its bounds come from the catalog (what PostgreSQL routes by),
# not its name. A partition with other bounds (a DEFAULT one, MINVALUE) is not trackd's daily
# partition and is left alone.
_PARTITIONS = r"""
SELECT c.oid::regclass::text AS qualified, c.relname AS name,
       split_part(b.bound, '''', 2)::timestamptz AS starts,
       split_part(b.bound, '''', 4)::timestamptz AS ends,
       i.inhdetachpending AS detach_pending,
       pg_total_relation_size(c.oid) AS bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
WHERE i.inhparent = 'events'::regclass
  AND b.bound ~ '^FOR VALUES FROM \(''[^'']*''\) TO \(''[^'']*''\)$'
ORDER BY starts
"""
_PARENT = "SELECT 'events'::regclass::text"
# Today (UTC, by the database's clock) and the next `$1` days.
_ENSURE_AHEAD = """
SELECT trackd_ensure_partitions(ARRAY(
    SELECT (now() AT TIME ZONE 'UTC')::date + i FROM generate_series(0, $1::int) AS i
))
"""
# Dropping a partition needs ownership of `events` (as a member of the owning role, or superuser).
_MAY_DROP = "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = 'events'::regclass"
_NOW = "SELECT now()"
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"
_DELETE_PER_SECOND = """
WITH gone AS (
    DELETE FROM interactions_per_second WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM interactions_per_second WHERE second < $1 LIMIT $2))
    RETURNING 1
)
SELECT count(*) FROM gone
"""
# Daily tables of `events` that are no longer partitions of it: a prune stopped between its DETACH
# and its DROP (the process killed, the connection lost) leaves one, which no partition list shows.
_DETACHED = r"""
SELECT c.oid::regclass::text AS qualified, c.relname AS name, to_date(substr(c.relname, 8), 'YYYYMMDD') AS day
FROM pg_class c
WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'events'::regclass)
  AND c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ '^events_[0-9]{8}$'
ORDER BY 3
"""
_DELETE_BATCHES = """
WITH gone AS (DELETE FROM campaign_batches WHERE day < $1 RETURNING 1) SELECT count(*) FROM gone
"""
_ERASE = "SELECT trackd_erase_recipient($1)"
_DRIFT = "SELECT rollup, campaign_id, key, expected, actual FROM trackd_rollup_drift($1)"
_REBUILD = "SELECT trackd_rebuild_rollups($1)"
# Heavy statements (a full recomputation, a rebuild, a large erasure) are not cut off by the
# service's statement timeout: SET LOCAL, so that it also works through PgBouncer.
_NO_TIMEOUT = "SET LOCAL statement_timeout = 0"


# -- partitions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    qualified: str  # as SQL names it (quoted, schema-qualified when needed)
    name: str
    starts: dt.datetime
    ends: dt.datetime
    detach_pending: bool
    bytes: int

    @property
    def day(self) -> dt.date:
        return self.starts.astimezone(dt.UTC).date()


async def partitions(conn: Connection) -> list[Partition]:
    return [Partition(**dict(r)) for r in await conn.fetch(_PARTITIONS)]


async def ensure_partitions_ahead(conn: Connection, settings: Settings) -> None:
    """Today's partition and the next TRACKD_PARTITIONS_AHEAD_DAYS days'. Through the owner's
    trackd_ensure_partitions, which the service role may execute; idempotent, and safe for many
    pods at once (it takes an advisory lock)."""
    await conn.execute(_ENSURE_AHEAD, settings.partitions_ahead_days)


async def may_drop(conn: Connection) -> bool:
    """Whether this connection's role may drop partitions of `events` (it owns them)."""
    return bool(await conn.fetchval(_MAY_DROP))


@dataclass(frozen=True)
class PartitionStats:
    count: int
    bytes: int
    oldest: dt.date | None
    newest: dt.date | None


def partition_stats(parts: list[Partition]) -> PartitionStats:
    live = [p for p in parts if not p.detach_pending]
    return PartitionStats(
        count=len(live),
        bytes=sum(p.bytes for p in live),
        oldest=live[0].day if live else None,
        newest=live[-1].day if live else None,
    )


def _unix(day: dt.date | None) -> float:
    if day is None:
        return 0.0
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def update_partition_metrics(metrics: Metrics, stats: PartitionStats) -> None:
    metrics.events_partitions.set(stats.count)
    metrics.events_bytes.set(stats.bytes)
    metrics.events_oldest_partition.set(_unix(stats.oldest))
    metrics.events_newest_partition.set(_unix(stats.newest))


# -- retention -----------------------------------------------------------------------------------


@dataclass
class PruneResult:
    skipped: bool = False  # another prune held the lock: nothing was done
    dropped: list[Partition] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)  # detaches a previous run left pending
    leftovers: list[str] = field(default_factory=list)  # tables a previous run detached, not dropped
    per_second_rows: int = 0
    batch_rows: int = 0

    def lines(self, settings: Settings) -> list[str]:
        if self.skipped:
            return ["another trackd prune is running (it holds the prune lock): nothing done"]
        out = [f"finished the detach of {name}, left pending by an earlier prune" for name in self.finalized]
        out += [f"dropped {name}, detached by an earlier prune that stopped before its DROP" for name in self.leftovers]
        out += [f"dropped {p.name} (events of {p.day.isoformat()}, {p.bytes} bytes)" for p in self.dropped]
        if not self.dropped:
            keep = (f"TRACKD_RETENTION_DAYS={settings.retention_days}" if settings.retention_days
                    else "TRACKD_RETENTION_DAYS unset: raw events are kept forever")  # fmt: skip
            out.append(f"no partition to drop ({keep})")
        out.append(f"deleted {self.per_second_rows} interactions_per_second rows"
                   + (f" older than {settings.per_second_retention_days} days" if settings.per_second_retention_days
                      else " (TRACKD_PER_SECOND_RETENTION_DAYS=0: kept forever)"))  # fmt: skip
        out.append(f"deleted {self.batch_rows} campaign_batches rows of days no partition holds any more")
        return out


def drop_cutoff(now: dt.datetime, retention_days: int) -> dt.datetime | None:
    """Partitions ending at or before this may go; None: keep everything. Never later than the
    start of today (UTC): today's and future partitions are never dropped, whatever the setting."""
    if retention_days <= 0:
        return None
    today = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
    return min(now - dt.timedelta(days=retention_days), today)


async def prune(conn: asyncpg.Connection[asyncpg.Record], settings: Settings) -> PruneResult:
    """Retention, on a connection of its own that talks to PostgreSQL directly (not through
    PgBouncer) as the owner of `events`: drop the daily partitions wholly older than
    TRACKD_RETENTION_DAYS (DETACH ... CONCURRENTLY, so writers are not blocked, then DROP), finish
    any detach an interrupted run left pending, delete interactions_per_second rows older than
    TRACKD_PER_SECOND_RETENTION_DAYS and campaign_batches rows of days no partition holds. Rollups
    are kept. One process at a time: a second one finds the lock taken and does nothing."""
    if not await conn.fetchval(_TRY_LOCK, PRUNE_LOCK):
        return PruneResult(skipped=True)
    try:
        return await _prune_locked(conn, settings)
    finally:
        await conn.execute(_UNLOCK, PRUNE_LOCK)


async def _prune_locked(conn: asyncpg.Connection[asyncpg.Record], settings: Settings) -> PruneResult:
    result = PruneResult()
    now: dt.datetime = await conn.fetchval(_NOW)
    cutoff = drop_cutoff(now, settings.retention_days)
    parent = await conn.fetchval(_PARENT)
    for part in await partitions(conn):
        if cutoff is None or part.ends > cutoff:
            if part.detach_pending:
                log.warning("partition %s is detached-pending but within retention: left as it is", part.name)
            continue
        # Each statement on its own, outside any transaction (DETACH CONCURRENTLY refuses one).
        if part.detach_pending:
            await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {part.qualified} FINALIZE")
            result.finalized.append(part.name)
        else:
            await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {part.qualified} CONCURRENTLY")
        await conn.execute(f"DROP TABLE {part.qualified}")
        log.info("dropped partition %s (%s, %d bytes)", part.name, part.day, part.bytes)
        result.dropped.append(part)
    for row in await conn.fetch(_DETACHED):
        ends = dt.datetime.combine(row["day"] + dt.timedelta(days=1), dt.time(), dt.UTC)
        if cutoff is not None and ends <= cutoff:
            await conn.execute(f"DROP TABLE {row['qualified']}")
            log.info("dropped %s, detached by an earlier prune", row["name"])
            result.leftovers.append(row["name"])
    if settings.per_second_retention_days > 0:
        older = now - dt.timedelta(days=settings.per_second_retention_days)
        while True:
            n = await conn.fetchval(_DELETE_PER_SECOND, older, _PER_SECOND_CHUNK)
            result.per_second_rows += n
            if n < _PER_SECOND_CHUNK:
                break
    remaining = [p for p in await partitions(conn) if not p.detach_pending]
    # With no partition left (none was ever made), only what retention itself dropped goes.
    oldest = remaining[0].day if remaining else (cutoff.date() if cutoff is not None else None)
    if oldest is not None:
        result.batch_rows = await conn.fetchval(_DELETE_BATCHES, oldest)
    return result


async def connect_direct(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    """The connection prune runs on: direct to PostgreSQL (never PgBouncer: the session lock),
    with no statement timeout (DETACH CONCURRENTLY waits for every transaction that could still
    see the partition), but a lock timeout, so that a lock held for long elsewhere makes this
    run fail, to be tried again, rather than queue every writer behind it."""
    return await asyncpg.connect(dsn, server_settings={
        "application_name": "trackd prune", "TimeZone": "UTC", "statement_timeout": "0", "lock_timeout": "60s",
    })  # fmt: skip


# -- erasure ---------------------------------------------------------------------------------------


async def erase_recipient(conn: Connection, recipient_id: str) -> int:
    """Erase a recipient everywhere (trackd_erase_recipient, migration 008): their events, their
    contribution to every rollup, and a tombstone that keeps their events still in a journal from
    coming back. Returns the events deleted. Works as the owner or the service role."""
    async with conn.transaction():
        await conn.execute(_NO_TIMEOUT)
        erased: int = await conn.fetchval(_ERASE, recipient_id)
    return erased


# -- verify ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    rollup: str
    campaign_id: str
    key: str
    expected: int | None
    actual: int | None


@dataclass
class VerifyResult:
    drift: list[Drift]
    repaired: list[str] = field(default_factory=list)  # campaigns rebuilt (--repair)
    drift_before_repair: int = 0

    @property
    def exact(self) -> bool:
        return not self.drift


async def drift(conn: Connection, campaign: str | None) -> list[Drift]:
    """Every rollup number that differs from its recomputation from `events` (one statement, so
    one snapshot: exact under live writes too, as the trigger counts in the inserting transaction)."""
    async with conn.transaction(readonly=True):
        await conn.execute(_NO_TIMEOUT)
        rows = await conn.fetch(_DRIFT, campaign)
    return [Drift(**dict(r)) for r in rows]


async def verify(conn: Connection, campaign: str | None, *, repair: bool = False) -> VerifyResult:
    """Recompute and compare; with `repair`, rebuild every drifting campaign's rollups from its
    events (trackd_rebuild_rollups: the owner's right) and compare again."""
    found = await drift(conn, campaign)
    result = VerifyResult(drift=found, drift_before_repair=len(found))
    if repair and found:
        for campaign_id in sorted({d.campaign_id for d in found}):
            async with conn.transaction():
                await conn.execute(_NO_TIMEOUT)
                await conn.execute(_REBUILD, campaign_id)
            log.info("rebuilt the rollups of campaign %r", campaign_id)
            result.repaired.append(campaign_id)
        result.drift = await drift(conn, campaign)
    return result


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def verify_lines(result: VerifyResult, campaign: str | None) -> list[str]:
    scope = f"campaign {campaign!r}" if campaign is not None else "every campaign"
    out: list[str] = []
    if result.repaired:
        out.append(f"found {result.drift_before_repair} drifting numbers; rebuilt the rollups of "
                   f"{len(result.repaired)} campaigns: {', '.join(result.repaired)}")  # fmt: skip
    if result.exact:
        out.append(f"exact: every rollup of {scope} equals its recomputation from events")
        return out
    out.append("rollup\tcampaign\tkey\texpected\tactual")
    for d in result.drift[:VERIFY_SHOWN]:
        out.append("\t".join((d.rollup, d.campaign_id, d.key, _cell(d.expected), _cell(d.actual))))
    if len(result.drift) > VERIFY_SHOWN:
        out.append(f"... and {len(result.drift) - VERIFY_SHOWN} more")
    campaigns = len({d.campaign_id for d in result.drift})
    out.append(f"drift: {len(result.drift)} rollup numbers of {campaigns} campaigns differ from events"
               " (trackd verify --repair rebuilds them)")  # fmt: skip
    return out


def write_verify_metrics(path: Path, result: VerifyResult) -> None:
    """The result as a Prometheus text file, for node-exporter's textfile collector (written to a
    temporary file and renamed, so a scrape never reads half of it)."""
    registry = CollectorRegistry()
    Gauge("trackd_rollup_drift", "Rollup numbers that differ from their recomputation from events, "
          "as the last trackd verify left them (0: exact).", registry=registry).set(len(result.drift))  # fmt: skip
    Gauge("trackd_rollup_repaired_campaigns", "Campaigns whose rollups the last trackd verify --repair rebuilt.",
          registry=registry).set(len(result.repaired))  # fmt: skip
    Gauge("trackd_rollup_verify_timestamp_seconds", "When the last trackd verify finished (unix time).",
          registry=registry).set(time.time())  # fmt: skip
    write_to_textfile(str(path), registry)


# -- the service's task ------------------------------------------------------------------------------


class LifecycleTask:
    """What `trackd serve` does every TRACKD_LIFECYCLE_INTERVAL_S (and once at start): the
    partitions ahead, the partition metrics (cheap catalog queries, not per scrape), and retention
    when TRACKD_RETENTION_DAYS is set and the service's role owns `events` (make run, embedded).
    Otherwise it says once which command to schedule. Never raises: a failed round is logged and
    tried again next interval; the writer makes a missing partition on demand anyway."""

    def __init__(self, settings: Settings, pool: Pool, dsn: str, metrics: Metrics) -> None:
        self.settings = settings
        self.pool = pool
        self.dsn = dsn
        self.metrics = metrics
        self._said_prune = False

    async def run(self) -> None:
        said = ""
        while True:
            try:
                await self.round()
                said = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = type(exc).__name__
                if kind != said:
                    log.warning("the lifecycle round failed (%s: %s); tried again in %.0fs", kind, exc,
                                self.settings.lifecycle_interval_s)  # fmt: skip
                    said = kind
            await asyncio.sleep(self.settings.lifecycle_interval_s)

    async def round(self) -> None:
        async with self.pool.acquire() as conn:
            await ensure_partitions_ahead(conn, self.settings)
            owner = await may_drop(conn)
        if self.settings.retention_days > 0:
            await self._prune(owner)
        async with self.pool.acquire() as conn:
            update_partition_metrics(self.metrics, partition_stats(await partitions(conn)))

    async def _prune(self, owner: bool) -> None:
        if not owner or self.settings.db_pgbouncer:
            if not self._said_prune:
                why = ("this role does not own `events`" if not owner
                       else "DATABASE_URL goes through PgBouncer (prune needs a direct session)")  # fmt: skip
                log.warning("TRACKD_RETENTION_DAYS=%d, but this server does not prune (%s): schedule `trackd prune`"
                            " hourly as the owner role, with a direct DATABASE_URL (docs/runbook.md, \"Retention\")",
                            self.settings.retention_days, why)  # fmt: skip
                self._said_prune = True
            return
        conn = await connect_direct(self.dsn)
        try:
            result = await prune(conn, self.settings)
        finally:
            await conn.close()
        if result.dropped or result.finalized or result.leftovers:
            log.info("retention: %s", "; ".join(result.lines(self.settings)))
