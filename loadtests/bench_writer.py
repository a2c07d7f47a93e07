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

Every inserted row also goes into the rollups (migration 007: the trigger on `events`): the cost
of exact uniques depends on how many rows are new recipients, so the events come from
`--recipients` distinct recipients (each about events/recipients times). `--writers N` runs N
writers at once (each its own journal and connection, as N pods would) into one campaign, and
reports them together against one writer.
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


def hot_rows(
    encoder: RowEncoder, count: int, distinct: int = 1000, campaigns: int = 37, offset: int = 0
) -> list[tuple[bytes, int]]:
    """Rows as the hot path makes them (RowEncoder's row makers over verified claims) of
    `distinct` tokens, 3 opens to 1 click, with their receipt times (unix microseconds)."""
    ring = KeyRing.from_specs(["w1:writer-bench-secret-0123456789"])
    claims: list[tuple[int, bytes]] = []
    for i in range(distinct):
        if i % 4 == 3:
            token = ring.sign_click(
                f"camp-{i % campaigns}", f"r-{i + offset:07d}", i % 8, f"https://shop.example.com/item/{i}?utm=mail"
            )
            claims.append((KIND_CLICK, ring.verify(token, KIND_CLICK) or b""))
        else:
            token = ring.sign_open(f"camp-{i % campaigns}", f"r-{i + offset:07d}")
            claims.append((KIND_OPEN, ring.verify(token, KIND_OPEN) or b""))
    ids = EventIds()
    client = encoder.client("127.0.0.1", None)
    received_us = time.time_ns() // 1000
    out = []
    for i in range(count):
        kind, claim = claims[i % distinct]
        id_hi, id_lo = ids.pair(received_us // 1000)
        out.append((encoder.row(id_hi, id_lo, received_us, kind, 0, _UA, client, claim), received_us))
    return out


async def _journal(journal: Journal, rows: list[tuple[bytes, int]], per_tick: int = 50) -> None:
    """Append rows `per_tick` at a time (a tick's frame, as under 50-connection load)."""
    for at in range(0, len(rows), per_tick):
        written = [journal.append(row, us) for row, us in rows[at : at + per_tick]]
        assert all(await asyncio.gather(*written)), "the journal refused events"  # type: ignore[arg-type]


async def _drain(writer: Writer) -> None:
    while await writer.flush_once():
        pass


async def measure(dsn: str, events: int, batch_rows: int = 5000, recipients: int = 1000) -> WriterResult:
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
            warm = hot_rows(encoder, batch_rows, offset=10_000_000)
            for _ in range(2):
                await _journal(journal, warm)
                await _drain(writer)

            rows = hot_rows(encoder, events, recipients)
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


async def measure_many(dsn: str, events: int, writers: int, batch_rows: int = 5000, recipients: int = 1000) -> float:
    """`writers` writers at once, each with its own journal and connection (as many pods), all
    into one campaign; `events` in all, split between them. Returns events/s together."""
    settings = Settings(batch_max_rows=batch_rows, db_pool_max=writers + 1)
    pool = await create_pool(settings, dsn)
    with tempfile.TemporaryDirectory(prefix="trackd-bench-journals-") as tmp:
        journals = [
            Journal(Path(tmp) / str(n), max_bytes=1 << 40, segment_bytes=64 << 20, fsync=FsyncPolicy.never,
                    fsync_interval_s=1)
            for n in range(writers)
        ]  # fmt: skip
        for journal in journals:
            journal.open()
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            encoder = RowEncoder(settings)
            each = events // writers
            # One hot campaign; each writer has its own recipients (pods see different people).
            for n, journal in enumerate(journals):
                await _journal(journal, hot_rows(encoder, each, max(1, recipients // writers), 1, n * 1_000_000))
            all_writers = [Writer(settings, journal, pool, Metrics()) for journal in journals]
            before = await pool.fetchval("SELECT count(*) FROM events")
            started = time.perf_counter()
            await asyncio.gather(*(_drain(w) for w in all_writers))
            seconds = time.perf_counter() - started
            inserted = await pool.fetchval("SELECT count(*) FROM events") - before
            assert inserted == each * writers, f"{inserted} rows for {each * writers} events"
            for w in all_writers:
                await w.stop(10)
        finally:
            for journal in journals:
                await journal.close()
            await pool.close()
    return each * writers / seconds


def run_embedded(events: int, batch_rows: int, recipients: int, writers: int) -> tuple[WriterResult, float, float]:
    """One writer (with the replay), then one and `writers` writers side by side, each on a fresh
    database of the same server."""
    from loadtests.harness import start_postgres

    with tempfile.TemporaryDirectory(prefix="trackd-bench-writer-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            return asyncio.run(_all(pg.dsn, events, batch_rows, recipients, writers))
        finally:
            pg.stop("fast")


async def _fresh(dsn: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


async def _all(
    dsn: str, events: int, batch_rows: int, recipients: int, writers: int
) -> tuple[WriterResult, float, float]:
    one = await measure(await _fresh(dsn, "bench_one"), events, batch_rows, recipients)
    if writers <= 1:
        return one, one.events_per_s, one.events_per_s
    single = await measure_many(await _fresh(dsn, "bench_single"), events, 1, batch_rows, recipients)
    many = await measure_many(await _fresh(dsn, "bench_many"), events, writers, batch_rows, recipients)
    return one, single, many


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
    parser.add_argument(
        "--recipients",
        type=int,
        default=int(os.environ.get("BENCH_WRITER_RECIPIENTS", "60000")),
        help="distinct recipients (each one's first event in a campaign is a new unique)",
    )
    parser.add_argument("--writers", type=int, default=int(os.environ.get("BENCH_WRITERS", "4")))
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        one = asyncio.run(measure(dsn, args.events, args.batch_rows, args.recipients))
        single = many = one.events_per_s
    else:
        one, single, many = run_embedded(args.events, args.batch_rows, args.recipients, args.writers)
    print(report(one))
    target = 100_000
    print(f"{'PASS' if one.events_per_s >= target else 'MISS'}: writer with rollups >= {target:,} events/s "
          f"({args.recipients:,} recipients over {args.events:,} events)")  # fmt: skip
    if args.writers > 1 and not dsn:
        ratio = many / single
        print(
            f"{args.writers} writers at once into one campaign: {many:,.0f} events/s against {single:,.0f} "
            f"for one = {ratio:.2f}x; {'PASS' if ratio >= 1.5 else 'MISS'}: >= 1.5x, no deadlock"
        )


if __name__ == "__main__":
    main()
