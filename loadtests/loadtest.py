"""`make loadtest`: trackd + embedded PostgreSQL, the locust scenario headless for a bounded time,
then the verdict: no failed request, p99 under its threshold, and exactly one row in `events` per
successful `open` and `click` (bad tokens record nothing, so the client-side tally decides).

Settings: LOADTEST_USERS (50), LOADTEST_SPAWN_RATE (25), LOADTEST_DURATION (30s),
LOADTEST_P99_MS (threshold for the aggregated p99, see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from loadtests import harness
from loadtests.mix import RECORDED_NAMES

RESULTS = harness.ROOT / "loadtests" / "results"


@dataclass(frozen=True)
class Tally:
    """locust's final statistics of one request name (or of all of them)."""

    requests: int
    failures: int
    response_times: dict[int, int]  # milliseconds (locust rounds them) -> count

    @property
    def successes(self) -> int:
        return self.requests - self.failures

    def percentile_ms(self, q: float) -> float:
        if not self.requests:
            return float("inf")
        seen = 0
        for ms in sorted(self.response_times):
            seen += self.response_times[ms]
            if seen >= q * self.requests:
                return float(ms)
        return float(max(self.response_times))


def read_tallies(path: Path) -> dict[str, Tally]:
    """locust's --json-file by request name, plus 'all'. The JSON is written after the users
    stopped (the CSV is written earlier and misses what finished during --stop-timeout)."""
    tallies: dict[str, Tally] = {}
    merged: Counter[int] = Counter()
    for entry in json.loads(path.read_text()):
        times = {int(k): int(v) for k, v in entry["response_times"].items()}
        tallies[entry["name"]] = Tally(entry["num_requests"], entry["num_failures"], times)
        merged.update(times)
    tallies["all"] = Tally(sum(t.requests for t in tallies.values()), sum(t.failures for t in tallies.values()),
                           dict(merged))  # fmt: skip
    return tallies


def expected_rows(tallies: dict[str, Tally]) -> int:
    return sum(tallies[name].successes for name in RECORDED_NAMES if name in tallies)


def verdict(tallies: dict[str, Tally], rows: int, p99_limit_ms: float) -> list[str]:
    """The problems found; empty when the run passes."""
    total = tallies["all"]
    problems = []
    if total.failures:
        problems.append(f"{total.failures} failed requests (see {RESULTS}/locust_failures.csv)")
    if total.requests == 0:
        problems.append("no requests were made")
    if total.percentile_ms(0.99) > p99_limit_ms:
        problems.append(f"p99 {total.percentile_ms(0.99):.0f} ms is above {p99_limit_ms:.0f} ms")
    if rows != expected_rows(tallies):
        problems.append(f"{rows} rows in events, expected {expected_rows(tallies)} (successful opens + clicks)")
    return problems


def main() -> int:
    users = os.environ.get("LOADTEST_USERS", "50")
    rate = os.environ.get("LOADTEST_SPAWN_RATE", "25")
    duration = os.environ.get("LOADTEST_DURATION", "30s")
    p99_limit = float(os.environ.get("LOADTEST_P99_MS", "50"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="trackd-loadtest-"))
    try:
        with harness.stack(work) as (pg, server):
            env = {**os.environ, "TRACKD_SIGNING_KEYS": harness.SIGNING_KEYS, "PYTHONPATH": str(harness.ROOT)}
            argv = [str(Path(sys.executable).with_name("locust")), "-f", "loadtests/locustfile.py", "--headless",
                    "-u", users, "-r", rate, "-t", duration, "--stop-timeout", "10", "--only-summary",
                    "--csv", str(RESULTS / "locust"), "--json-file", str(RESULTS / "locust"), "--host", server.base_url,
                    "--exit-code-on-error", "0",
                    "--loglevel", "WARNING"]  # fmt: skip
            print(" ".join(argv[1:]), flush=True)
            # A hard cap: locust stops itself after -t, this only guards against a hang.
            subprocess.run(argv, cwd=harness.ROOT, env=env, check=True, timeout=900)
            tallies = read_tallies(RESULTS / "locust.json")
            rows, took = asyncio.run(harness.wait_rows(pg.dsn, 0.0, expected_rows(tallies), timeout=10))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = tallies["all"]
    counts = ", ".join(f"{name} {tallies[name].successes}" for name in ("open", "click", "bad") if name in tallies)
    print(f"locust ({users} users, {duration}): {total.requests} requests, {total.failures} failures, "
          f"p50 {total.percentile_ms(0.5):.0f} ms, p99 {total.percentile_ms(0.99):.0f} ms; {counts}; "
          f"rows in events {rows} (caught up {took:.2f}s after the run)")  # fmt: skip
    problems = verdict(tallies, rows, p99_limit)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if not problems:
        print(f"PASS: no failures, p99 <= {p99_limit:.0f} ms, rows == successful opens + clicks")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
