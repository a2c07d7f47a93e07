"""`make bench-fleet`: many pods, one primary. N `trackd serve` processes (their own data and
journal directories, the same signing keys, one worker each, loopback ports) against one
embedded PostgreSQL, all under load at once, and then the same with one process, in the same run.

For each fleet size it drives every process with its own wrk at the same time (the connections
split evenly, so the offered concurrency is the same for every size), and reports:

- combined and per-process requests/s (wrk), and the ratio of the fleet to one process;
- ingest lag: from the end of the load until every event served is a row in `events`, and the
  maximum of each process's `trackd_backlog_oldest_age_seconds` sampled from its `/metrics`;
- PostgreSQL lock waits: `pg_stat_activity` sampled every 50 ms during the load and the catch-up,
  backends waiting on a lock counted by `wait_event`; deadlocks from `pg_stat_database`;
- exactness: rows in `events` == tracked responses served (every process's own count);
- CPU: the trackd processes together against the whole PostgreSQL server.

    .venv/bin/python -m loadtests.bench_fleet                      # 4 processes and 1, 10 s each
    BENCH_FLEET=2 BENCH_DURATION=2 .venv/bin/python -m loadtests.bench_fleet --out /tmp/f.json

Writes docs/bench/fleet.json (BENCH_OUT elsewhere). Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from loadtests import harness, procs, wrk
from loadtests.bench import machine
from loadtests.harness import Child

ROOT = harness.ROOT
LOCK_SAMPLE_S = 0.05
METRICS_SAMPLE_S = 0.25
_OLDEST = re.compile(r"^trackd_backlog_oldest_age_seconds(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)
_LAG = re.compile(r'^trackd_ingest_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+-]+)$', re.M)
_ROWS = re.compile(r"^trackd_backlog_rows(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


@dataclass(frozen=True)
class Options:
    processes: int
    seconds: float
    warmup: float
    tokens: int
    connections: int  # in total, split over the processes
    kind: str
    out: Path


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=int(_env("BENCH_FLEET", "4")), help="trackd processes (N)")
    p.add_argument("--duration", type=float, default=float(_env("BENCH_DURATION", "10")), help="seconds of load")
    p.add_argument("--warmup", type=float, default=float(_env("BENCH_WARMUP", "2")), help="seconds, not recorded")
    p.add_argument("--tokens", type=int, default=int(_env("BENCH_TOKENS", "1000")), help="distinct signed links")
    p.add_argument("--connections", type=int, default=int(_env("BENCH_CONNECTIONS", "48")),
                   help="wrk connections in total, split over the processes")  # fmt: skip
    p.add_argument("--kind", choices=("click", "pixel"), default=_env("BENCH_KIND", "click"))
    p.add_argument("--out", default=_env("BENCH_OUT", str(ROOT / "docs" / "bench" / "fleet.json")))
    a = p.parse_args(argv)
    if a.processes < 1 or a.connections < a.processes:
        p.error("need at least one process and one connection per process")
    return Options(a.processes, a.duration, a.warmup, a.tokens, a.connections, a.kind, Path(a.out))


# -- samplers (run during the load and the catch-up) ------------------------------------------


async def sample_locks(dsn: str, stop: asyncio.Event) -> tuple[Counter[str], int, int]:
    """Backends waiting on a heavyweight lock, every 50 ms: (count by wait_event, samples,
    samples with at least one waiter)."""
    waits: Counter[str] = Counter()
    samples = with_waiter = 0
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT wait_event, count(*) AS n FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() GROUP BY wait_event"
            )
            samples += 1
            with_waiter += bool(rows)
            for row in rows:
                waits[str(row["wait_event"])] += int(row["n"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LOCK_SAMPLE_S)
    finally:
        await conn.close()
    return waits, samples, with_waiter


async def sample_backlog(urls: list[str], stop: asyncio.Event) -> tuple[list[float], list[int]]:
    """The maxima of each process's trackd_backlog_oldest_age_seconds and trackd_backlog_rows
    over the samples (every 0.25 s)."""
    worst = [0.0] * len(urls)
    rows = [0] * len(urls)
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            for i, url in enumerate(urls):
                try:
                    text = (await client.get(url + "/metrics")).text
                except httpx.HTTPError:
                    continue
                for value in _OLDEST.findall(text):
                    worst[i] = max(worst[i], float(value))
                for value in _ROWS.findall(text):
                    rows[i] = max(rows[i], int(float(value)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), METRICS_SAMPLE_S)
    return worst, rows


def lag_buckets(base_url: str) -> dict[float, float]:
    """trackd_ingest_lag_seconds (receipt to commit, per event) as cumulative counts by bound."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return {float(le): float(v) for le, v in _LAG.findall(text)}


