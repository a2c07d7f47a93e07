"""`trackd sizing`'s arithmetic: zone loss, min below max, the database figures and warnings, bad
input; and the one constant it takes from PostgreSQL itself (bytes per event), measured here."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from app import sizing
from app.copyrows import RowEncoder
from app.db import create_pool, migrate
from app.journal import Chunk, Journal
from app.metrics import Metrics
from app.settings import FsyncPolicy, Settings
from app.writer import Writer
from loadtests.bench_writer import hot_rows
from tests.test_deploy import BENCH, bench

ROOT = Path(__file__).resolve().parent.parent


def survivors(pods: int, zones: int) -> int:
    """Pods left after losing the fullest zone of an even (max skew 1) spread."""
    return pods - math.ceil(pods / zones)


# --- zone loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("zones", [2, 3, 4, 5])
def test_zone_spread_is_the_fewest_pods_that_survive_a_zone(zones: int) -> None:
    for needed in range(0, 60):
        pods = sizing.zone_spread(needed, zones)
        assert pods >= zones  # one per zone at least
        assert survivors(pods, zones) >= needed
        assert pods == zones or survivors(pods - 1, zones) < needed, (needed, zones, pods)


def test_min_replicas_carry_the_peak_with_a_zone_lost() -> None:
    b = bench()  # capacity 20 000 rps (clicks), target 12 000 at headroom 0.6
    p = sizing.plan(b, peak_rps=50_000)
    # 50 000 / 20 000 -> 3 pods must survive; 3 x 3/2 = 4.5 -> 5 over 3 zones (2, 2, 1).
    assert p.min_replicas == 5 and survivors(5, 3) * p.capacity_rps >= 50_000
    # Max: 50 000 / 12 000 -> 5 at target with a zone lost -> 8; min + 3 = 8.
    assert p.max_replicas == 8 and survivors(8, 3) * p.target_rps_per_pod >= 50_000
    two_zones = sizing.plan(b, peak_rps=50_000, zones=2)
    assert two_zones.min_replicas == 6 and survivors(6, 2) * two_zones.capacity_rps >= 50_000


@pytest.mark.parametrize("zones", [2, 3, 5])
@pytest.mark.parametrize("peak", [1, 999, 12_000, 20_001, 50_000, 123_457, 1e6])
@pytest.mark.parametrize("headroom", [0.05, 0.6, 1.0])
def test_min_is_below_max_and_both_survive_a_zone(zones: int, peak: float, headroom: float) -> None:
    p = sizing.plan(bench(), peak_rps=peak, headroom=headroom, zones=zones)
    assert zones <= p.min_replicas < p.max_replicas
    assert survivors(p.min_replicas, zones) * p.capacity_rps >= peak
    assert survivors(p.max_replicas, zones) * p.target_rps_per_pod >= peak


def test_min_is_below_max_at_the_default_peak_of_the_committed_benchmark() -> None:
    """`make sizing`'s defaults on docs/bench/latest.json: min used to equal max (3, 3)."""
    p = sizing.plan(sizing.load_bench(ROOT / sizing.DEFAULT_BENCH), peak_rps=50_000, headroom=0.6)
    assert (p.min_replicas, p.max_replicas) == (3, 6)


def test_min_replicas_is_a_floor_only() -> None:
    assert sizing.plan(bench(), peak_rps=1000, min_replicas=7).min_replicas == 7
    assert sizing.plan(bench(), peak_rps=1000, min_replicas=2).min_replicas == 3  # still one per zone


def test_api_load_adds_pods_by_its_cpu() -> None:
    # 1000 API requests/s x 500 us = 0.5 cores = 10 000 tracked requests' worth at 50 us each.
    p = sizing.plan(bench(), peak_rps=50_000, api_rps=1000, api_cpu_us_per_request=500)
    assert p.needed_rps == pytest.approx(60_000)
    assert p.min_replicas == sizing.zone_spread(3, 3)  # 60 000 / 20 000
    assert p.max_replicas == sizing.zone_spread(5, 3)  # 60 000 / 12 000
    without = sizing.plan(bench(), peak_rps=50_000)
    assert p.target_rps_per_pod == without.target_rps_per_pod  # the trigger counts interactions only
    assert p.db_rows_per_s == 50_000  # the API writes no rows
    assert "api load" in sizing.report(p) and "an estimate" in sizing.report(p)
    assert "api load" not in sizing.report(without)


# --- database figures ------------------------------------------------------------------------


def test_events_bytes_wal_and_connections() -> None:
    p = sizing.plan(bench(), peak_rps=10_000, bytes_per_event=400, wal_bytes_per_row=500, db_pool_max=4)
    assert p.events_per_day == 10_000 * 86_400
    assert p.bytes_per_day == 10_000 * 86_400 * 400
    assert p.wal_mb_per_s == pytest.approx(5.0)
    assert (p.db_connections_min, p.db_connections_max) == (p.min_replicas * 4, p.max_replicas * 4)
    text = sizing.report(p)
    for needle in ("events per day", "bytes per day", "345.6 GB", "5.0 MB/s", "db connections", "TRACKD_DB_POOL_MAX 4"):
        assert needle in text, needle


def test_db_pool_default_is_the_settings_default() -> None:
    assert sizing.DEFAULT_DB_POOL_MAX == Settings.model_fields["db_pool_max"].default


# --- warnings --------------------------------------------------------------------------------


def one_warning(p: sizing.Plan, needle: str) -> str:
    found = [w for w in p.warnings if needle in w]
    assert len(found) == 1, p.warnings
    assert "\n" not in found[0]
    return found[0]


