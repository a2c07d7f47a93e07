"""`make bench-hostile`: clicks side by side with and without hostile clients on the same server.

One embedded PostgreSQL and one `trackd serve` with its default limits. Each pair of runs drives
clicks with wrk for BENCH_DURATION seconds, first alone, then while `loadtests.attackers` (a
process of its own) runs 4 pipelining clients that never read, 1,000 slowloris connections and
one 128 MB request stream. Reports click p99 and the server's RSS (sampled through each run, the
peak) for both, and writes docs/bench/hostile.json.

Targets (issue 11): p99 under attack at most twice the p99 without; RSS under 200 MB.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests import harness, procs, wrk

ROOT = harness.ROOT
P99_RATIO_TARGET = 2.0
RSS_TARGET_MB = 200.0


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread and keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, procs.rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, procs.rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _hot_path_errors(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("trackd_hot_path_errors_total"))  # fmt: skip


def clicks(server: harness.Child, paths: list[str], seconds: float) -> tuple[wrk.WrkResult, float]:
    with PeakRss(server.pid) as rss:
        result = wrk.run(server.base_url, paths, seconds=seconds, connections=50, threads=2,
                         user_agent=harness.USER_AGENT)  # fmt: skip
    return result, rss.peak


def attacked(server: harness.Child, paths: list[str], seconds: float) -> tuple[wrk.WrkResult, float, dict[str, Any]]:
    # The attackers start first and run a little longer than the load, so every click of the run
    # is measured under attack (slowloris connections are open, the pipeliners are blocked).
    argv = [sys.executable, "-m", "loadtests.attackers", "--port", str(server.port),
            "--token-path", paths[0], "--seconds", str(seconds + 4)]  # fmt: skip
    attack = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        result, peak = clicks(server, paths, seconds)
        out, _ = attack.communicate(timeout=seconds + 60)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
    line = next((x for x in out.splitlines() if x.startswith("ATTACK_JSON ")), "ATTACK_JSON {}")
    return result, peak, json.loads(line.split(" ", 1)[1])


def main() -> int:
    seconds = float(os.environ.get("BENCH_DURATION", "8"))
    runs = int(os.environ.get("BENCH_RUNS", "2"))
    with tempfile.TemporaryDirectory(prefix="trackd-hostile-") as tmp, harness.stack(Path(tmp)) as (_pg, server):
        paths = harness.sign_through_api(server.base_url, 1000).click_paths
        errors0 = _hot_path_errors(server.base_url)
        pairs: list[dict[str, Any]] = []
        for i in range(runs):
            calm, calm_rss = clicks(server, paths, seconds)
            hit, hit_rss, tally = attacked(server, paths, seconds)
            pairs.append({"p99_ms": calm.p99_ms, "rps": round(calm.rps, 1), "rss_mb": round(calm_rss, 1),
                          "attack_p99_ms": hit.p99_ms, "attack_rps": round(hit.rps, 1),
                          "attack_rss_mb": round(hit_rss, 1), "attack_socket_errors": hit.socket_errors,
                          "attack_status_errors": hit.status_errors, "attackers": tally})  # fmt: skip
            print(f"  pair {i + 1}/{runs}: alone p99 {calm.p99_ms:.2f} ms {calm.rps:,.0f} req/s RSS {calm_rss:.0f} MB; "
                  f"under attack p99 {hit.p99_ms:.2f} ms {hit.rps:,.0f} req/s RSS {hit_rss:.0f} MB "
                  f"(errors {hit.socket_errors}+{hit.status_errors}); attackers {tally}", flush=True)  # fmt: skip
        errors = _hot_path_errors(server.base_url) - errors0
        rss_after = procs.rss_mb(server.pid)
    # A run under attack in which wrk got no answer at all has no p99: it failed outright.
    ratio = statistics.median(p["attack_p99_ms"] / p["p99_ms"] if p["attack_rps"] else float("inf") for p in pairs)
    peak = max(p["attack_rss_mb"] for p in pairs)
    data = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "make bench-hostile",
        "seconds": seconds,
        "p99_ms": statistics.median(p["p99_ms"] for p in pairs),
        "attack_p99_ms": statistics.median(p["attack_p99_ms"] for p in pairs),
        "p99_ratio": round(ratio, 3) if ratio != float("inf") else None,
        "rss_mb_peak_under_attack": peak,
        "rss_mb_after": round(rss_after, 1),
        "hot_path_errors": errors,
        "pairs": pairs,
    }
    out = Path(os.environ.get("BENCH_OUT") or ROOT / "docs" / "bench" / "hostile.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    ok = ratio <= P99_RATIO_TARGET and peak < RSS_TARGET_MB and errors == 0
    print(f"\n== bench-hostile: click p99 {data['p99_ms']:.2f} ms alone, {data['attack_p99_ms']:.2f} ms under attack "
          f"({ratio:.2f}x, target <= {P99_RATIO_TARGET}x); peak RSS under attack {peak:.0f} MB "
          f"(target < {RSS_TARGET_MB:.0f}); hot-path errors {errors:.0f}: {'OK' if ok else 'MISSED'} ==")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
