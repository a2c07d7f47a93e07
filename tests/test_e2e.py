"""End to end against a real uvicorn server process and a real PostgreSQL: sign through the API,
click and open, find the rows, count them in the stats."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from tests.support import API_KEY, ServerProcess, metric, running, wait_for_count

pytestmark = pytest.mark.e2e


def sign(api: httpx.Client, campaign: str, recipient: str, links: list[str]) -> dict:
    response = api.post("/v1/tracking-urls", json={"campaign_id": campaign, "recipient_id": recipient, "links": links})
    assert response.status_code == 200, response.text
    return response.json()


def path_of(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


async def test_click_redirects_records_and_counts(api: httpx.Client, client: httpx.Client,
                                                  db: asyncpg.Connection) -> None:  # fmt: skip
    campaign = f"camp-{uuid.uuid4()}"
    links = ["https://shop.example.com/sale?utm_source=mail&x=%2B1+2", "https://example.org/b"]
    urls = sign(api, campaign, "alice@example.com", links)
    assert urls["open_url"].startswith("http://127.0.0.1:") and urls["open_url"].endswith(".gif")
    assert len(urls["click_urls"]) == 2

    started = time.monotonic()
    response = client.get(path_of(urls["click_urls"][0]), headers={"User-Agent": "Mozilla/5.0 (X11) Firefox/120"})
    assert response.status_code == 302
    assert response.headers["location"] == links[0]
    assert response.headers["cache-control"] == "no-store"

    await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=1, timeout=1.0)
    assert time.monotonic() - started < 1.0
    row = await db.fetchrow("SELECT * FROM events WHERE campaign_id = $1", campaign)
    assert row["kind"] == "click" and row["link_index"] == 0 and row["url"] == links[0]
    assert row["recipient_id"] == "alice@example.com"
    assert row["is_machine"] is False and row["machine_reason"] is None
    assert row["user_agent"] == "Mozilla/5.0 (X11) Firefox/120"
    assert str(row["ip"]) == "127.0.0.0/24"  # anonymised by default
    assert isinstance(row["id"], uuid.UUID) and row["id"].version == 7

    stats = api.get(f"/v1/campaigns/{campaign}/stats").json()
    assert stats["campaign_id"] == campaign
    assert (stats["opens"], stats["unique_opens"], stats["clicks"], stats["unique_clicks"]) == (0, 0, 1, 1)


async def test_stats_count_opens_clicks_and_uniques(api: httpx.Client, client: httpx.Client,
                                                    db: asyncpg.Connection) -> None:  # fmt: skip
    campaign = f"camp-{uuid.uuid4()}"
    a = sign(api, campaign, "a", ["https://example.com/1", "https://example.com/2"])
    b = sign(api, campaign, "b", ["https://example.com/1"])
    for url in (a["open_url"], a["open_url"], b["open_url"]):
        assert client.get(path_of(url)).status_code == 200
    for url in (*a["click_urls"], a["click_urls"][0], b["click_urls"][0]):
        assert client.get(path_of(url)).status_code == 302
    assert client.head(path_of(b["click_urls"][0])).status_code == 302  # a scanner's HEAD

    await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=8)
    stats = api.get(f"/v1/campaigns/{campaign}/stats").json()
    assert stats["opens"] == 3 and stats["unique_opens"] == 2
    assert stats["clicks"] == 5 and stats["unique_clicks"] == 2
    assert stats["machine_clicks"] == 1 and stats["human_clicks"] == 4
    assert stats["human_unique_clicks"] == 2 and stats["machine_opens"] == 0


async def test_head_is_recorded_as_machine(api: httpx.Client, client: httpx.Client, db: asyncpg.Connection) -> None:
    campaign = f"camp-{uuid.uuid4()}"
    urls = sign(api, campaign, "r", ["https://example.com/x"])
    response = client.head(path_of(urls["click_urls"][0]))
    assert response.status_code == 302 and response.headers["location"] == "https://example.com/x"
    pixel = client.head(path_of(urls["open_url"]))
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1 AND is_machine"
                         " AND machine_reason = 'head'", campaign, expected=2)  # fmt: skip


async def test_pixel(api: httpx.Client, client: httpx.Client, db: asyncpg.Connection) -> None:
    campaign = f"camp-{uuid.uuid4()}"
    urls = sign(api, campaign, "r", [])
    response = client.get(path_of(urls["open_url"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a") and len(response.content) == 43
    assert response.headers["cache-control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert response.headers["pragma"] == "no-cache" and response.headers["expires"] == "0"
    await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1 AND kind = 'open'"
                         " AND link_index IS NULL AND url IS NULL", campaign, expected=1)  # fmt: skip


def _bad_click_tokens(good: str) -> dict[str, str]:
    import base64

    from trackd_links.tokens import KeyRing, _b64encode

    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    wrong_version = bytes([9]) + bytes(raw[1:])
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 1
    other_key = KeyRing.from_specs(["k2:somebody-elses-secret-xyz"]).sign_click("c", "r", 0, "https://evil.example/")
    return {
        "tampered": _b64encode(bytes(flipped)),
        "truncated": good[:-5],
        "garbage": "this-is-not-a-token-at-all-really",
        "wrong_key": other_key,
        "wrong_version": _b64encode(wrong_version),
        "empty": "",
        "slash": good + "/extra",
        "oversized": "A" * 7_000,  # past 8 KiB the target limit answers 414 (test_hostile_protocol)
        "non_ascii": "%C3%A9" * 10 + good,
    }


async def test_bad_click_tokens_get_404(api: httpx.Client, client: httpx.Client, server: ServerProcess,
                                        db: asyncpg.Connection) -> None:  # fmt: skip
    campaign = f"camp-{uuid.uuid4()}"
    good = path_of(sign(api, campaign, "r", ["https://example.com/ok"])["click_urls"][0])[3:]
    for name, token in _bad_click_tokens(good).items():
        for method in ("GET", "HEAD"):
            response = client.request(method, f"/c/{token}")
            assert response.status_code == 404, (name, method, response.status_code)
            assert "location" not in response.headers, name
        pixel = client.get(f"/o/{token}.gif")
        assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif", name
    assert client.get(f"/o/{good}.gif").status_code == 200  # a click token is not an open token
    assert client.post(f"/c/{good}").status_code == 405
    time.sleep(0.3)
    assert await db.fetchval("SELECT count(*) FROM events WHERE campaign_id = $1", campaign) == 0
    assert "Traceback" not in server.log() and "Exception" not in server.log()
    assert metric(server.base_url, "trackd_interactions_total", {"kind": "click", "outcome": "bad_token"}) >= 18


def test_fallback_redirect_for_bad_tokens(tmp_path, database_url: str) -> None:
    env = {"TRACKD_FALLBACK_URL": "https://www.example.com/link-expired"}
    with running(tmp_path, database_url, env=env) as srv:
        response = httpx.get(f"{srv.base_url}/c/not-a-valid-token-at-all-xx", follow_redirects=False)
        assert response.status_code == 302
        assert response.headers["location"] == "https://www.example.com/link-expired"


def test_api_requires_a_valid_key(server: ServerProcess) -> None:
    body = {"campaign_id": "c", "recipient_id": "r", "links": []}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                    {"Authorization": f"Basic {API_KEY}"}):  # fmt: skip
        response = httpx.post(f"{server.base_url}/v1/tracking-urls", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{server.base_url}/v1/campaigns/c/stats", headers=headers).status_code == 401


def test_api_refuses_everything_without_configured_keys(tmp_path, database_url: str) -> None:
    with running(tmp_path, database_url, env={"TRACKD_API_KEYS": ""}) as srv:
        response = httpx.post(f"{srv.base_url}/v1/tracking-urls", json={}, headers={"Authorization": "Bearer x"})
        assert response.status_code == 401
        assert "TRACKD_API_KEYS" in srv.log()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"campaign_id": 1, "recipient_id": "r", "links": []}',
        b'{"campaign_id": "c", "recipient_id": "r", "links": "https://example.com"}',
        b'{"campaign_id": "c", "recipient_id": "r", "links": [1]}',
        b'{"campaign_id": "c", "links": []}',
        b'{"campaign_id": "", "recipient_id": "r", "links": []}',
        b'{"campaign_id": "c", "recipient_id": "r", "links": [], "extra": 1}',
    ],
)
def test_malformed_requests_get_422(api: httpx.Client, body: bytes) -> None:
    response = api.post("/v1/tracking-urls", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"


def test_ops_endpoints(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    for name in ("trackd_interactions_total", "trackd_events_written_total", "trackd_ingest_lag_seconds",
                 "trackd_backlog_rows", "trackd_api_http_requests_total"):  # fmt: skip
        assert name in metrics.text, name


def test_no_metric_label_takes_a_token_url_or_id(api: httpx.Client, client: httpx.Client) -> None:
    def series() -> set[str]:
        return {line.split(" ")[0] for line in client.get("/metrics").text.splitlines() if not line.startswith("#")}

    urls = sign(api, "label-test", "r", ["https://example.com/secret-path"])
    client.get(path_of(urls["click_urls"][0]))
    client.get("/c/garbage-token-value-that-is-long")
    client.get("/unknown/route/with/id-123")
    before = series()
    for i in range(200):
        client.get(f"/c/another-garbage-token-{i:05d}-xxxxxxxx")
        client.get(f"/o/garbage-{i:05d}-xxxxxxxxxxxxxxxxxxxx.gif")
        client.get(f"/nope/{i}")
    after = series()
    assert after == before
    text = " ".join(after)
    assert "secret-path" not in text and "label-test" not in text and "garbage" not in text


def test_oversized_api_bodies_get_413(api: httpx.Client) -> None:
    huge = b'{"campaign_id": "c", "recipient_id": "r", "links": ["' + b"a" * (5 << 20) + b'"]}'
    declared = api.post("/v1/tracking-urls", content=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"] == "request_entity_too_large"
    missing = api.get("/v1/no-such-route")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only found while reading
        for _ in range(6):
            yield b" " * (1 << 20)

    streamed = api.post("/v1/tracking-urls", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "request_entity_too_large"
    assert api.post("/v1/tracking-urls", json={"campaign_id": "c", "recipient_id": "r", "links": []}).status_code == 200


def test_campaign_ids_postgresql_cannot_hold_are_bad_input(api: httpx.Client) -> None:
    assert api.get("/v1/campaigns/a%00b/stats").status_code == 422
    assert api.get("/v1/interactions/per-second", params={"campaign_id": "a\x00b"}).status_code == 422
