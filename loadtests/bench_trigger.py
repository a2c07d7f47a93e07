"""The rollup trigger before and after migration 012, side by side in one database.

    .venv/bin/python -m loadtests.bench_trigger                       # 300,000 events, 60,000 recipients
    .venv/bin/python -m loadtests.bench_trigger --events 600000 --recipients 180000

Two runs of `make bench-writer` on this machine differ by more than the change measured here
(the same code gave 14 and 24 µs an event an hour apart), so the two versions are not run one
after the other: both triggers are installed on one `events` table, each gated by a setting,
and the batches (COPY of 5,000 rows as the writer sends them) go to one of them in shuffled
triples (with "none", below). All see the same tables at the same size, the same checkpoints
and the same neighbours; every committed batch is counted by exactly one version, so
`trackd_rollup_drift` at the end checks both.

"before": migration 007's trackd_rollup with 003/007's separate per-second trigger.
"after": migration 012's trackd_rollup, per-second counting folded in.
"none": every trigger returns at once: the insert, its indexes and the transition table only,
the floor the rollups are added to. Those batches are rolled back (their rows would be in no
rollup), so their wall time lacks the commit's flush; their CPU time is comparable.
Reported per version: wall time and the PostgreSQL backend's CPU time (from /proc) per event.
What it cannot show: a call saved. Every gated copy fires on every batch and returns at once
unless it is the one chosen (its DECLARE, which takes a slot, runs either way; slots are
re-entrant, so no extra ones are used): the same overhead for every version.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from app.copyrows import COLUMNS, COPY_HEADER, COPY_TRAILER, RowEncoder
from app.db import migrate
from app.settings import Settings
from loadtests.bench_writer import hot_rows

MIGRATIONS = Path(__file__).resolve().parent.parent / "app" / "migrations"


def _function(migration: str, name: str, renamed: str, gate: str) -> str:
    """`name`'s CREATE FUNCTION from a migration file, renamed, returning at once unless the
    transaction's bench.variant is `gate`."""
    text = (MIGRATIONS / migration).read_text()
    match = re.search(rf"CREATE (?:OR REPLACE )?FUNCTION {name}\(\).*?\n\$\$;", text, re.S)
    if match is None:
        raise SystemExit(f"{name} not found in {migration}")
    sql = match.group(0).replace(f"FUNCTION {name}()", f"FUNCTION {renamed}()", 1)
    sql = sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    guard = f"BEGIN\n    IF current_setting('bench.variant') <> '{gate}' THEN RETURN NULL; END IF;\n"
    return sql.replace("BEGIN\n", guard, 1)


def _trigger(function: str) -> str:
    return (
        f"CREATE TRIGGER {function}_t AFTER INSERT ON events REFERENCING NEW TABLE AS inserted"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )


@dataclass
class Tally:
    events: int = 0
    wall: list[float] = field(default_factory=list)
    cpu: float = 0.0


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def run(dsn: str, events: int, recipients: int, batch_rows: int, seed: int) -> dict[str, Tally]:
    rows = [row for row, _ in hot_rows(RowEncoder(Settings()), events, recipients)]
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute("SELECT trackd_ensure_partitions(ARRAY[current_date - 1, current_date, current_date + 1])")
        # The installed trigger makes way for gated copies of both versions (the migrations' own texts).
        await conn.execute("DROP TRIGGER events_rollup ON events")
        await conn.execute(_function("012_one_rollup_trigger.sql", "trackd_rollup", "bench_after", "after"))
        await conn.execute(_function("007_rollups.sql", "trackd_rollup", "bench_before", "before"))
        await conn.execute(_function("007_rollups.sql", "trackd_count_per_second", "bench_before_per_second", "before"))
        for function in ("bench_after", "bench_before", "bench_before_per_second"):
            await conn.execute(_trigger(function))
        pid = conn.get_server_pid()

        def cpu_s() -> float:  # the backend's user + system time
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        rnd = random.Random(seed)
        tallies = {"before": Tally(), "after": Tally(), "none": Tally()}
        order: list[str] = []
        for at in range(0, len(rows), batch_rows):
            if not order:
                order = list(tallies)
                rnd.shuffle(order)
            variant = order.pop()
            chunk = rows[at : at + batch_rows]
            data = b"".join([COPY_HEADER, *chunk, COPY_TRAILER])
            cpu0, wall0 = cpu_s(), time.perf_counter()
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute(f"SET LOCAL bench.variant = '{variant}'; SET LOCAL trackd.per_second = 'trigger'")
            await conn.copy_to_table("events", source=_one(data), columns=list(COLUMNS), format="binary")
            await (transaction.rollback() if variant == "none" else transaction.commit())
            tally = tallies[variant]
            tally.wall.append(time.perf_counter() - wall0)
            tally.cpu += cpu_s() - cpu0
            tally.events += len(chunk)
        drift = await conn.fetchval("SELECT count(*) FROM trackd_rollup_drift(NULL)")
        per_second = await conn.fetchval("SELECT sum(events) FROM interactions_per_second")
        stored = await conn.fetchval("SELECT count(*) FROM events")
        if drift or per_second != stored:
            raise SystemExit(f"the rollups are wrong: {drift} drift rows, {per_second} per second for {stored} events")
        return tallies
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--recipients", type=int, default=60_000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from loadtests.harness import start_postgres

    with tempfile.TemporaryDirectory(prefix="trackd-bench-trigger-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            tallies = asyncio.run(run(pg.dsn, args.events, args.recipients, args.batch_rows, args.seed))
        finally:
            pg.stop("fast")
    for name, t in tallies.items():
        wall = sorted(t.wall)
        print(
            f"{name:6s} {t.events:,} events: wall {sum(wall) / t.events * 1e6:.2f} µs/event"
            f" ({t.events / sum(wall):,.0f} events/s; median batch {wall[len(wall) // 2] * 1000:.1f} ms),"
            f" PostgreSQL backend CPU {t.cpu / t.events * 1e6:.2f} µs/event"
        )
    before, after, none = tallies["before"], tallies["after"], tallies["none"]
    print(
        f"after/before: wall {sum(after.wall) / after.events / (sum(before.wall) / before.events):.3f},"
        f" CPU {after.cpu / after.events / (before.cpu / before.events):.3f}; rollups and per-second exact."
        f" The rollups' CPU over the floor: before {(before.cpu / before.events - none.cpu / none.events) * 1e6:.2f},"
        f" after {(after.cpu / after.events - none.cpu / none.events) * 1e6:.2f} µs/event"
    )


if __name__ == "__main__":
    main()