def lag_quantile(counts: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q (None without events)."""
    total = counts.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for bound in sorted(counts):
        if counts[bound] >= q * total:
            return bound
    return float("inf")


async def deadlocks(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


# -- one fleet size ---------------------------------------------------------------------------


def start_fleet(pg: Any, work: Path, n: int) -> list[Child]:
    """n processes, each with its own data (and so journal) directory."""
    servers: list[Child] = []
    try:
        for i in range(n):
            data = work / f"fleet{n}-p{i}"
            data.mkdir(parents=True, exist_ok=True)
            servers.append(harness.start_trackd(pg.dsn, data, name=f"trackd-{n}-{i}"))
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


async def _load_all(servers: list[Child], paths: list[str], seconds: float, per_process: int) -> list[wrk.WrkResult]:
    runs = [asyncio.to_thread(wrk.run, s.base_url, paths, seconds=seconds, connections=per_process, threads=1,
                              user_agent=harness.USER_AGENT) for s in servers]  # fmt: skip
    return list(await asyncio.gather(*runs))


async def measure(pg: Any, servers: list[Child], paths: list[str], opts: Options) -> dict[str, Any]:
    n = len(servers)
    per_process = opts.connections // n
    if opts.warmup > 0:  # pools, today's partition, caches: not recorded
        warm_since = time.time() - 0.001
        warm_before = sum(harness.recorded_total(s.base_url) for s in servers)
        await _load_all(servers, paths, opts.warmup, per_process)
        warm_served = sum(harness.recorded_total(s.base_url) for s in servers) - warm_before
        await harness.wait_rows(pg.dsn, warm_since, warm_served, timeout=30)

    since = time.time() - 0.001
    before = [harness.recorded_total(s.base_url) for s in servers]
    lag0 = [lag_buckets(s.base_url) for s in servers]
    deadlocks0 = await deadlocks(pg.dsn)
    cpu0 = [procs.cpu_seconds(s.pid) for s in servers]
    pg_cpu0 = procs.postgres_cpu_seconds(pg.pgdata)
    stop = asyncio.Event()
    locks = asyncio.create_task(sample_locks(pg.dsn, stop))
    backlog = asyncio.create_task(sample_backlog([s.base_url for s in servers], stop))
    started = time.monotonic()
    results = await _load_all(servers, paths, opts.seconds, per_process)
    stopped = time.monotonic()
    served_each = [harness.recorded_total(s.base_url) - b for s, b in zip(servers, before, strict=True)]
    served = sum(served_each)
    rows, _ = await harness.wait_rows(pg.dsn, since, served, timeout=60)
    catch_up = time.monotonic() - stopped
    lag: Counter[float] = Counter()
    for s, b in zip(servers, lag0, strict=True):
        lag.update({le: v - b.get(le, 0.0) for le, v in lag_buckets(s.base_url).items()})
    wall = time.monotonic() - started
    stop.set()
    waits, samples, with_waiter = await locks
    oldest, backlog_rows = await backlog
    trackd_cpu = sum(procs.cpu_seconds(s.pid) - c for s, c in zip(servers, cpu0, strict=True))
    pg_cpu = procs.postgres_cpu_seconds(pg.pgdata) - pg_cpu0
    ok = sum(r.ok for r in results)
    return {
        "processes": n,
        "connections_per_process": per_process,
        "rps": round(sum(r.rps for r in results), 1),
        "rps_per_process": [round(r.rps, 1) for r in results],
        "p99_ms_per_process": [round(r.p99_ms, 3) for r in results],
        "served": served,
        "served_per_process": served_each,
        "wrk_responses_ok": ok,
        "rows": rows,
        "exact": rows == served and 0 <= served - ok <= opts.connections,
        "non_2xx_3xx": sum(r.status_errors for r in results),
        "socket_errors": sum(r.socket_errors for r in results),
        "catch_up_s": round(catch_up, 3),
        # Per event, receipt to commit, every process together (bucket upper bounds).
        "ingest_lag_s_p50": lag_quantile(dict(lag), 0.5),
        "ingest_lag_s_p99": lag_quantile(dict(lag), 0.99),
        "backlog_oldest_age_s_max_per_process": [round(v, 3) for v in oldest],
        "backlog_oldest_age_s_max": round(max(oldest), 3),
        "backlog_rows_max_per_process": backlog_rows,
        "lock_waits": dict(sorted(waits.items())),
        "lock_wait_samples": samples,
        "lock_wait_samples_with_waiter": with_waiter,
        "lock_sample_interval_s": round(wall / max(1, samples), 3),  # asked: 0.05; longer when starved of CPU
        "deadlocks": await deadlocks(pg.dsn) - deadlocks0,
        "cpu_s": {"trackd": round(trackd_cpu, 2), "postgres": round(pg_cpu, 2), "wall_s": round(wall, 2)},
        "cpu_share_postgres": round(pg_cpu / max(1e-9, trackd_cpu + pg_cpu), 3),
        "cpu_s_per_million": {
            "trackd": round(trackd_cpu / max(1, served) * 1e6, 2),
            "postgres": round(pg_cpu / max(1, served) * 1e6, 2),
        },
    }


def report(r: dict[str, Any]) -> str:
    per = ", ".join(f"{v:,.0f}" for v in r["rps_per_process"])
    waits = ", ".join(f"{k} {v}" for k, v in r["lock_waits"].items()) or "none"
    return (f"  N={r['processes']}: {r['rps']:,.0f} req/s combined ({per}); rows {r['rows']} / served {r['served']} "
            f"({'exact' if r['exact'] else 'NOT EXACT'}); caught up {r['catch_up_s']:.2f}s after the load, "
            f"ingest lag p50 <= {r['ingest_lag_s_p50']}s, p99 <= {r['ingest_lag_s_p99']}s, "
            f"oldest backlog at most {r['backlog_oldest_age_s_max']:.2f}s; lock waits {waits} in "
            f"{r['lock_wait_samples_with_waiter']}/{r['lock_wait_samples']} samples; deadlocks {r['deadlocks']}; "
            f"CPU trackd {r['cpu_s']['trackd']:.1f}s, postgres {r['cpu_s']['postgres']:.1f}s "
            f"({r['cpu_share_postgres']:.0%} postgres)")  # fmt: skip


def run(opts: Options, work: Path) -> dict[str, Any]:
    sizes = [opts.processes] + ([1] if opts.processes != 1 else [])
    phases: dict[str, Any] = {}
    pg = harness.start_postgres(work / "pg")
    try:
        paths: list[str] = []
        for n in sizes:
            servers = start_fleet(pg, work, n)
            try:
                if not paths:  # the same signing keys everywhere: signed once, valid on every process
                    links = harness.sign_through_api(servers[0].base_url, opts.tokens)
                    paths = links.click_paths if opts.kind == "click" else links.open_paths
                phases[str(n)] = asyncio.run(measure(pg, servers, paths, opts))
            finally:
                for s in servers:
                    s.stop()
            print(report(phases[str(n)]), flush=True)
    finally:
        pg.stop("fast")
    fleet, one = phases[str(opts.processes)], phases["1"]
    ratio = {
        "rps": round(fleet["rps"] / max(1e-9, one["rps"]), 3),
        "catch_up_s": round(fleet["catch_up_s"] / max(1e-3, one["catch_up_s"]), 3),
        "cpu_s_per_million_postgres": round(
            fleet["cpu_s_per_million"]["postgres"] / max(1e-9, one["cpu_s_per_million"]["postgres"]), 3
        ),
    }
    return {
        "date": dt.date.today().isoformat(),
        "command": command(opts),
        "machine": machine(),
        "kind": opts.kind,
        "duration_s": opts.seconds,
        "connections_total": opts.connections,
        "tokens": opts.tokens,
        "processes": opts.processes,
        "fleet": fleet,
        "one": one,
        f"ratio_{opts.processes}_to_1": ratio,
    }


def command(opts: Options) -> str:
    env = []
    if opts.processes != 4:
        env.append(f"BENCH_FLEET={opts.processes}")
    if opts.seconds != 10:
        env.append(f"BENCH_DURATION={opts.seconds:g}")
    return " ".join([*env, "make bench-fleet"])


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: install the Debian package 'wrk' (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="trackd-bench-fleet-"))
    try:
        data = run(opts, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fleet, ratio = data["fleet"], data[f"ratio_{opts.processes}_to_1"]
    print(f"\n== {opts.processes} processes vs 1 on one PostgreSQL, {data['machine']}: "
          f"{ratio['rps']:.2f}x the requests/s ==")  # fmt: skip
    exact = fleet["exact"] and data["one"]["exact"] and fleet["non_2xx_3xx"] == 0
    print(f"{'PASS' if exact else 'MISS'}: rows == tracked responses served, no non-2xx/3xx")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {opts.out}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
