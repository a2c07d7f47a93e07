"""The writer against a real PostgreSQL: idempotent batches and exact per-second counts."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from pathlib import Path

import asyncpg
import pytest

from app.copyrows import COLUMNS, COPY_HEADER, COPY_TRAILER, RowEncoder
from app.db import create_pool, migrate
from app.events import EventIds, RawEvent
from app.journal import Chunk, Journal, encode
from app.metrics import Metrics
from app.settings import FsyncPolicy, Settings
from app.writer import Writer, is_data_error, partition_days
from tests.support import v1_payload
from trackd_links.tokens import KIND_CLICK, KeyRing

RING = KeyRing.from_specs(["k1:writer-test-secret-0123"])


def raw_events(campaign: str, n: int) -> list[RawEvent]:
    ids = EventIds()
    now = time.time()
    payload = v1_payload(RING, KIND_CLICK, campaign, "r", "https://example.com/")  # format 1 holds version 1
    return [RawEvent(ids.next(now), now - i * 0.01, False, payload, "127.0.0.1", None, b"UA") for i in range(n)]


def chunks_of(events: list[RawEvent]) -> list[Chunk]:
    """One frame per event, as the journal would hand them to the writer."""
    encoder = RowEncoder(Settings())
    out = []
    for event in events:
        row, received_us = encoder.from_event(event)
        out.append(Chunk(1, received_us, received_us, row))
    return out


async def append_rows(journal: Journal, events: list[RawEvent]) -> None:
    chunks = chunks_of(events)
    assert all(await asyncio.gather(*(journal.append(c.rows, c.first_us) for c in chunks)))  # type: ignore[misc]


@pytest.fixture
async def writer(tmp_path: Path, database_url: str) -> Writer:
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    pool = await create_pool(settings, database_url)
    async with pool.acquire() as conn:
        await migrate(conn)
    journal = Journal(tmp_path / "j", max_bytes=1 << 20, segment_bytes=1 << 16, fsync=FsyncPolicy.never,
                      fsync_interval_s=1)  # fmt: skip
    writer = Writer(settings, journal, pool, Metrics())
    yield writer
    await writer.stop(5)  # hands its connection back
    await asyncio.wait_for(pool.close(), 10)


async def test_a_batch_written_twice_adds_and_counts_nothing(writer: Writer, db: asyncpg.Connection) -> None:
    rows = chunks_of(raw_events("idempotent", 300))
    async with writer.pool.acquire() as conn:
        assert await writer._write(conn, rows, [], direct=True) == 300
        # The commit outcome was "unknown" (say the connection dropped as COMMIT went out): retry.
        # The straight COPY fails on the primary key and the batch goes through the stage.
        assert await writer._write(conn, rows, [], direct=True) == 0
        assert await writer._write(conn, rows[:10] + rows[-10:], [], direct=False) == 0
    assert await db.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'idempotent'") == 300
    per_second = await db.fetchval("SELECT sum(events) FROM interactions_per_second WHERE campaign_id = 'idempotent'")
    assert per_second == 300


async def test_per_second_rows_match_the_events(writer: Writer, db: asyncpg.Connection) -> None:
    rows = chunks_of(raw_events("per-second", 500))
    async with writer.pool.acquire() as conn:
        assert await writer._write(conn, rows[:250], [], direct=True) == 250
        assert await writer._write(conn, rows[200:], [], direct=True) == 250  # the overlap counts once
    mismatches = await db.fetch(
        """
        SELECT e.second, e.n, p.events FROM (
            SELECT date_trunc('second', occurred_at) AS second, count(*) AS n FROM events
            WHERE campaign_id = 'per-second' GROUP BY 1) e
        FULL JOIN (SELECT second, events FROM interactions_per_second WHERE campaign_id = 'per-second') p
        USING (second) WHERE e.n IS DISTINCT FROM p.events
        """
    )
    assert mismatches == []
    lag = await db.fetchval("SELECT max(max_lag_ms) FROM interactions_per_second WHERE campaign_id = 'per-second'")
    assert lag >= 4000  # the oldest row was received ~5 s before it was written


def test_data_errors_are_told_from_transient_ones() -> None:
    assert is_data_error(asyncpg.CheckViolationError("violates check constraint"))
    assert is_data_error(asyncpg.NotNullViolationError("null value"))
    assert is_data_error(asyncpg.CharacterNotInRepertoireError("invalid byte sequence"))
    assert not is_data_error(asyncpg.CheckViolationError('no partition of relation "events" found for row'))
    assert not is_data_error(asyncpg.QueryCanceledError("canceling statement due to statement timeout"))
    assert not is_data_error(asyncpg.DeadlockDetectedError("deadlock detected"))
    assert not is_data_error(ConnectionResetError())


async def test_an_unexpected_error_does_not_stop_the_writer(writer: Writer, db: asyncpg.Connection) -> None:
    """asyncpg can raise errors outside its PostgresError/InterfaceError families (we saw
    InternalClientError after a server restart); the writer retries on a fresh connection."""
    journal = writer.journal
    journal.open()
    await append_rows(journal, raw_events("unexpected", 25))
    real_write, failures = writer._write, []

    async def flaky_write(conn: asyncpg.Connection, rows: list, dead: list, *, direct: bool) -> int:  # type: ignore[type-arg]
        if not failures:
            failures.append(conn.get_server_pid())
            raise asyncpg.exceptions._base.InternalClientError("cannot switch to state 15")
        return await real_write(conn, rows, dead, direct=direct)

    writer._write = flaky_write  # type: ignore[method-assign]
    writer.start()
    deadline = time.monotonic() + 10
    while await db.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'unexpected'") < 25:
        assert time.monotonic() < deadline, "the writer did not recover"
        await asyncio.sleep(0.05)
    # The connection it failed on was closed, not handed back to the pool for reuse.
    backends = await db.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = 'trackd'")
    assert failures[0] not in {b["pid"] for b in backends}
    assert writer.state == "running"
    await writer.stop(5)
    await journal.close()


async def test_a_record_no_row_can_be_made_of_goes_to_dead_letters(
    tmp_path: Path, writer: Writer, db: asyncpg.Connection
) -> None:
    """A format 1 journal left by an earlier version is replayed; a record in it whose payload
    cannot be parsed goes to the dead letters and the rest lands."""
    good = raw_events("unmakeable", 10)
    broken = good[0]._replace(id=good[0].id + 10**6, payload=b"\x01\x01\xff\x00")  # signed by nobody, unparsable
    old = tmp_path / "j" / "20250101T000000-1-old"
    old.mkdir(parents=True)
    (old / "00000001.seg").write_bytes(b"".join(encode(e) for e in [*good, broken]))
    writer.journal.open()
    while await writer.flush_once():
        pass
    assert await db.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'unmakeable'") == 10
    dead = await db.fetchrow(
        "SELECT error, row_repr FROM events_dead_letter WHERE row_repr LIKE '%\\\\x01\\\\x01\\\\xff%'"
    )
    # the payload ends too soon: struct refuses to read past it
    assert dead is not None and "requires a buffer of at least" in dead["error"]
    assert not old.exists()  # fully replayed and removed
    await writer.journal.close()


async def test_a_row_postgresql_refuses_is_isolated(writer: Writer, db: asyncpg.Connection) -> None:
    """A row PostgreSQL refuses as data (here: a campaign id that is not UTF-8, which no signed
    link can carry) fails the batch's COPY; bisecting lands every other row."""
    events = raw_events("refused", 9)
    payload = bytearray(events[4].payload)
    at = 3 + payload[2] + 4 + 2 + 1  # the first byte of the campaign id
    payload[at] = 0xFF
    events[4] = events[4]._replace(payload=bytes(payload))
    async with writer.pool.acquire() as conn:
        dead: list = []  # type: ignore[type-arg]
        assert await writer._write(conn, chunks_of(events), dead, direct=True) == 8
    assert await db.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'refused'") == 8
    row = await db.fetchrow("SELECT id, error, row_repr FROM events_dead_letter WHERE row_repr LIKE '%efused%'")
    assert row is not None and row["error"].startswith("22021") and row["id"] is not None


