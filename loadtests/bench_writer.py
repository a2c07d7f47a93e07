"""The batch writer alone: how many events per second one connection moves into PostgreSQL,
idempotence mechanism included (COPY into the stage table, INSERT ... ON CONFLICT DO NOTHING).

    .venv/bin/python -m loadtests.bench_writer            # its own embedded PostgreSQL
    DATABASE_URL=postgresql://... .venv/bin/python -m loadtests.bench_writer

It drives app.writer.Writer through its current internals (MemoryBacklog, RawEvent,
flush_once); when those change, this file is the one place to adapt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.backlog import MemoryBacklog
from app.db import create_pool, migrate
from app.events import EventIds, RawEvent
from app.metrics import Metrics
from app.settings import Settings
from app.tokens import KIND_CLICK, KIND_OPEN, KeyRing
from app.writer import Writer

_UA = b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"


@dataclass(frozen=True)
class WriterResult:
    events: int
    seconds: float
    rows_inserted: int
    replay_inserted: int  # rows a replayed batch added: must be 0
    row_making_share: float  # fraction of the time spent turning raw events into rows (Python)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def raw_events(count: int, distinct: int = 1000) -> list[RawEvent]:
    """Events as the hot path records them: verified payloads of `distinct` tokens, 3 opens to 1 click."""
    ring = KeyRing.from_specs(["w1:writer-bench-secret-0123456789"])
    payloads = []
    for i in range(distinct):
        if i % 4 == 3:
            token = ring.sign_click(f"camp-{i % 37}", f"r-{i:07d}", 0, f"https://shop.example.com/item/{i}?utm=mail")
            payloads.append(ring.verify(token, KIND_CLICK))
        else:
            payloads.append(ring.verify(ring.sign_open(f"camp-{i % 37}", f"r-{i:07d}"), KIND_OPEN))
    ids = EventIds()
    now = time.time()
    return [
        RawEvent(ids.next(now), now, False, payloads[i % distinct], "127.0.0.1", None, _UA)  # type: ignore[arg-type]
        for i in range(count)
    ]


async def measure(dsn: str, events: int, batch_rows: int = 5000) -> WriterResult:
    settings = Settings(batch_max_rows=batch_rows, db_pool_max=1, buffer_max_events=events + batch_rows)
    pool = await create_pool(settings, dsn)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        backlog = MemoryBacklog(settings.buffer_max_events)
        writer = Writer(settings, backlog, pool, Metrics())
        batch = raw_events(events)
        # Warm up off the clock: today's partition, the stage table, prepared statements.
        for event in raw_events(batch_rows):
            backlog.append(event)
        await writer.flush_once()

        for event in batch:
            backlog.append(event)
        inserted = 0
        started = time.perf_counter()
        while backlog.rows:
            inserted += await writer.flush_once()
        seconds = time.perf_counter() - started

        # Idempotence: the first batch again adds nothing.
        for event in batch[:batch_rows]:
            backlog.append(event)
        replayed = await writer.flush_once()

        making_started = time.perf_counter()
        for at in range(0, events, batch_rows):
            writer.rows.rows(batch[at : at + batch_rows])
        making = time.perf_counter() - making_started
    finally:
        await pool.close()
    return WriterResult(events, seconds, inserted, replayed, making / seconds)


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
        f"through one connection (rows inserted {result.rows_inserted}, replayed batch added "
        f"{result.replay_inserted}, row making {result.row_making_share:.0%} of the time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_WRITER_EVENTS", "300000")))
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--proposed-caches", action="store_true",
                        help="measure with the row-maker caches proposed in docs/benchmarks.md")  # fmt: skip
    args = parser.parse_args()
    if args.proposed_caches:
        from loadtests.whatif_serve import apply_proposed_caches

        apply_proposed_caches()
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
