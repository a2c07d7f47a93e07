"""Per-second figures for SREs and analysts: Prometheus series that never grow with traffic,
right totals across worker processes, and the per-second API over `interactions_per_second`."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.loadclient import RING, Load, served, signed_paths
from tests.support import API_KEY, ServerProcess, metric, postgres_dir, wait_for_count

pytestmark = pytest.mark.e2e


def series(base_url: str) -> set[str]:
    text = httpx.get(f"{base_url}/metrics").text
    return {line.rpartition(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


async def test_ten_thousand_distinct_tokens_add_no_series(server: ServerProcess) -> None:
    warm = [*signed_paths("series-warm", 20), "/c/not-a-token-xxxxxxxxxxxxxxxxxxxxxx", "/o/garbage.gif", "/nope/1"]
    await Load("127.0.0.1", server.port, warm, rate=1000).run()
    before = series(server.base_url)
    paths = []
    for i in range(10_000):
        campaign = f"series-{i % 97}"
        if i % 4 == 0:
            paths.append(f"/c/{RING.sign_click(campaign, f'r{i}', i % 50, f'https://example.com/u/{i}?q={i}')}")
        elif i % 4 == 1:
            paths.append(f"/o/{RING.sign_open(campaign, f'r{i}')}.gif")
        elif i % 4 == 2:
            paths.append(f"/c/garbage-token-{i:06d}-{uuid.uuid4().hex}")
        else:
            paths.append(f"/unknown/path/{i}")
    outcomes = await Load("127.0.0.1", server.port, paths, rate=20_000, connections=8).run()
    assert len(outcomes) == 10_000
    after = series(server.base_url)
    assert after == before, sorted(after - before)[:10]
    text = " ".join(after)
    for leaked in ("series-", "example.com", "garbage", "r9999", "unknown"):
        assert leaked not in text


async def test_hot_path_latency_and_outcomes_are_counted(tmp_path: Path, database_url: str) -> None:
    with ServerProcess(tmp_path, database_url).start() as srv:
        clicks = [f"/c/{RING.sign_click('lat', f'r{i}', 0, 'https://example.com/')}" for i in range(30)]
        opens = [f"/o/{RING.sign_open('lat', f'r{i}')}.gif" for i in range(20)]
        await Load("127.0.0.1", srv.port, clicks + opens + ["/c/bad-token-xxxxxxxxxxxxxxxxxxxxxx"], rate=500).run()
        base = srv.base_url
        assert metric(base, "trackd_request_duration_seconds_count", {"kind": "click"}) == 31
        assert metric(base, "trackd_request_duration_seconds_count", {"kind": "open"}) == 20
        assert metric(base, "trackd_interactions_total", {"kind": "click", "outcome": "recorded"}) == 30
        assert metric(base, "trackd_interactions_total", {"kind": "click", "outcome": "bad_token"}) == 1
        # The load client's user agent is no person's browser... but nothing says it is a machine:
        assert metric(base, "trackd_interactions_total", {"outcome": "recorded", "machine": "false"}) == 50
        httpx.head(base + clicks[0])
        assert metric(base, "trackd_interactions_total", {"kind": "click", "machine": "true"}) == 1
        assert metric(base, "trackd_hot_path_errors_total") == 0
        assert metric(base, "trackd_ready") == 1
        assert metric(base, "trackd_build_info") == 1


async def test_two_workers_report_the_totals_of_both(database_url: str) -> None:
    with postgres_dir() as data_dir:  # outside pytest's tmp: the workers' PROMETHEUS dir lives here
        srv = ServerProcess(data_dir, database_url, workers=2).start()
        try:
            paths = signed_paths("two-workers", 1200)
            # Fresh connections, so that the kernel spreads them over both workers' accept queues.
            for start in range(0, len(paths), 100):
                await Load("127.0.0.1", srv.port, paths[start : start + 100], rate=5000, connections=10).run()
            pids = {p.name.split("_")[-1] for p in (data_dir / "prometheus").glob("counter_*.db")}
            assert len(pids) == 2, "both workers must have served (and counted) requests"
            # Each worker hands its hot-path counts over at every scrape it answers and every second.
            deadline = time.monotonic() + 5
            while metric(srv.base_url, "trackd_interactions_total", {"outcome": "recorded"}) != 1200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            for _ in range(10):  # any worker may answer the scrape: every one must see the total
                assert metric(srv.base_url, "trackd_interactions_total", {"outcome": "recorded"}) == 1200
                assert metric(srv.base_url, "trackd_request_duration_seconds_count") == 1200
        finally:
            srv.stop()


async def test_per_second_series_fills_empty_seconds(api: httpx.Client, server: ServerProcess,
                                                     db: asyncpg.Connection) -> None:  # fmt: skip
    campaign = f"ps-{uuid.uuid4()}"
    paths = signed_paths(campaign, 40, click_share=0.25)
    started = int(time.time())
    outcomes = await Load("127.0.0.1", server.port, paths, rate=1000).run()
    assert len(served(outcomes)) == 40
    await wait_for_count(db, "SELECT coalesce(sum(events), 0)::int FROM interactions_per_second WHERE campaign_id = $1",
                         campaign, expected=40)  # fmt: skip
    body = api.get("/v1/interactions/per-second",
                   params={"campaign_id": campaign, "since": started - 5, "until": started + 5}).json()  # fmt: skip
    seconds = [p["second"] for p in body["series"]]
    assert seconds == list(range(started - 5, started + 6))  # every second, zeros included
    assert sum(p["clicks"] for p in body["series"]) == 10
    assert sum(p["opens"] for p in body["series"]) == 30
    assert sum(p["machine_opens"] + p["machine_clicks"] for p in body["series"]) == 0
    assert body["series"][0]["opens"] == 0 and body["series"][0]["max_lag_ms"] == 0
    everything = api.get("/v1/interactions/per-second", params={"since": started - 5, "until": started + 5}).json()
    assert sum(p["opens"] + p["clicks"] for p in everything["series"]) >= 40
    default = api.get("/v1/interactions/per-second").json()
    assert len(default["series"]) == 900


@pytest.mark.parametrize(
    "params",
    [
        {"since": 1000, "until": 1000 + 3600},
        {"since": 2000, "until": 1000},
        {"since": "yesterday"},
        {"until": -5},
        {"campaign_id": "x" * 300},
    ],
)
def test_per_second_refuses_bad_ranges(api: httpx.Client, params: dict[str, object]) -> None:
    response = api.get("/v1/interactions/per-second", params=params)
    assert response.status_code == 422, response.text
    assert "error" in response.json()


def test_per_second_and_status_need_a_key(server: ServerProcess) -> None:
    for path in ("/v1/interactions/per-second", "/v1/status", "/v1/fleet"):
        assert httpx.get(server.base_url + path).status_code == 401


def test_status_reports_backlog_and_writer(api: httpx.Client) -> None:
    body = api.get("/v1/status").json()
    assert body["ready"] is True and body["writer"]["state"] == "running"
    assert set(body["backlog"]) == {"rows", "bytes", "oldest_pending_age_s", "adopted_journals"}
    assert body["journal"]["max_bytes"] > 0 and body["journal"]["full"] is False
    assert body["instance"]["pid"] > 0


def test_api_is_instrumented_with_route_templates(api: httpx.Client, server: ServerProcess) -> None:
    for i in range(3):
        api.get(f"/v1/campaigns/templ-{i}/stats")
    assert metric(server.base_url, "trackd_api_http_requests_total",
                  {"handler": "/v1/campaigns/{campaign_id}/stats"}) >= 3  # fmt: skip
    assert "templ-1" not in httpx.get(f"{server.base_url}/metrics").text
    assert API_KEY not in httpx.get(f"{server.base_url}/metrics").text


def test_the_dashboards_and_alerts_contract_is_what_the_service_exports(api: httpx.Client,
                                                                         server: ServerProcess) -> None:  # fmt: skip
    """k8s/observability is written against a metric contract (tests/test_observability.py);
    the running service must export every name in it, with the labels the queries use."""
    from tests.test_observability import KNOWN_METRICS

    api.get("/v1/status")  # the API's own histograms appear once it has answered something
    text = httpx.get(f"{server.base_url}/metrics").text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    # `up` is Prometheus's own; write errors are labelled by exception class, so there is no
    # series before the first error.
    expected = KNOWN_METRICS - {"up", "trackd_write_errors_total"}
    assert expected <= exported, sorted(expected - exported)
    assert 'machine="true"' in text and 'machine="false"' in text