def test_partitions_cover_every_day_a_tick_touches() -> None:
    midnight_us = 1_764_460_800 * 1_000_000  # 2025-11-30T00:00:00Z
    days = partition_days([(midnight_us - 1, midnight_us)])
    assert days == {dt.date(2025, 11, 29), dt.date(2025, 11, 30)}
    assert partition_days([(midnight_us - 3600_000_000, midnight_us - 1)]) == {dt.date(2025, 11, 29)}


async def test_events_received_long_ago_still_land(writer: Writer, db: asyncpg.Connection) -> None:
    """A journal replayed weeks later (a long outage, a parked volume): lags beyond 2^31 ms must
    not turn every row into a dead letter."""
    old = [e._replace(received_at=e.received_at - 40 * 86400) for e in raw_events("long-ago", 5)]
    async with writer.pool.acquire() as conn:
        assert await writer._write(conn, chunks_of(old), [], direct=True) == 5
    lag = await db.fetchval("SELECT max(max_lag_ms) FROM interactions_per_second WHERE campaign_id = 'long-ago'")
    assert lag == 2**31 - 1


async def test_only_transactions_that_ask_are_counted_per_second(writer: Writer, db: asyncpg.Connection) -> None:
    """A writer of the previous version counts its own rows into interactions_per_second; during
    a rolling upgrade the trigger must not count them again. It counts trackd's own sessions."""
    rows = chunks_of(raw_events("older-writer", 3))
    await db.execute("SELECT trackd_ensure_partitions(ARRAY[current_date - 1, current_date]::date[])")
    await db.copy_to_table("events", source=memoryview(b"".join([COPY_HEADER, *(c.rows for c in rows), COPY_TRAILER])),
                           columns=COLUMNS, format="binary")  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM interactions_per_second WHERE campaign_id = 'older-writer'") == 0
    more = chunks_of(raw_events("older-writer", 2))
    async with writer.pool.acquire() as conn:
        assert await writer._write(conn, more, [], direct=True) == 2
    assert await db.fetchval("SELECT sum(events) FROM interactions_per_second WHERE campaign_id = 'older-writer'") == 2


