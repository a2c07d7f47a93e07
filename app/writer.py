"""The batch writer: ships events from the journal to PostgreSQL, off the request path.

Each batch is COPYed into a per-connection temporary table and moved into `events` with
`INSERT ... ON CONFLICT DO NOTHING`, and the rows actually inserted are added to
`interactions_per_second`, in one transaction: a batch retried after an unknown commit outcome,
or replayed from the journal, adds nothing and counts nothing twice. Only after the commit does
the journal's checkpoint move. Transient failures (connection lost, server restarting, statement
timeout, lock wait) are retried with capped exponential backoff; rows PostgreSQL refuses as data
are isolated by bisecting the batch and kept in `events_dead_letter`, so the rest lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import struct
import time
import uuid
from collections.abc import Iterable
from typing import Literal

import asyncpg

from app.events import COLUMNS, RowMaker
from app.journal import Batch, Journal, JournalDir, orphans
from app.metrics import LAG_BUCKETS, Metrics, observe_many
from app.settings import Settings

log = logging.getLogger("trackd.writer")

WriterState = Literal["starting", "running", "retrying", "draining", "stopped"]
Row = tuple[object, ...]
# A refused row (or, when no row could even be built, the raw event) with the error.
Dead = list[tuple[Row | None, str, object]]

# The staging table takes the rows as the writer makes them (cheap to encode); the move into
# `events` converts: id bytes -> uuid, epoch seconds -> timestamptz, text -> inet.
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS trackd_stage (
    id bytea, occurred_at float8, kind text, campaign_id text, recipient_id text, link_index int,
    url text, ip text, user_agent text, is_machine bool, machine_reason text, sent_at bigint
) ON COMMIT DELETE ROWS
"""
_COLUMNS = ", ".join(COLUMNS)
_MOVE = f"""
WITH ins AS (
    INSERT INTO events ({_COLUMNS})
    SELECT encode(id, 'hex')::uuid, to_timestamp(occurred_at), kind, campaign_id, recipient_id, link_index,
           url, ip::inet, user_agent, is_machine, machine_reason, to_timestamp(sent_at)
    FROM trackd_stage
    ON CONFLICT DO NOTHING
    RETURNING occurred_at, campaign_id, kind, is_machine
), per_second AS (
    INSERT INTO interactions_per_second AS t (second, campaign_id, kind, is_machine, events, max_lag_ms)
    SELECT date_trunc('second', occurred_at), campaign_id, kind, is_machine, count(*),
           least(2147483647, greatest(0, ceil(extract(epoch FROM clock_timestamp() - min(occurred_at)) * 1000)))::int
    FROM ins GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (second, campaign_id, kind, is_machine) DO UPDATE
    SET events = t.events + EXCLUDED.events, max_lag_ms = greatest(t.max_lag_ms, EXCLUDED.max_lag_ms)
)
SELECT count(*) FROM ins
"""
_DEAD_LETTER = "INSERT INTO events_dead_letter (id, occurred_at, error, row_repr) VALUES ($1, $2, $3, $4)"
_BACKOFF_MAX_S = 5.0
_TRANSIENT = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, TimeoutError)


_EPOCH = dt.date(1970, 1, 1)