def test_warns_when_the_peak_is_above_what_one_primary_took() -> None:
    # The fixture's writer: 30 000 events/s.
    assert not [w for w in sizing.plan(bench(), peak_rps=30_000).warnings if "one primary" in w]
    warning = one_warning(sizing.plan(bench(), peak_rps=30_001), "one primary")
    assert "30,000 events/s" in warning and "docs/benchmarks.md" in warning
    text = sizing.report(sizing.plan(bench(), peak_rps=40_000))
    assert sum(line.startswith("warning: ") and "one primary" in line for line in text.splitlines()) == 1


def test_warns_when_connections_exceed_postgresql_or_the_pgbouncer_pool() -> None:
    # 8 pods at max x 4 = 32 connections.
    p = sizing.plan(bench(), peak_rps=50_000)
    assert p.max_replicas == 8 and not [w for w in p.warnings if "connections" in w]
    one_warning(sizing.plan(bench(), peak_rps=50_000, pg_max_connections=30), "PgBouncer")
    quiet = sizing.plan(bench(), peak_rps=50_000, pg_max_connections=30, pgbouncer_pool=20)
    assert not [w for w in quiet.warnings if "connections" in w or "PgBouncer" in w]
    assert "through PgBouncer onto 20 server connections" in sizing.report(quiet)
    one_warning(sizing.plan(bench(), peak_rps=50_000, pgbouncer_pool=4), "queue")
    one_warning(sizing.plan(bench(), peak_rps=50_000, pgbouncer_pool=200), "usable")


# --- bad input -------------------------------------------------------------------------------


def run_sizing(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "sizing", "--bench", str(path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--zones", "1"], "--zones"),
        (["--zones", "0"], "--zones"),
        (["--min-replicas", "1"], "--min-replicas"),
        (["--api-rps", "-1"], "--api-rps"),
        (["--api-rps", "nan"], "--api-rps"),
        (["--api-cpu-us", "0"], "--api-cpu-us"),
        (["--bytes-per-event", "0"], "--bytes-per-event"),
        (["--db-pool-max", "0"], "--db-pool-max"),
        (["--pgbouncer-pool", "0"], "--pgbouncer-pool"),
        (["--pg-max-connections", "3"], "--pg-max-connections"),
        (["--wal-bytes-per-row", "0"], "--wal-bytes-per-row"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(args: list[str], flag: str, tmp_path: Path) -> None:
    result = run_sizing("--peak", "1000", *args, tmp_path=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("trackd sizing: ") and flag in line, line


def test_sizing_prints_the_new_figures(tmp_path: Path) -> None:
    result = run_sizing("--peak", "50000", "--api-rps", "100", "--pgbouncer-pool", "40", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for needle in ("replicas              min 5, max 8", "zones                 3", "events per day", "bytes per day",
                   "postgresql wal", "db connections", "api load", "warning: the peak"):  # fmt: skip
        assert needle in result.stdout, needle


# --- bytes per event, measured ---------------------------------------------------------------


async def _bytes_per_event(dsn: str, events: int, *, clicks_only: bool, wal: list[float] | None = None) -> float:
    settings = Settings(database_url=dsn)
    pool = await create_pool(settings, dsn)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        journal = Journal(Path("/nonexistent"), max_bytes=1, segment_bytes=1, fsync=FsyncPolicy.never,
                          fsync_interval_s=1)  # fmt: skip
        writer = Writer(settings, journal, pool, Metrics())
        # hot_rows makes 3 opens to 1 click, in that order (every fourth row is a click).
        made = hot_rows(RowEncoder(settings), events * 4 if clicks_only else events)
        rows = made[3::4] if clicks_only else made
        async with pool.acquire() as conn:
            await writer._write(conn, [Chunk(1, us, us, row) for row, us in rows[:1]], [], direct=True)  # the partition
            lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
            for at in range(1, events, 5000):  # TRACKD_BATCH_MAX_ROWS' default
                batch = [Chunk(1, us, us, row) for row, us in rows[at : at + 5000]]
                await writer._write(conn, batch, [], direct=True)
            if wal is not None:
                written = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn)
                wal.append(float(written) / (events - 1))
            count = await conn.fetchval("SELECT count(*) FROM events")
            size = await conn.fetchval(
                "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('events') WHERE isleaf"
            )
        assert count == events
        return float(size) / count
    finally:
        await asyncio.wait_for(pool.close(), 10)


def test_bytes_per_event_is_what_postgresql_stores(fresh_database_url: str) -> None:
    """Where DEFAULT_BYTES_PER_EVENT comes from: click rows as the hot path makes them (a 113-byte
    user agent, a 40-byte URL), written by the writer, measured as the partitions' total size
    (heap, its indexes) over the row count. Opens are smaller (no URL): a mix costs less. And
    where DEFAULT_WAL_BYTES_PER_ROW comes from: the WAL the same writes make, the rollups kept by
    the trigger included (hot_rows' 1,000 recipients: mostly repeat engagement)."""
    wal: list[float] = []
    clicks = asyncio.run(_bytes_per_event(fresh_database_url, 20_000, clicks_only=True, wal=wal))
    print(f"bytes per click event: {clicks:.1f}; WAL per event: {wal[0]:.1f}")
    assert clicks == pytest.approx(sizing.DEFAULT_BYTES_PER_EVENT, rel=0.15), clicks
    assert wal[0] == pytest.approx(sizing.DEFAULT_WAL_BYTES_PER_ROW, rel=0.25), wal[0]


def test_a_mix_of_opens_and_clicks_stores_less_than_the_constant(fresh_database_url: str) -> None:
    mix = asyncio.run(_bytes_per_event(fresh_database_url, 20_000, clicks_only=False))
    print(f"bytes per event, 3 opens to 1 click: {mix:.1f}")
    assert mix < sizing.DEFAULT_BYTES_PER_EVENT, mix
