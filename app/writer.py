"""The batch writer: ships events from the journal to PostgreSQL, off the request path.

The journal holds events as rows in PostgreSQL's binary COPY format (app.copyrows), so a batch
is the frames' bytes joined and sent: no Python work per event. It is COPYed straight into
`events`; PostgreSQL keeps `interactions_per_second` and the rollups from the rows actually
inserted (the statement trigger on `events`, migration 012), in the same transaction. A batch
that may hold rows already there (a replay of an adopted journal, a retry after an unknown commit
outcome: COPY then fails on the primary key) goes through a temporary table and
`INSERT ... ON CONFLICT DO NOTHING` instead, so it adds and counts nothing twice. Only after the
commit does the journal's checkpoint move. Transient failures (connection lost, server
restarting, statement timeout, lock wait) are retried with capped exponential backoff; rows
PostgreSQL refuses as data are isolated by bisecting the batch and kept in `events_dead_letter`,
so the rest lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import struct
import time
from collections.abc import Iterable
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from app.copyrows import COLUMNS, COPY_HEADER, COPY_TRAILER, RowEncoder, decode_row, split_rows
from app.db import Connection, Pool
from app.journal import Batch, Chunk, Journal, JournalDir, orphans
from app.metrics import LAG_BUCKETS, Metrics, observe_weighted
from app.settings import Settings

log = logging.getLogger("trackd.writer")

WriterState = Literal["starting", "running", "retrying", "draining", "stopped"]
# A refused row (or, when no row could even be made, the format 1 event) with the error.
Dead = list[tuple[bytes | None, str, object]]

_STAGE_DDL = "CREATE TEMP TABLE IF NOT EXISTS trackd_stage (LIKE events) ON COMMIT DELETE ROWS"
# Through PgBouncer (transaction pooling) a temporary table lives on whichever server connection
# ran the transaction, for as long as PgBouncer keeps that connection (server_lifetime, an hour):
# after a migration changes `events` it would keep the old columns, and it shows up in other
# clients' sessions. So there the stage lives and dies with the one transaction that uses it (a
# copy of a stale one, e.g. left by a pod without TRACKD_DB_PGBOUNCER, is dropped first).
_STAGE_DDL_PER_TRANSACTION = (
    "DROP TABLE IF EXISTS pg_temp.trackd_stage; CREATE TEMP TABLE trackd_stage (LIKE events) ON COMMIT DROP"
)
# Asks the trigger on `events` (migration 012; 003 before) to count this transaction's rows. Per transaction,
# not per session, so that it holds through a transaction-pooling proxy such as PgBouncer.
_COUNT_PER_SECOND = "SET LOCAL trackd.per_second = 'trigger'"
_COLUMN_LIST = ", ".join(COLUMNS)
# In primary key order: two writers moving the same rows (a journal replayed by two processes)
# then wait for each other in one order, never in a cycle (deadlock).
_MOVE = (
    f"INSERT INTO events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM trackd_stage"
    " ORDER BY occurred_at, id ON CONFLICT DO NOTHING"
)
_DEAD_LETTER = "INSERT INTO events_dead_letter (id, occurred_at, error, row_repr) VALUES ($1, $2, $3, $4)"
_BACKOFF_MAX_S = 5.0
_TRANSIENT = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, TimeoutError)


_EPOCH = dt.date(1970, 1, 1)


def partition_days(ranges: Iterable[tuple[int, int]]) -> set[dt.date]:
    """The UTC days whose partitions rows received within these (first, last) unix-microsecond
    ranges need (a range is one event-loop tick: at most two days)."""
    days = set()
    for first, last in ranges:
        for n in range(first // 86_400_000_000, last // 86_400_000_000 + 1):
            days.add(_EPOCH + dt.timedelta(days=n))
    return days


def is_data_error(exc: BaseException) -> bool:
    """A refusal of the rows themselves (SQLSTATE classes 22 and 23), which retrying cannot fix.
    A missing partition (23514 on a partitioned table) is not: the writer recreates it."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    state = exc.sqlstate or ""
    if state == "23514" and "partition" in str(exc):
        return False
    return state[:2] in ("22", "23")


