"""The load-test tooling works: the locust mix and its tokens, the wrk summary parser, the
py-spy summariser, the locust verdict, and a tiny end-to-end run of the benchmark harness.
No timing is asserted anywhere: numbers are for docs/benchmarks.md, not for tests."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loadtests import loadtest, profile, wrk
from loadtests.mix import BAD_SHARE, CLICK_SHARE, OPEN_SHARE, Mix, tamper, zipf_cum_weights
from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing, click_location

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["k1:loadtest-secret-0123456789abcdef"]


@pytest.fixture(scope="module")
def mix() -> Mix:
    return Mix(KeyRing.from_specs(KEYS), recipients=2000, seed=7)


def test_mix_shares_follow_the_scenario(mix: Mix) -> None:
    rng = random.Random(1)
    names = Counter(mix.pick(rng).name for _ in range(20_000))
    assert abs(names["open"] / 20_000 - OPEN_SHARE) < 0.02
    assert abs(names["click"] / 20_000 - CLICK_SHARE) < 0.02
    assert abs(names["bad"] / 20_000 - BAD_SHARE) < 0.01


def test_campaigns_are_zipf_skewed_and_recipients_distinct(mix: Mix) -> None:
    cum = zipf_cum_weights(200)
    assert all(b > a for a, b in itertools.pairwise(cum))
    campaigns = Counter(r.campaign for r in mix.opens)
    top, count = campaigns.most_common(1)[0]
    assert top == "campaign-000"
    assert count > 10 * campaigns.get("campaign-100", 0)  # rank 1 vs rank 101 of 1/k^1.1: ~160x
    assert len({r.path for r in mix.opens}) == len(mix.opens) == 2000


def test_presigned_tokens_verify_with_the_service_keys_and_bad_ones_do_not(mix: Mix) -> None:
    ring = KeyRing.from_specs(KEYS)
    for req in mix.opens[:200]:
        assert ring.verify(req.path[len("/o/") : -len(".gif")], KIND_OPEN) is not None
    for req in mix.clicks[:200]:
        payload = ring.verify(req.path[len("/c/") :], KIND_CLICK)
        assert payload is not None and click_location(payload).decode() == req.location
    for req in mix.bad:
        token = req.path[3:-4] if req.path.startswith("/o/") else req.path[3:]
        assert ring.verify(token, KIND_OPEN) is None and ring.verify(token, KIND_CLICK) is None
        assert req.expect_status == (200 if req.path.startswith("/o/") else 404)


def test_tamper_changes_exactly_one_character() -> None:
    token = KeyRing.from_specs(KEYS).sign_open("c", "r")
    bad = tamper(token, random.Random(3))
    assert len(bad) == len(token) and sum(a != b for a, b in zip(bad, token, strict=True)) == 1


def test_locustfile_imports_under_locust() -> None:
    # In a child: importing locust monkey-patches the standard library with gevent.
    code = "import loadtests.locustfile as f; print(len(f.MIX.opens), f.MailReader.__name__)"
    env = {**os.environ, "TRACKD_SIGNING_KEYS": KEYS[0], "LOADTEST_RECIPIENTS": "50", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["50", "MailReader"]


SAMPLE_WRK = """Running 2s test @ http://127.0.0.1:8000
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
Requests/sec:  12000.00
WRK_JSON {"requests": 24000, "duration_us": 2000000, "bytes": 3000000, "errors": {"connect": 0, "read": 1, \
"write": 0, "status": 3, "timeout": 2}, "latency_us": {"p50": 1500, "p90": 2500, "p99": 8000, "p999": 12000, \
"max": 20000, "mean": 1700.5}}
"""


def test_wrk_summary_is_parsed() -> None:
    r = wrk.parse(SAMPLE_WRK)
    assert (r.requests, r.seconds, r.status_errors, r.socket_errors, r.ok) == (24000, 2.0, 3, 3, 23997)
    assert (r.rps, r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms) == (12000.0, 1.5, 8.0, 12.0, 20.0)
    with pytest.raises(ValueError):
        wrk.parse("Requests/sec: 1\n")


def test_py_spy_collapsed_stacks_become_a_table() -> None:
    collapsed = (
        'process 1:"python";<module> (app/cli.py:10);run (loop.py:5);click (app/hotpath.py:120) 30\n'
        'process 1:"python";<module> (app/cli.py:10);run (loop.py:5);row (app/events.py:106) 70\n'
    )
    total, rows = profile.top_functions(collapsed)
    assert total == 100
    assert rows[0] == ("row (events.py)", 70.0, 70.0)
    assert ("click (hotpath.py)", 30.0, 30.0) in rows
    assert "| `row (events.py)` | 70.0 | 70.0 |" in profile.table(collapsed)


def _tallies(fails: int = 0, slow: int = 0, opens: int = 70, clicks: int = 25) -> dict[str, loadtest.Tally]:
    t = {
        "open": loadtest.Tally(opens, fails, {1: opens - slow, 80: slow}),
        "click": loadtest.Tally(clicks, 0, {2: clicks}),
        "bad": loadtest.Tally(5, 0, {1: 5}),
    }
    t["all"] = loadtest.Tally(opens + clicks + 5, fails, {1: opens - slow + 5, 2: clicks, 80: slow})
    return t


def test_loadtest_verdict_counts_only_successful_opens_and_clicks() -> None:
    assert loadtest.expected_rows(_tallies(fails=2)) == 93
    assert loadtest.verdict(_tallies(), rows=95, p99_limit_ms=50) == []
    assert loadtest.verdict(_tallies(), rows=100, p99_limit_ms=50)  # bad tokens must not be recorded
    assert loadtest.verdict(_tallies(fails=1), rows=94, p99_limit_ms=50)
    assert loadtest.verdict(_tallies(slow=5), rows=95, p99_limit_ms=50)  # 5 % at 80 ms: p99 is 80


def test_locust_json_is_read_by_name(tmp_path: Path) -> None:
    entries = [{"name": "open", "num_requests": 3, "num_failures": 1, "response_times": {"1": 2, "7": 1}},
               {"name": "bad", "num_requests": 1, "num_failures": 0, "response_times": {"3": 1}}]  # fmt: skip
    (tmp_path / "l.json").write_text(json.dumps(entries))
    t = loadtest.read_tallies(tmp_path / "l.json")
    assert (t["open"].successes, t["all"].requests, t["all"].response_times) == (2, 4, {1: 2, 7: 1, 3: 1})
    assert (t["all"].percentile_ms(0.5), t["all"].percentile_ms(0.99)) == (1.0, 7.0)
    assert loadtest.expected_rows(t) == 2


@pytest.mark.e2e
def test_bench_harness_end_to_end(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is missing under CI: `make test` installs the Debian package 'wrk'")
        pytest.skip("wrk (Debian package 'wrk') is not installed; `make test` installs it as root")
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "loadtests.bench", "--duration", "2", "--runs", "1", "--tokens", "20",
            "--connections", "8", "--writer-events", "5000", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    for kind in ("click", "pixel"):
        s = data[kind]
        for key in (
            "rps",
            "bare_rps",
            "ratio",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "cpu_s_per_million",
            "server_cpu_s_per_million",
            "bare_cpu_s_per_million",
            "busy",
            "bare_busy",
            "rss_mb",
        ):
            assert isinstance(s[key], float) and s[key] > 0, (kind, key, s[key])
        assert s["non_2xx_3xx"] == 0
        assert s["rows"] == s["served"] > 0
        assert 0 <= s["served"] - s["wrk_responses_ok"] <= 8  # requests in flight when wrk stopped
    assert data["writer"]["events_per_s"] > 0 and data["writer"]["replay_inserted"] == 0
    assert data["connections"] == 8 and data["p99_target_ms"] == 10.0 and data["command"] == "make bench"


@pytest.mark.e2e
def test_bench_fleet_two_processes_on_one_postgres(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is missing under CI: `make test` installs the Debian package 'wrk'")
        pytest.skip("wrk (Debian package 'wrk') is not installed; `make test` installs it as root")
    out = tmp_path / "fleet.json"
    argv = [sys.executable, "-m", "loadtests.bench_fleet", "--processes", "2", "--duration", "2", "--warmup", "0",
            "--tokens", "20", "--connections", "2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["processes"] == 2 and data["fleet"]["processes"] == 2 and data["one"]["processes"] == 1
    assert data["ratio_2_to_1"]["rps"] > 0
    for phase in ("fleet", "one"):
        r = data[phase]
        assert len(r["rps_per_process"]) == len(r["served_per_process"]) == r["processes"]
        assert all(v > 0 for v in r["rps_per_process"]) and r["rps"] > 0
        assert r["rows"] == r["served"] > 0 and r["exact"] is True  # every event served is a row
        assert 0 <= r["served"] - r["wrk_responses_ok"] <= 2  # requests in flight when wrk stopped
        assert r["non_2xx_3xx"] == 0 and r["deadlocks"] == 0
        assert r["catch_up_s"] >= 0 and r["lock_wait_samples"] > 0 and isinstance(r["lock_waits"], dict)
        assert r["ingest_lag_s_p99"] is not None and len(r["backlog_oldest_age_s_max_per_process"]) == r["processes"]
        assert r["cpu_s"]["trackd"] > 0 and r["cpu_s"]["postgres"] > 0
