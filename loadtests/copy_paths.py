"""The database half of the writer alone, two ways, same rows, one connection:
  stage   COPY into the temp stage table + INSERT ... ON CONFLICT DO NOTHING (app/writer.py today)
  direct  COPY straight into `events` (what a fast path with a fallback to `stage` would do)

    .venv/bin/python -m loadtests.copy_paths        # its own embedded PostgreSQL

Rows are made before the clock starts: this isolates PostgreSQL + COPY encoding from row making.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path

import asyncpg

from app.db import migrate
from app.events import COLUMNS, RowMaker
from app.settings import Settings
from app.writer import _MOVE, _STAGE_DDL
from loadtests.bench_writer import raw_events
from loadtests.harness import start_postgres


async def rates(dsn: str, events: int = 200_000, batch: int = 5000, rounds: int = 2) -> dict[str, list[float]]:
    conn = await asyncpg.connect(dsn)
    out: dict[str, list[float]] = {"stage": [], "direct": []}
    try:
        await migrate(conn)
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute("SELECT trackd_ensure_partitions($1::date[])", [dt.datetime.now(dt.UTC).date()])
        maker = RowMaker(Settings())
        for _ in range(rounds):
            for mode in out:
                rows = maker.rows(raw_events(events))  # fresh ids: nothing collides
                started = time.perf_counter()
                for at in range(0, events, batch):
                    async with conn.transaction():
                        if mode == "stage":
                            await conn.execute(_STAGE_DDL)
                            await conn.copy_records_to_table("trackd_stage", records=rows[at : at + batch],
                                                             columns=COLUMNS)  # fmt: skip
                            await conn.execute(_MOVE)
                        else:
                            await conn.copy_records_to_table("events", records=rows[at : at + batch], columns=COLUMNS)
                out[mode].append(events / (time.perf_counter() - started))
    finally:
        await conn.close()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="trackd-copy-paths-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            result = asyncio.run(rates(pg.dsn))
        finally:
            pg.stop("fast")
    for mode, values in result.items():
        print(f"{mode}: " + ", ".join(f"{v:,.0f}" for v in values) + " rows/s")


if __name__ == "__main__":
    main()