async def _copy_in(conn: Connection, table: str, data: bytes) -> str:
    """COPY binary `data` (header to trailer) into `table`; returns the command status."""
    # A memoryview, not the bytes: asyncpg takes bytes for a file name (os.fspath). asyncpg reads
    # any buffer-protocol object as the data itself, but asyncpg-stubs 0.32.0 lists only paths,
    # files and async iterables as sources: the stub is wrong here, not the call.
    return await conn.copy_to_table(
        table,
        source=memoryview(data),  # type: ignore[arg-type]
        columns=COLUMNS,
        format="binary",
    )


class Writer:
    def __init__(self, settings: Settings, journal: Journal, pool: Pool, metrics: Metrics) -> None:
        self.journal = journal
        self.pool = pool
        self.metrics = metrics
        self.rows = RowEncoder(settings)
        self._stage_ddl = _STAGE_DDL_PER_TRANSACTION if settings.db_pgbouncer else _STAGE_DDL
        # Through PgBouncer the connection's own statement_timeout cannot be set (app/db.py), and a
        # batch must not hang on a lock forever: there it is set per transaction. A direct
        # connection has it from its start-up parameters already.
        timeout = f"; SET LOCAL statement_timeout = {settings.db_statement_timeout_ms}" if settings.db_pgbouncer else ""
        self._begin = _COUNT_PER_SECOND + timeout
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
        # The writer keeps one connection while it has a backlog: handing it back to the pool
        # after each batch would cost a reset round trip per batch.
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None
        self._last_count = 0  # events in the last batch written

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
        await self._release_connection()
        for orphan in self.orphans:
            orphan.release()
        self.orphans.clear()
        self.state = "stopped"

    async def _release_connection(self, *, broken: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if broken:
            # A connection that failed mid-operation may be left in a state asyncpg cannot reuse
            # ("another operation is in progress", seen after server restarts): never reuse it.
            conn.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.release(conn), 5)

    # -- what is pending -----------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        """Events of this process not yet committed, plus an adopted batch in flight."""
        own = self.journal.appended - self.committed_own
        in_flight = self._batch.count if self._batch and not self._batch.source.live else 0
        return max(0, own) + in_flight

    def pending_bytes(self) -> int:
        own = self.journal.own
        return (own.bytes_pending() if own else 0) + sum(o.bytes_pending() for o in self.orphans)

    def oldest_pending_at(self) -> float | None:
        first = self._batch.first_us if self._batch is not None else None
        return None if first is None else first / 1e6

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.0
        while True:
            if not self._stop.is_set() and self._batch is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.flush_interval)
            try:
                while await self.flush_once():
                    delay = 0.0
                    if self._last_count < self.batch_max_rows and not self._stop.is_set():
                        # Caught up. Going straight on would write the few events that arrived
                        # during this batch as a transaction of their own, and so on: a commit per
                        # handful of events. Waiting a flush interval makes one of many ticks
                        # (measured: PostgreSQL 8.9 -> 4.8 us and trackd 40 -> 35 us per event).
                        break
                delay = 0.0
                # Caught up: the connection goes back to the pool (the API may need it) until
                # the next round. Held from batch to batch, it costs no reset round trip each.
                await self._release_connection()
            except Exception as exc:
                await self._release_connection()  # not held through the backoff
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
        chunks = list(batch.chunks)
        dead: Dead = []
        for event in batch.legacy:  # format 1: make its row now
            try:
                row, received_us = self.rows.from_event(event)
            except (ValueError, IndexError, struct.error) as exc:  # a record no row can be made of
                dead.append((None, f"{type(exc).__name__}: {exc}", event))
                continue
            chunks.append(Chunk(1, received_us, received_us, row))
        started = time.perf_counter()
        inserted = 0
        if chunks or dead:
            if self._conn is None:
                self._conn = await self.pool.acquire()
            try:
                # Only our own live journal is new to the table; anything adopted may have been
                # written already by the process that left it.
                inserted = await self._write(self._conn, chunks, dead, direct=batch.source.live)
            except BaseException:
                await self._release_connection(broken=True)
                raise
        self._last_count = batch.count
        self._committed(batch, chunks, inserted, time.perf_counter() - started, len(dead))
        return True

    async def _write(self, conn: Connection, chunks: list[Chunk], dead: Dead, *, direct: bool) -> int:
        days = partition_days((c.first_us, c.last_us) for c in chunks) - self._days
        if days:
            await conn.execute("SELECT trackd_ensure_partitions($1::date[])", sorted(days))
            self._days |= days
        inserted = 0
        if chunks:
            data = b"".join([COPY_HEADER, *(c.rows for c in chunks), COPY_TRAILER])
            try:
                inserted = await self._copy(conn, data, direct=direct)
            except asyncpg.PostgresError as exc:
                if not is_data_error(exc):
                    if exc.sqlstate == "23514":
                        self._days.clear()  # a partition we thought existed is gone
                    raise
                inserted = await self._isolate(conn, self._rows_of(chunks, dead), dead)
        if dead:
            await self._dead_letter(conn, dead)
        return inserted

    async def _copy(self, conn: Connection, data: bytes, *, direct: bool) -> int:
        """COPY a whole binary stream in one transaction; returns the rows inserted."""
        if direct:
            try:
                async with conn.transaction():
                    await conn.execute(self._begin)
                    status = await _copy_in(conn, "events", data)
                return int(status.rsplit(" ", 1)[1])
            except asyncpg.UniqueViolationError:
                pass  # some rows are in already (their commit went through before a failure)
        async with conn.transaction():
            await conn.execute(f"{self._begin}; {self._stage_ddl}")
            await _copy_in(conn, "trackd_stage", data)
            status = await conn.execute(_MOVE)
        return int(status.rsplit(" ", 1)[1])

    @staticmethod
    def _rows_of(chunks: list[Chunk], dead: Dead) -> list[bytes]:
        """The rows of refused chunks, one by one; a chunk that does not even cut into rows (damage
        no checksum caught) goes to the dead letters whole rather than stall the writer."""
        rows: list[bytes] = []
        for chunk in chunks:
            try:
                rows += split_rows(chunk.rows)
            except (ValueError, struct.error) as exc:
                dead.append((None, f"unreadable frame of {chunk.event_count} events: {exc}", chunk.rows[:512]))
        return rows

    async def _isolate(self, conn: Connection, rows: list[bytes], dead: Dead) -> int:
        """Bisect a refused batch: every good row lands, every refused one goes to `dead`."""
        if not rows:
            return 0
        try:
            return await self._copy(conn, b"".join([COPY_HEADER, *rows, COPY_TRAILER]), direct=False)
        except asyncpg.PostgresError as exc:
            if not is_data_error(exc):
                raise
            if len(rows) == 1:
                dead.append((rows[0], f"{exc.sqlstate}: {exc}", None))
                return 0
        half = len(rows) // 2
        return await self._isolate(conn, rows[:half], dead) + await self._isolate(conn, rows[half:], dead)

    async def _dead_letter(self, conn: Connection, dead: Dead) -> None:
        records = []
        for row, error, event in dead:
            values = None
            if row is not None:
                with contextlib.suppress(ValueError, IndexError, struct.error, UnicodeDecodeError):
                    values = decode_row(row)
            row_id = values.get("id") if values else None
            occurred = values.get("occurred_at") if values else None
            shown = values if values is not None else (row if row is not None else event)
            records.append((row_id, occurred, error, repr(shown)))
        await conn.executemany(_DEAD_LETTER, records)
        log.error("%d rows refused by PostgreSQL kept in events_dead_letter (first: %s)", len(dead), dead[0][1])

    def _committed(self, batch: Batch, chunks: list[Chunk], inserted: int, seconds: float, dead: int) -> None:
        deleted = batch.source.commit(batch.end)
        count = batch.count
        if batch.source.live:
            self.journal.forget(deleted)
            self.committed_own += count
        self._batch = None
        if not count:
            return  # only damage was skipped
        committed = time.time()
        m = self.metrics
        m.flush_seconds.observe(seconds)
        m.batch_rows.observe(count)
        m.events_written.inc(inserted)
        m.events_duplicate.inc(max(0, count - inserted - dead))
        if dead:
            m.events_dead_lettered.inc(dead)
        if not batch.source.live:
            m.events_replayed.inc(count)
        # A frame's events were received within one event-loop tick: its earliest receipt time
        # stands for all of them (the lag is overstated by at most the tick's length).
        observe_weighted(m.ingest_lag, LAG_BUCKETS, [(committed - c.first_us / 1e6, c.event_count) for c in chunks])
        m.writer_up.set(1)
        self.last_commit_at = committed
        if self.state == "retrying":
            log.info("writing events again after %s", self.last_error)
            self.state = "running"
        self.last_error = None
