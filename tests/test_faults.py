"""Nothing recorded is ever lost: faults really happen here. PostgreSQL is really stopped, locked
and restarted; server processes really get SIGTERM and SIGKILL. A client records every response,
and at the end what it was served is compared with what is in `events`: every served event is
there, exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from app.pgserver import EmbeddedPostgres
from tests.loadclient import Load, p99, served, signed_paths
from tests.support import ROOT, ServerProcess, embedded_postgres, metric

pytestmark = pytest.mark.faults

FAULT_ENV = {
    "TRACKD_DB_STATEMENT_TIMEOUT_MS": "2000",
    "TRACKD_FLUSH_INTERVAL_MS": "50",
    "TRACKD_ORPHAN_SCAN_INTERVAL_S": "1",
    "TRACKD_SHUTDOWN_TIMEOUT_S": "5",
}


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so that the test may stop it, lock it, restart it."""
    with embedded_postgres() as server:
        yield server


def trackd(tmp_path: Path, pg: EmbeddedPostgres, **env: str) -> ServerProcess:
    return ServerProcess(tmp_path / "trackd", pg.dsn, env={**FAULT_ENV, **env})


async def rows_by_recipient(dsn: str, campaign: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT recipient_id, count(*) AS n FROM events WHERE campaign_id = $1 GROUP BY 1",
                                campaign)  # fmt: skip
    finally:
        await conn.close()
    return Counter({r["recipient_id"]: r["n"] for r in rows})


async def per_second_total(dsn: str, campaign: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT coalesce(sum(events), 0) FROM interactions_per_second WHERE campaign_id = $1", campaign
        )
    finally:
        await conn.close()


async def settle(dsn: str, campaign: str, expected: set[str], timeout: float = 60) -> Counter[str]:
    """Wait until every served recipient has its row; return the rows found."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await rows_by_recipient(dsn, campaign)
        if expected <= set(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def assert_verified(dsn: str) -> None:
    """Every fault test ends here: `trackd verify`, a real process, finds every rollup equal to
    its recomputation from the events that survived the fault (exit 0)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "verify", cwd=ROOT, env={**os.environ, "DATABASE_URL": dsn},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode(errors="replace")


def assert_exactly_once(rows: Counter[str], served_to: set[str], sent: int) -> None:
    missing = served_to - set(rows)
    assert not missing, f"{len(missing)} served events missing from events, e.g. {sorted(missing)[:5]}"
    twice = {r: n for r, n in rows.items() if n > 1}
    assert not twice, f"events recorded more than once: {list(twice.items())[:5]}"
    assert set(rows) <= {f"r{i}" for i in range(sent)}


