"""`make bench-ab`: the hot path of two trees side by side (A/B), with the bare app as the yardstick.

BENCH_AB_OTHER=/path/to/another/checkout (a `git worktree add --detach ../old <commit>`) is
served with this tree's interpreter and dependencies, next to this tree, on one PostgreSQL;
wrk drives bare, other and this tree in turn, for clicks and pixels, several rounds. What it
reports is the server CPU per request (psutil, user+system of the server process and its
threads) and req/s, each as a ratio to the bare app's run of the same round: on a noisy 2-core
machine a run's absolute figures move by tens of per cent, its ratio to the run next to it much
less. The medians over the rounds go to stdout and BENCH_OUT (JSON).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from loadtests import harness, wrk
from loadtests.harness import Child


@dataclass(frozen=True)
class Run:
    rps: float
    cpu_us: float  # server CPU per answered request


def _measure(server: Child, paths: list[str], seconds: float) -> Run:
    proc = psutil.Process(server.pid)
    before = proc.cpu_times()
    result = wrk.run(server.base_url, paths, seconds=seconds, connections=50, threads=2,
                     user_agent=harness.USER_AGENT)  # fmt: skip
    after = proc.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return Run(result.rps, cpu * 1e6 / max(1, result.ok))


def main() -> int:
    other_root = Path(os.environ["BENCH_AB_OTHER"]).resolve()
    seconds = float(os.environ.get("BENCH_DURATION", "5"))
    rounds = int(os.environ.get("BENCH_RUNS", "3"))
    out = os.environ.get("BENCH_OUT")
    with tempfile.TemporaryDirectory(prefix="trackd-ab-") as tmp:
        work = Path(tmp)
        with harness.stack(work / "this") as (pg, this):
            (work / "other").mkdir()
            other = harness.start_trackd(pg.dsn, work / "other", root=other_root, name="other")
            bare = harness.start_bare(work)
            try:
                links = harness.sign_through_api(this.base_url, 1000)
                results: dict[str, dict[str, list[float]]] = {}
                for kind, paths in (("click", links.click_paths), ("pixel", links.open_paths)):
                    for _ in range(rounds):
                        b = _measure(bare, paths, seconds)
                        for name, server in (("other", other), ("this", this)):
                            r = _measure(server, paths, seconds)
                            row = results.setdefault(f"{kind}/{name}", {"rps_ratio": [], "cpu_ratio": [], "cpu_us": []})
                            row["rps_ratio"].append(r.rps / b.rps)
                            row["cpu_ratio"].append(r.cpu_us / b.cpu_us)
                            row["cpu_us"].append(r.cpu_us)
            finally:
                bare.stop()
                other.stop()
    summary = {key: {k: round(statistics.median(v), 3) for k, v in row.items()} for key, row in results.items()}
    for key, row in summary.items():
        print(f"{key:12s} req/s ratio to bare {row['rps_ratio']:.2f}  CPU per request {row['cpu_us']:.1f} µs "
              f"({row['cpu_ratio']:.2f}x bare)")  # fmt: skip
    if out:
        Path(out).write_text(json.dumps({"other": str(other_root), "rounds": rounds, "seconds": seconds,
                                         "results": summary}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
