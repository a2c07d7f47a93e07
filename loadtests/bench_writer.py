"""The batch writer alone: how many events per second one connection moves into PostgreSQL,
idempotence mechanism included (COPY straight into `events`, and for a batch that may repeat
rows, COPY into the stage table + INSERT ... ON CONFLICT DO NOTHING: both are measured).

    .venv/bin/python -m loadtests.bench_writer            # its own embedded PostgreSQL
    DATABASE_URL=postgresql://... .venv/bin/python -m loadtests.bench_writer

It fills a real journal (app.journal) with events as the hot path records them (their `events`
rows, app.copyrows), then lets app.writer.Writer ship them: reading the journal, COPY, the
per-second table kept by PostgreSQL's trigger. Then the same events again: a replay, which the
straight COPY refuses on the primary key and the stage path absorbs, adding nothing. When those
internals change, this file is the one place to adapt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.copyrows import RowEncoder
from app.db import create_pool, migrate
from app.events import EventIds
from app.journal import Journal
from app.metrics import Metrics
from app.settings import FsyncPolicy, Settings
from app.writer import Writer
from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing

_UA = b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"


@dataclass(frozen=True)
class WriterResult:
    events: int
    seconds: float
    rows_inserted: int
    replay_inserted: int  # rows the replay added: must be 0
    replay_seconds: float  # the same events again: refused by the straight COPY, through the stage

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def replay_events_per_s(self) -> float:
        return self.events / self.replay_seconds


def hot_rows(encoder: RowEncoder, count: int, distinct: int = 1000) -> list[tuple[bytes, int]]:
    """Rows as the hot path makes them (RowEncoder's row makers over verified claims) of
    `distinct` tokens, 3 opens to 1 click, with their receipt times (unix microseconds)."""
    ring = KeyRing.from_specs(["w1:writer-bench-secret-0123456789"])
    claims: list[tuple[int, bytes]] = []
    for i in range(distinct):
        if i % 4 == 3:
            token = ring.sign_click(f"camp-{i % 37}", f"r-{i:07d}", 0, f"https://shop.example.com/item/{i}?utm=mail")
            claims.append((KIND_CLICK, ring.verify(token, KIND_CLICK) or b""))
        else:
            claims.append((KIND_OPEN, ring.verify(ring.sign_open(f"camp-{i % 37}", f"r-{i:07d}"), KIND_OPEN) or b""))
    ids = EventIds()
    client = encoder.client("127.0.0.1", None)
    received_us = time.time_ns() // 1000
    out = []
    for i in range(count):
        kind, claim = claims[i % distinct]
        id_hi, id_lo = ids.pair(received_us // 1000)
        out.append((encoder.row(id_hi, id_lo, received_us, kind, False, _UA, client, claim), received_us))
    return out


async def _journal(journal: Journal, rows: list[tuple[bytes, int]], per_tick: int = 50) -> None:
    """Append rows `per_tick` at a time (a tick's frame, as under 50-connection load)."""
    for at in range(0, len(rows), per_tick):
        written = [journal.append(row, us) for row, us in rows[at : at + per_tick]]
        assert all(await asyncio.gather(*written)), "the journal refused events"  # type: ignore[arg-type]


async def _drain(writer: Writer) -> None:
    while await writer.flush_once():
        pass


async def measure(dsn: str, events: int, batch_rows: int = 5000) -> WriterResult:
    settings = Settings(batch_max_rows=batch_rows, db_pool_max=2)  # the writer's connection, and one to count rows
    pool = await create_pool(settings, dsn)
    with tempfile.TemporaryDirectory(prefix="trackd-bench-journal-") as tmp:
        journal = Journal(Path(tmp), max_bytes=1 << 40, segment_bytes=64 << 20, fsync=FsyncPolicy.never,
                          fsync_interval_s=1)  # fmt: skip
        journal.open()
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            writer = Writer(settings, journal, pool, Metrics())
            encoder = RowEncoder(settings)
            # Warm up off the clock: today's partition, the stage table, both paths.
            warm = hot_rows(encoder, batch_rows)
            for _ in range(2):
                await _journal(journal, warm)
                await _drain(writer)

            rows = hot_rows(encoder, events)
            await _journal(journal, rows)
            before = await pool.fetchval("SELECT count(*) FROM events")
            started = time.perf_counter()
            await _drain(writer)
            seconds = time.perf_counter() - started
            inserted = await pool.fetchval("SELECT count(*) FROM events") - before

            # Idempotence: the same events again (a replay) add nothing.
            await _journal(journal, rows)
            started = time.perf_counter()
            await _drain(writer)
            replay_seconds = time.perf_counter() - started
            replayed = await pool.fetchval("SELECT count(*) FROM events") - before - inserted
            await writer.stop(10)
        finally:
            await journal.close()
            await pool.close()
    return WriterResult(events, seconds, inserted, replayed, replay_seconds)


def run_embedded(events: int, batch_rows: int) -> WriterResult:
    from loadtests.harness import start_postgres

    with tempfile.TemporaryDirectory(prefix="trackd-bench-writer-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            return asyncio.run(measure(pg.dsn, events, batch_rows))
        finally:
            pg.stop("fast")


def report(result: WriterResult) -> str:
    return (
        f"writer: {result.events} events in {result.seconds:.2f}s = {result.events_per_s:,.0f} events/s "
        f"through one connection (rows inserted {result.rows_inserted}); the same events replayed: "
        f"{result.replay_events_per_s:,.0f} events/s through the stage path, {result.replay_inserted} added"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_WRITER_EVENTS", "300000")))
    parser.add_argument("--batch-rows", type=int, default=5000)
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        result = asyncio.run(measure(dsn, args.events, args.batch_rows))
    else:
        result = run_embedded(args.events, args.batch_rows)
    print(report(result))
    target = 50_000
    print(f"{'PASS' if result.events_per_s >= target else 'MISS'}: writer >= {target:,} events/s")


if __name__ == "__main__":
    main()
