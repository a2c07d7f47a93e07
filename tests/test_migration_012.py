"""Migration 012 (one rollup trigger) applied to a database in use: its one step that locks
`events` exclusively (dropping the old per-second trigger) must not hold up the writers behind a
long reader, and what was counted before it stays counted once."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg

from app.db import migrate
from tests.conftest import apply_migrations, create_database
from tests.rollup_support import BASE, Ev, assert_exact, insert_counted


def _click(recipient: str, seconds: float) -> Ev:
    return Ev("c1", "click", recipient, 0, BASE + dt.timedelta(seconds=seconds), None, False, None)


async def test_writers_go_on_while_a_long_reader_holds_back_the_migration(admin_dsn: str) -> None:
    dsn = await create_database(admin_dsn)
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    admin, reader, writer = conns
    try:
        await apply_migrations(admin, stop="012")
        before = [_click(f"r{i}", i) for i in range(5)]
        await insert_counted(writer, before)  # counted by the old two triggers

        # A long reader (trackd verify, an analyst) holds a lock on events for 5 s.
        held = reader.transaction()
        await held.start()
        await reader.fetchval("SELECT count(*) FROM events")
        migration = asyncio.create_task(migrate(admin))
        await asyncio.sleep(0.5)  # the migration is now asking for its exclusive lock
        started = time.monotonic()
        during = [_click(f"s{i}", 100 + i) for i in range(3)]
        await asyncio.wait_for(insert_counted(writer, during), 4)  # not behind the reader's 5 s
        waited = time.monotonic() - started
        assert not migration.done(), "the migration cannot have dropped the trigger while the reader holds events"
        await asyncio.sleep(max(0.0, 4.5 - waited))
        await held.rollback()
        assert await asyncio.wait_for(migration, 30) == ["012_one_rollup_trigger"]

        triggers = await admin.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
        )
        assert [r["tgname"] for r in triggers] == ["events_rollup"]
        after = [_click(f"t{i}", 200 + i) for i in range(4)]
        await insert_counted(writer, after)
        # Every event counted once per second and in the rollups, before, during and after.
        total = await admin.fetchval("SELECT sum(events) FROM interactions_per_second")
        assert total == len(before) + len(during) + len(after)
        await assert_exact(admin)
    finally:
        for conn in conns:
            await conn.close()