async def test_database_down_for_60_seconds(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    """Redirects keep answering, no 5xx, p99 no worse than twice normal; every event reaches the
    table once PostgreSQL is back, and the pool and writer recover by themselves."""
    campaign = "outage"
    baseline_s, outage_s, after_s, rate = 8.0, 60.0, 5.0, 150
    paths = signed_paths(campaign, int((baseline_s + outage_s + after_s) * rate))
    with trackd(tmp_path, pg) as srv:
        load = Load("127.0.0.1", srv.port, paths, rate=rate)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(baseline_s)
        await asyncio.to_thread(pg.stop, "immediate")
        down_at = load.elapsed()
        await asyncio.sleep(outage_s / 2)
        assert metric(srv.base_url, "trackd_backlog_rows") > 0
        assert metric(srv.base_url, "trackd_backlog_oldest_age_seconds") > 1
        assert metric(srv.base_url, "trackd_writer_up") == 0
        await asyncio.sleep(outage_s / 2)
        await asyncio.to_thread(pg.start)
        up_at = load.elapsed()
        outcomes = await running

        statuses = Counter(o.status for o in outcomes)
        assert set(statuses) <= {200, 302}, statuses  # no 5xx, no connection error, ever
        t0 = load._started
        normal = [o.latency for o in outcomes if o.latency and 1.0 < o.sent_at - t0 < down_at]
        during = [o.latency for o in outcomes if o.latency and down_at < o.sent_at - t0 < up_at]
        assert len(during) > outage_s * rate * 0.9
        # Twice normal, with a 2 ms floor on "normal" so that scheduler noise on a sub-millisecond
        # baseline does not decide the test.
        assert p99(during) <= 2 * max(p99(normal), 0.002), (p99(normal), p99(during))

        rows = await settle(pg.dsn, campaign, served(outcomes))
        assert_exactly_once(rows, served(outcomes), len(paths))
        assert len(rows) == len(paths)
        assert await per_second_total(pg.dsn, campaign) == len(rows)  # the per-second table agrees
        assert metric(srv.base_url, "trackd_writer_up") == 1
        assert metric(srv.base_url, "trackd_write_errors_total") > 0
        assert httpx.get(f"{srv.base_url}/readyz").json()["writer"] == "running"
    await assert_verified(pg.dsn)


async def test_database_slow_lock_held_30_seconds(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    """A lock on `events` for 30 s: statements time out and are retried, redirects unaffected."""
    campaign = "locked"
    rate = 150
    paths = signed_paths(campaign, int(40 * rate))
    with trackd(tmp_path, pg) as srv:
        load = Load("127.0.0.1", srv.port, paths, rate=rate)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(3)
        conn = await asyncpg.connect(pg.dsn)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                await asyncio.sleep(30)
        finally:
            await conn.close()
        outcomes = await running
        assert {o.status for o in outcomes} <= {200, 302}
        # The server's statement_timeout (QueryCanceledError) or, as a backstop, the client's.
        assert metric(srv.base_url, "trackd_write_errors_total") > 0
        assert "QueryCanceledError" in srv.log() or "TimeoutError" in srv.log()
        rows = await settle(pg.dsn, campaign, served(outcomes))
        assert_exactly_once(rows, served(outcomes), len(paths))
        assert len(rows) == len(paths)
    await assert_verified(pg.dsn)


async def test_ten_restarts_under_load(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    """PostgreSQL restarted 10 times: the service never needs a restart. Reports the time from
    each restart to the first successful write."""
    campaign = "restarts"
    rate = 100
    paths = signed_paths(campaign, 60 * rate)
    recoveries: list[float] = []
    with trackd(tmp_path, pg) as srv:
        pid = srv.proc.pid  # type: ignore[union-attr]
        load = Load("127.0.0.1", srv.port, paths, rate=rate)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(1)
        for i in range(10):
            await asyncio.to_thread(pg.stop, "fast" if i % 2 else "immediate")
            await asyncio.sleep(0.5)
            written = metric(srv.base_url, "trackd_events_written_total")
            await asyncio.to_thread(pg.start)
            started = time.monotonic()
            while metric(srv.base_url, "trackd_events_written_total") <= written:
                assert time.monotonic() - started < 15, "no write within 15 s of the restart"
                await asyncio.sleep(0.02)
            recoveries.append(time.monotonic() - started)
        load.stop()
        outcomes = await running
        assert srv.proc is not None and srv.proc.pid == pid and srv.proc.poll() is None
        assert {o.status for o in outcomes} <= {200, 302}
        rows = await settle(pg.dsn, campaign, served(outcomes))
        assert_exactly_once(rows, served(outcomes), len(paths))
    report = ", ".join(f"{r:.2f}" for r in recoveries)
    print(f"\nrestart -> first successful write (s): {report}; max {max(recoveries):.2f}")
    await assert_verified(pg.dsn)


async def test_sigterm_under_load_drains_then_exits(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "sigterm"
    paths = signed_paths(campaign, 3000)
    srv = trackd(tmp_path, pg, TRACKD_SHUTDOWN_DELAY_S="1.5").start()
    load = Load("127.0.0.1", srv.port, paths, rate=400)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(2)
    srv.signal(signal.SIGTERM)
    signalled = time.monotonic()
    # /readyz turns 503 first, while redirects are still answered.
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["shutting_down"] is True
        assert (await client.get(signed_paths("sigterm-probe", 1)[0])).status_code == 302
    exit_code = await asyncio.to_thread(srv.proc.wait, 30)  # type: ignore[union-attr]
    took = time.monotonic() - signalled
    load.stop()
    outcomes = await running
    assert exit_code in (0, -signal.SIGTERM), srv.log()
    assert took < 1.5 + 5 + 3, took
    # Committed before exit: no restart needed for the rows to be there.
    rows = await rows_by_recipient(pg.dsn, campaign)
    assert_exactly_once(rows, served(outcomes), len(paths))
    assert not list((tmp_path / "trackd" / "journal").iterdir()), "a fully drained journal is removed"
    await assert_verified(pg.dsn)


async def test_sigterm_with_database_down_keeps_events_on_disk(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "sigterm-down"
    paths = signed_paths(campaign, 600)
    srv = trackd(tmp_path, pg, TRACKD_SHUTDOWN_TIMEOUT_S="2").start()
    await asyncio.to_thread(pg.stop, "immediate")
    outcomes = await Load("127.0.0.1", srv.port, paths, rate=600).run()
    srv.signal(signal.SIGTERM)
    started = time.monotonic()
    exit_code = await asyncio.to_thread(srv.proc.wait, 30)  # type: ignore[union-attr]
    assert exit_code in (0, -signal.SIGTERM) and time.monotonic() - started < 2 + 3
    assert "stay in" in srv.log()
    assert any((tmp_path / "trackd" / "journal").rglob("*.seg"))
    await asyncio.to_thread(pg.start)
    with trackd(tmp_path, pg) as again:
        rows = await settle(pg.dsn, campaign, served(outcomes))
        assert_exactly_once(rows, served(outcomes), len(paths))
        assert metric(again.base_url, "trackd_events_replayed_total") == len(served(outcomes))
    await assert_verified(pg.dsn)


async def test_sigkill_at_random_moments_then_restart(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "sigkill"
    paths = signed_paths(campaign, 8000)
    srv = trackd(tmp_path, pg).start()
    load = Load("127.0.0.1", srv.port, paths, rate=500)
    running = asyncio.create_task(load.run())
    rng = random.Random(os.environ.get("TRACKD_FAULT_SEED", "7"))
    for _ in range(4):
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        srv.signal(signal.SIGKILL)
        await asyncio.to_thread(srv.proc.wait)  # type: ignore[union-attr]
        srv.start()
    await asyncio.sleep(1)
    load.stop()
    outcomes = await running
    try:
        rows = await settle(pg.dsn, campaign, served(outcomes))
        assert_exactly_once(rows, served(outcomes), len(paths))
        assert await per_second_total(pg.dsn, campaign) == len(rows)
        assert sum(1 for o in outcomes if o.error) > 0  # the kills really cut requests off
        assert metric(srv.base_url, "trackd_events_replayed_total") > 0
    finally:
        srv.stop()
    await assert_verified(pg.dsn)


async def test_replaying_the_same_journal_twice_adds_nothing(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "twice"
    paths = signed_paths(campaign, 300)
    srv = trackd(tmp_path, pg).start()
    await asyncio.to_thread(pg.stop, "immediate")
    outcomes = await Load("127.0.0.1", srv.port, paths, rate=1000).run()
    srv.signal(signal.SIGKILL)
    srv.proc.wait()  # type: ignore[union-attr]
    (journal,) = (tmp_path / "trackd" / "journal").iterdir()
    shutil.copytree(journal, journal.with_name(journal.name + "-copy"), ignore=shutil.ignore_patterns("lock"))
    await asyncio.to_thread(pg.start)
    with trackd(tmp_path, pg) as again:
        rows = await settle(pg.dsn, campaign, served(outcomes))
        deadline = time.monotonic() + 20
        while any((tmp_path / "trackd" / "journal").glob("*-copy")):
            assert time.monotonic() < deadline, "the copied journal was not replayed"
            await asyncio.sleep(0.2)
        assert metric(again.base_url, "trackd_events_replayed_total") == 2 * len(served(outcomes))
        assert metric(again.base_url, "trackd_events_duplicate_total") == len(served(outcomes))
    assert_exactly_once(rows, served(outcomes), len(paths))
    assert await per_second_total(pg.dsn, campaign) == len(rows) == len(served(outcomes))
    await assert_verified(pg.dsn)


async def test_full_journal_drops_counts_and_recovers(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "full"
    paths = signed_paths(campaign, 1500)
    with trackd(tmp_path, pg, TRACKD_JOURNAL_MAX_BYTES="65536") as srv:
        await asyncio.to_thread(pg.stop, "immediate")
        outcomes = await Load("127.0.0.1", srv.port, paths, rate=2000).run()
        assert {o.status for o in outcomes} <= {200, 302}  # redirects still answer
        dropped = metric(srv.base_url, "trackd_events_dropped_total", {"reason": "journal_full"})
        recorded = metric(srv.base_url, "trackd_interactions_total", {"outcome": "recorded"})
        assert dropped > 0 and recorded + dropped == len(paths)
        assert metric(srv.base_url, "trackd_interactions_total", {"outcome": "dropped"}) == dropped
        ready = httpx.get(f"{srv.base_url}/readyz")
        # Still ready: a full journal is reported, but never takes the pod out of the Service.
        assert ready.status_code == 200 and ready.json()["journal_full"] is True
        await asyncio.to_thread(pg.start)
        deadline = time.monotonic() + 30
        while httpx.get(f"{srv.base_url}/readyz").json()["journal_full"]:
            assert time.monotonic() < deadline, "never ready again"
            await asyncio.sleep(0.2)
        rows = await settle(pg.dsn, campaign, set(), timeout=0)
        deadline = time.monotonic() + 30
        while sum(rows.values()) < recorded:
            assert time.monotonic() < deadline, "recorded events did not all arrive"
            await asyncio.sleep(0.2)
            rows = await rows_by_recipient(pg.dsn, campaign)
        assert sum(rows.values()) == recorded and max(rows.values()) == 1
    await assert_verified(pg.dsn)


async def test_torn_and_corrupt_journal_replays_what_is_valid(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "damaged"
    paths = signed_paths(campaign, 200)
    srv = trackd(tmp_path, pg).start()
    await asyncio.to_thread(pg.stop, "immediate")
    outcomes = await Load("127.0.0.1", srv.port, paths, rate=2000, connections=1).run()
    srv.signal(signal.SIGKILL)
    srv.proc.wait()  # type: ignore[union-attr]
    (segment,) = (tmp_path / "trackd" / "journal").rglob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the middle
    segment.write_bytes(bytes(data[:-9]))  # and a torn tail
    await asyncio.to_thread(pg.start)
    srv.log_path.unlink()
    with trackd(tmp_path, pg) as again:
        deadline = time.monotonic() + 20
        while metric(again.base_url, "trackd_events_replayed_total") < len(paths) - 2:
            assert time.monotonic() < deadline, "valid records were not replayed"
            await asyncio.sleep(0.2)
        rows = await rows_by_recipient(pg.dsn, campaign)
        assert len(served(outcomes)) - 2 <= len(rows) < len(served(outcomes))
        assert max(rows.values()) == 1
        assert metric(again.base_url, "trackd_journal_damaged_total", {"kind": "torn_tail"}) == 1
        assert metric(again.base_url, "trackd_journal_damaged_total", {"kind": "corrupt_record"}) == 1
        assert httpx.get(f"{again.base_url}/readyz").status_code == 200
        log = again.log()
        assert log.count("damaged record") == 1 and log.count("torn tail") == 1
    await assert_verified(pg.dsn)


async def test_poison_row_goes_to_dead_letters_and_the_rest_lands(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "poison"
    paths = signed_paths(campaign, 400)
    with trackd(tmp_path, pg, TRACKD_FLUSH_INTERVAL_MS="500") as srv:
        conn = await asyncpg.connect(pg.dsn)
        try:
            # PostgreSQL will refuse these recipients' rows, as it might refuse any row one day.
            await conn.execute(
                "ALTER TABLE events ADD CONSTRAINT refuse_some"
                " CHECK (campaign_id <> 'poison' OR recipient_id NOT IN ('r7', 'r300'))"
            )
            outcomes = await Load("127.0.0.1", srv.port, paths, rate=5000).run()
            good = served(outcomes) - {"r7", "r300"}
            rows = await settle(pg.dsn, campaign, good)
            assert set(rows) == good and max(rows.values()) == 1
            dead = await conn.fetch("SELECT error, row_repr FROM events_dead_letter ORDER BY row_repr")
            assert len(dead) == 2 and all("refuse_some" in d["error"] for d in dead)
            assert metric(srv.base_url, "trackd_events_dead_lettered_total") == 2
            more = signed_paths(campaign + "-after", 50)
            after = await Load("127.0.0.1", srv.port, more, rate=1000).run()
            assert len(await settle(pg.dsn, campaign + "-after", served(after))) == 50  # still writing
        finally:
            await conn.close()
    await assert_verified(pg.dsn)


async def test_several_workers_one_data_directory(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    campaign = "workers"
    paths = signed_paths(campaign, 6000)
    srv = ServerProcess(tmp_path / "trackd", pg.dsn, env=FAULT_ENV, workers=2).start()
    try:
        deadline = time.monotonic() + 20
        while len(psutil.Process(srv.proc.pid).children()) < 2:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        journals = list((tmp_path / "trackd" / "journal").iterdir())
        assert len(journals) == 2, "every worker has a journal of its own"
        load = Load("127.0.0.1", srv.port, paths, rate=600, connections=8)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(3)
        await asyncio.to_thread(pg.stop, "immediate")  # so the victim has events on disk only
        await asyncio.sleep(1.5)
        victim = psutil.Process(srv.proc.pid).children()[0]  # type: ignore[union-attr]
        victim.kill()
        await asyncio.sleep(1)
        await asyncio.to_thread(pg.start)
        await asyncio.sleep(2)
        load.stop()
        outcomes = await running
        rows = await settle(pg.dsn, campaign, served(outcomes))
        assert_exactly_once(rows, served(outcomes), len(paths))
    finally:
        srv.stop()
    await assert_verified(pg.dsn)


async def test_starting_while_the_database_is_down(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    """A pod that starts during a database outage serves redirects at once (recording them), is not
    ready until it has reached the database, and then writes everything."""
    campaign = "cold-start"
    paths = signed_paths(campaign, 200)
    await asyncio.to_thread(pg.stop, "immediate")
    srv = trackd(tmp_path, pg).start(wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{srv.base_url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, srv.log()
            await asyncio.sleep(0.05)
        ready = httpx.get(f"{srv.base_url}/readyz")
        assert ready.status_code == 503 and ready.json()["schema_ready"] is False
        outcomes = await Load("127.0.0.1", srv.port, paths, rate=500).run()
        assert {o.status for o in outcomes} <= {200, 302}
        await asyncio.to_thread(pg.start)
        srv.wait_ready(timeout=30)
        rows = await settle(pg.dsn, campaign, served(outcomes))
        assert_exactly_once(rows, served(outcomes), len(paths))
        assert len(rows) == len(paths)
    finally:
        srv.stop()
    await assert_verified(pg.dsn)