async def test_format_1_times_round_as_postgresql_rounded_them(db: asyncpg.Connection) -> None:
    """Earlier versions stored to_timestamp(received_at); a replay must land on the same primary
    key, so the row made now carries the very same microsecond."""
    encoder = RowEncoder(Settings())
    rng = random.Random(7)
    times = [1_764_000_000 + rng.random() * 10**7 for _ in range(2000)]
    expected = await db.fetch(
        "SELECT (extract(epoch FROM to_timestamp(t)) * 1000000)::int8 AS us FROM unnest($1::float8[]) t", times
    )
    base = raw_events("rounding", 1)[0]
    got = [encoder.from_event(base._replace(received_at=t))[1] for t in times]
    assert got == [r["us"] for r in expected]


async def test_a_frame_that_does_not_cut_into_rows_goes_to_dead_letters(writer: Writer, db: asyncpg.Connection) -> None:
    """Damage no checksum caught: PostgreSQL refuses the COPY, and the frame cannot even be cut
    into rows to bisect. It is kept whole in the dead letters; the rows beside it land."""
    good = chunks_of(raw_events("beside-garbage", 3))
    now_us = good[0].first_us
    garbage = Chunk(2, now_us, now_us, b"\x00\x0c\x00")  # a row header and no fields
    async with writer.pool.acquire() as conn:
        dead: list = []  # type: ignore[type-arg]
        assert await writer._write(conn, [*good, garbage], dead, direct=True) == 3
    assert len(dead) == 1 and dead[0][1].startswith("unreadable frame of 2 events")
    assert await db.fetchval("SELECT count(*) FROM events WHERE campaign_id = 'beside-garbage'") == 3
    assert await db.fetchval("SELECT count(*) FROM events_dead_letter WHERE error LIKE 'unreadable frame%'") == 1


async def test_a_full_pool_is_busy_not_postgresql_unreachable(writer: Writer) -> None:
    """The dashboard's fleet read cannot get a connection because every one is in use (the
    writer, stats reads): it says `busy`, with no "unreachable since" banner, and PostgreSQL
    answering again is `ok`."""
    from app import heartbeat

    beat = heartbeat.Heartbeat(writer.pool, writer)
    held = [await writer.pool.acquire() for _ in range(writer.pool.get_max_size())]
    try:
        fleet = await beat.fleet()
        assert fleet["database"] == "busy" and fleet["unreachable_since"] is None
    finally:
        for conn in held:
            await writer.pool.release(conn)
    assert (await beat.fleet())["database"] == "ok"
