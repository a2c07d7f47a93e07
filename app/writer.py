"""The batch writer: moves events from the backlog into PostgreSQL with COPY, off the request path.

Each batch is COPYed into a per-connection temporary table and moved into `events` with
`INSERT ... ON CONFLICT DO NOTHING` in one transaction: a batch retried after an unknown commit
outcome, or replayed, adds nothing. Failures are retried with capped exponential backoff; a
server restart costs a failed attempt, never the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Literal

import asyncpg

from app.backlog import MemoryBacklog
from app.events import COLUMNS, RowMaker
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger("trackd.writer")

WriterState = Literal["starting", "running", "retrying", "draining", "stopped"]

_STAGE_DDL = "CREATE TEMP TABLE IF NOT EXISTS trackd_stage (LIKE events) ON COMMIT DELETE ROWS"
_MOVE = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM trackd_stage ON CONFLICT DO NOTHING"
)
_BACKOFF_MAX_S = 5.0


class Writer:
    def __init__(
        self,
        settings: Settings,
        backlog: MemoryBacklog,
        pool: asyncpg.Pool,
        metrics: Metrics,
    ) -> None:
        self.backlog = backlog
        self.pool = pool
        self.metrics = metrics
        self.rows = RowMaker(settings)
        self.batch_max_rows = settings.batch_max_rows
        self.flush_interval = settings.flush_interval_ms / 1000
        self.state: WriterState = "starting"
        self.last_commit_at: float | None = None
        self.last_error: str | None = None
        self._days: set[dt.date] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.state = "running"
        self._task = asyncio.create_task(self._run(), name="trackd-writer")

    async def stop(self, timeout: float) -> None:
        """Drain what is buffered (bounded by `timeout`), then stop."""
        if self._task is None:
            return
        self.state = "draining"
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning("shutdown timeout: %d events not committed", self.backlog.rows)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.state = "stopped"

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.0
        while True:
            if self.backlog.rows < self.batch_max_rows and not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.flush_interval)
            self._observe_backlog()
            if self.backlog.rows == 0:
                if self._stop.is_set():
                    return
                continue
            try:
                await self.flush_once()
                delay = 0.0
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                self._failed(exc)
                delay = min(_BACKOFF_MAX_S, max(0.1, delay * 2))
                await asyncio.sleep(delay)

    def _failed(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.metrics.write_errors.labels(kind).inc()
        self.metrics.writer_up.set(0)
        if self.state != "retrying" or self.last_error != kind:
            log.warning("writing events failed (%s: %s); retrying with backoff", kind, exc)
        self.last_error = kind
        if self.state != "draining":
            self.state = "retrying"

    def _observe_backlog(self) -> None:
        self.metrics.backlog_rows.set(self.backlog.rows)
        oldest = self.backlog.oldest_received_at()
        self.metrics.backlog_oldest.set(0 if oldest is None else max(0.0, time.time() - oldest))

    async def flush_once(self) -> int:
        """Write one batch from the head of the backlog. Returns the rows newly inserted."""
        batch = self.backlog.peek(self.batch_max_rows)
        if not batch:
            return 0
        rows = self.rows.rows(batch)
        started = time.perf_counter()
        days = {r[1].date() for r in rows} - self._days  # type: ignore[attr-defined]
        async with self.pool.acquire() as conn, conn.transaction():
            if days:
                await conn.execute("SELECT trackd_ensure_partitions($1::date[])", sorted(days))
            await conn.execute(_STAGE_DDL)
            await conn.copy_records_to_table("trackd_stage", records=rows, columns=COLUMNS)
            status = await conn.execute(_MOVE)
        self._days |= days
        inserted = int(status.rsplit(" ", 1)[1])
        self.backlog.commit(len(batch))

        committed = time.time()
        m = self.metrics
        m.flush_seconds.observe(time.perf_counter() - started)
        m.batch_rows.observe(len(batch))
        m.events_written.inc(inserted)
        m.events_duplicate.inc(len(batch) - inserted)
        for event in batch:
            m.ingest_lag.observe(committed - event.received_at)
        m.writer_up.set(1)
        self.last_commit_at = committed
        if self.state == "retrying":
            log.info("writing events again after %s", self.last_error)
            self.state = "running"
        self.last_error = None
        self._observe_backlog()
        return inserted