def partition_days(epoch_seconds: Iterable[float]) -> set[dt.date]:
    """The UTC days whose partitions these receipt times need. PostgreSQL's to_timestamp rounds
    to the microsecond, so a time within a microsecond of midnight may land in the next day:
    both days are made for those."""
    numbers = set()
    for t in epoch_seconds:
        numbers.add(int(t // 86400))
        numbers.add(int((t + 1e-6) // 86400))
    return {_EPOCH + dt.timedelta(days=n) for n in numbers}


def is_data_error(exc: BaseException) -> bool:
    """A refusal of the rows themselves (SQLSTATE classes 22 and 23), which retrying cannot fix.
    A missing partition (23514 on a partitioned table) is not: the writer recreates it."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    state = exc.sqlstate or ""
    if state == "23514" and "partition" in str(exc):
        return False
    return state[:2] in ("22", "23")


class Writer:
    def __init__(self, settings: Settings, journal: Journal, pool: asyncpg.Pool, metrics: Metrics) -> None:
        self.journal = journal
        self.pool = pool
        self.metrics = metrics
        self.rows = RowMaker(settings)
        self.batch_max_rows = settings.batch_max_rows
        self.flush_interval = settings.flush_interval_ms / 1000
        self.orphan_scan_interval = settings.orphan_scan_interval_s
        self.state: WriterState = "starting"
        self.last_commit_at: float | None = None
        self.last_error: str | None = None
        self.committed_own = 0  # events of our own journal committed (or dead-lettered)
        self.orphans: list[JournalDir] = []
        self._batch: Batch | None = None
        self._next_orphan_scan = 0.0
        self._days: set[dt.date] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.state = "running"
        self._task = asyncio.create_task(self._run(), name="trackd-writer")

    async def stop(self, timeout: float) -> None:
        """Drain the journal into PostgreSQL (bounded by `timeout`), then stop. Whatever is not
        committed by then stays on disk for the next start."""
        self.state = "draining"
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.warning("shutdown timeout: %d events stay in the journal for the next start", self.pending_rows)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception as exc:  # shutdown goes on; the journal keeps what was not written
                log.error("the writer stopped with an error: %r", exc)
        for orphan in self.orphans:
            orphan.release()
        self.orphans.clear()
        self.state = "stopped"

    # -- what is pending -----------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        """Events of this process not yet committed, plus an adopted batch in flight."""
        own = self.journal.appended - self.committed_own
        in_flight = len(self._batch.events) if self._batch and not self._batch.source.live else 0
        return max(0, own) + in_flight

    def pending_bytes(self) -> int:
        own = self.journal.own
        return (own.bytes_pending() if own else 0) + sum(o.bytes_pending() for o in self.orphans)

    def oldest_pending_at(self) -> float | None:
        if self._batch is not None and self._batch.events:
            return self._batch.events[0].received_at
        return None

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.0
        while True:
            if not self._stop.is_set() and self._batch is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.flush_interval)
            try:
                while await self.flush_once():
                    delay = 0.0  # keep going while there is a backlog
                delay = 0.0
            except Exception as exc:
                # Whatever went wrong, the writer must not die: the journal keeps the batch and
                # the next attempt starts on a fresh connection. Expected failures (database
                # down, timeouts) are one warning line; anything else gets its traceback, once.
                self._failed(exc, expected=isinstance(exc, (asyncpg.PostgresError, *_TRANSIENT)))
                delay = min(_BACKOFF_MAX_S, max(0.1, delay * 2))
                await asyncio.sleep(delay)
                continue
            finally:
                self._observe()
            if self._stop.is_set():
                return

    def _failed(self, exc: BaseException, *, expected: bool) -> None:
        kind = type(exc).__name__
        self.metrics.write_errors.labels(kind).inc()
        self.metrics.write_retries.inc()
        self.metrics.writer_up.set(0)
        if self.state != "retrying" or self.last_error != kind:
            log.warning("writing events failed (%s: %s); retrying with backoff", kind, exc,
                        exc_info=None if expected else exc)  # fmt: skip
        self.last_error = kind
        if self.state != "draining":
            self.state = "retrying"

    def _observe(self) -> None:
        m = self.metrics
        m.backlog_rows.set(self.pending_rows)
        m.backlog_bytes.set(self.pending_bytes())
        m.journal_bytes.set(self.journal.own_bytes)
        oldest = self.oldest_pending_at()
        m.backlog_oldest.set(0 if oldest is None else max(0.0, time.time() - oldest))

    # -- batches -------------------------------------------------------------------------------

    def _adopt_orphans(self) -> None:
        own = self.journal.own
        for orphan in orphans(self.journal.root, own.path if own else None):
            log.info("replaying journal %s left by a previous process", orphan.path)
            self.orphans.append(orphan)

    def _next_batch(self) -> Batch | None:
        now = time.monotonic()
        if now >= self._next_orphan_scan:
            self._next_orphan_scan = now + self.orphan_scan_interval
            self._adopt_orphans()
        for orphan in list(self.orphans):
            batch = orphan.read(self.batch_max_rows)
            self._count_damage(orphan)
            if batch is not None:
                return batch
            if orphan.exhausted():
                log.info("journal %s fully replayed", orphan.path)
                orphan.remove()
                self.orphans.remove(orphan)
        own = self.journal.own
        if own is None:
            return None
        batch = own.read(self.batch_max_rows, self.journal.write_position)
        self._count_damage(own)
        if batch is None:
            self.journal.rotate_if_drained()
        return batch

    def _count_damage(self, source: JournalDir) -> None:
        damage = source.take_damage()
        if damage.corrupt_records:
            self.metrics.journal_damaged_corrupt.inc(damage.corrupt_records)
        if damage.torn_tails:
            self.metrics.journal_damaged_torn.inc(damage.torn_tails)

    async def flush_once(self) -> bool:
        """Write one batch. Returns False when there was nothing to write."""
        if self._batch is None:
            self._batch = self._next_batch()
        batch = self._batch
        if batch is None:
            return False
        rows: list[Row] = []
        dead: Dead = []
        for event in batch.events:
            try:
                rows.append(self.rows.row(event))
            except (ValueError, IndexError, struct.error) as exc:  # a record no row can be made of
                dead.append((None, f"{type(exc).__name__}: {exc}", event))
        started = time.perf_counter()
        inserted = 0
        if rows or dead:
            async with self.pool.acquire() as conn:
                try:
                    inserted = await self._write(conn, rows, dead)
                except BaseException:
                    # A connection that failed mid-operation may be left in a state asyncpg
                    # cannot reuse ("another operation is in progress", seen after server
                    # restarts): never hand it back to the pool.
                    conn.terminate()
                    raise
        self._committed(batch, inserted, time.perf_counter() - started, len(dead))
        return True

    async def _write(self, conn: asyncpg.Connection, rows: list[Row], dead: Dead) -> int:
        days = partition_days(r[1] for r in rows) - self._days  # type: ignore[misc]
        if days:
            await conn.execute("SELECT trackd_ensure_partitions($1::date[])", sorted(days))
            self._days |= days
        try:
            inserted = await self._move(conn, rows)
        except asyncpg.PostgresError as exc:
            if not is_data_error(exc):
                if exc.sqlstate == "23514":
                    self._days.clear()  # a partition we thought existed is gone
                raise
            inserted = await self._isolate(conn, rows, dead)
        if dead:
            await self._dead_letter(conn, dead)
        return inserted

    async def _move(self, conn: asyncpg.Connection, rows: list[Row]) -> int:
        if not rows:
            return 0
        async with conn.transaction():
            await conn.execute(_STAGE_DDL)
            await conn.copy_records_to_table("trackd_stage", records=rows, columns=COLUMNS)
            return int(await conn.fetchval(_MOVE))

    async def _isolate(self, conn: asyncpg.Connection, rows: list[Row], dead: Dead) -> int:
        """Bisect a refused batch: every good row lands, every refused one goes to `dead`."""
        try:
            return await self._move(conn, rows)
        except asyncpg.PostgresError as exc:
            if not is_data_error(exc):
                raise
            if len(rows) == 1:
                dead.append((rows[0], f"{exc.sqlstate}: {exc}", None))
                return 0
        half = len(rows) // 2
        return await self._isolate(conn, rows[:half], dead) + await self._isolate(conn, rows[half:], dead)

    async def _dead_letter(self, conn: asyncpg.Connection, dead: Dead) -> None:
        records = []
        for row, error, event in dead:
            row_id = uuid.UUID(bytes=row[0]) if row and isinstance(row[0], bytes) and len(row[0]) == 16 else None
            occurred = dt.datetime.fromtimestamp(row[1], dt.UTC) if row and isinstance(row[1], float) else None
            records.append((row_id, occurred, error, repr(row if row is not None else event)))
        await conn.executemany(_DEAD_LETTER, records)
        log.error("%d rows refused by PostgreSQL kept in events_dead_letter (first: %s)", len(dead), dead[0][1])

    def _committed(self, batch: Batch, inserted: int, seconds: float, dead: int) -> None:
        deleted = batch.source.commit(batch.end)
        if batch.source.live:
            self.journal.forget(deleted)
            self.committed_own += len(batch.events)
        self._batch = None
        if not batch.events:
            return  # only damage was skipped
        committed = time.time()
        m = self.metrics
        m.flush_seconds.observe(seconds)
        m.batch_rows.observe(len(batch.events))
        m.events_written.inc(inserted)
        m.events_duplicate.inc(len(batch.events) - inserted - dead)
        if dead:
            m.events_dead_lettered.inc(dead)
        if not batch.source.live:
            m.events_replayed.inc(len(batch.events))
        observe_many(m.ingest_lag, LAG_BUCKETS, [committed - event.received_at for event in batch.events])
        m.writer_up.set(1)
        self.last_commit_at = committed
        if self.state == "retrying":
            log.info("writing events again after %s", self.last_error)
            self.state = "running"
        self.last_error = None
