"""The API against clients that do not play by its rules (issue 11, item 9): the bearer check comes
before the body is parsed, a large signing batch does not stall redirects, and /metrics and the
API schema can be kept out of public view. Real server processes, real sockets."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import API_KEY, ServerProcess, free_port, running

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_the_bearer_check_comes_before_the_body_is_parsed(server: ServerProcess) -> None:
    url = server.base_url + "/v1/tracking-urls"
    headers = {"Content-Type": "application/json"}
    broken = httpx.post(url, content=b"{not json", headers=headers)
    assert broken.status_code == 401, broken.text
    assert broken.json()["error"] == "unauthorized"
    # 4 MB of valid JSON without a key: refused without being parsed (no JSON error either).
    big = b'{"campaign_id": "c", "recipient_id": "r", "links": ["' + b"a" * (4_000_000) + b'"]}'
    started = time.monotonic()
    refused = httpx.post(url, content=big, headers=headers, timeout=30)
    assert refused.status_code in (401, 413), refused.text
    assert time.monotonic() - started < 5


def test_with_a_key_bad_bodies_still_get_their_errors(api: httpx.Client) -> None:
    broken = api.post("/v1/tracking-urls", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    wrong = api.post("/v1/tracking-urls", json={"campaign_id": "c", "recipient_id": 5, "links": []})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "recipient_id"]
    extra = api.post("/v1/tracking-urls", json={"campaign_id": "c", "recipient_id": "r", "nope": 1})
    assert extra.status_code == 422
    ok = api.post("/v1/tracking-urls", json={"campaign_id": "c", "recipient_id": "r", "links": ["https://a.example/"]})
    assert ok.status_code == 200 and len(ok.json()["click_urls"]) == 1
    # The request body's schema is still published.
    schema = api.get("/openapi.json").json()
    body = schema["paths"]["/v1/tracking-urls"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "links" in body["properties"]


def test_a_large_signing_batch_does_not_stall_redirects(server: ServerProcess, api: httpx.Client) -> None:
    click = api.post("/v1/tracking-urls", json={"campaign_id": "stall", "recipient_id": "r",
                                                "links": ["https://a.example/"]}).json()["click_urls"][0]  # fmt: skip
    links = [f"https://shop.example/{i}/" + "ü" * 600 for i in range(1000)]
    body = {"campaign_id": "stall", "recipient_id": "r", "links": links}
    latencies: list[float] = []
    done = threading.Event()

    def clicks() -> None:
        with httpx.Client(timeout=10) as c:
            while not done.is_set():
                started = time.monotonic()
                assert c.get(click).status_code == 302
                latencies.append(time.monotonic() - started)
                time.sleep(0.005)

    worker = threading.Thread(target=clicks)
    worker.start()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        signed = httpx.post(server.base_url + "/v1/tracking-urls", json=body, headers=AUTH, timeout=60)
        batch = time.monotonic() - started
    finally:
        done.set()
        worker.join()
    assert signed.status_code == 200 and len(signed.json()["click_urls"]) == 1000
    # Without slicing, a click waited for the whole batch (~0.6 s here); now for one slice.
    assert max(latencies) < max(0.15, batch / 3), (max(latencies), batch)


def test_metrics_behind_a_key_and_docs_switched_off(tmp_path: Path, database_url: str) -> None:
    env = {"TRACKD_METRICS_KEY": "scrape-key-123", "TRACKD_DOCS_ENABLED": "false"}
    with running(tmp_path, database_url, env=env) as srv:
        assert httpx.get(srv.base_url + "/metrics").status_code == 401
        assert httpx.get(srv.base_url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(srv.base_url + "/metrics", headers={"Authorization": "Bearer scrape-key-123"})
        assert ok.status_code == 200 and "trackd_interactions_total" in ok.text
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert httpx.get(srv.base_url + path).status_code == 404, path
        assert httpx.get(srv.base_url + "/healthz").status_code == 200


def test_metrics_on_a_port_of_their_own(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    env = {"TRACKD_METRICS_PORT": str(port), "TRACKD_METRICS_KEY": "k-123"}
    with running(tmp_path, database_url, env=env) as srv:
        assert httpx.get(srv.base_url + "/metrics").status_code == 404  # not on the public port
        side = f"http://127.0.0.1:{port}"
        assert httpx.get(side + "/metrics").status_code == 401
        ok = httpx.get(side + "/metrics", headers={"Authorization": "Bearer k-123"})
        assert ok.status_code == 200 and "trackd_interactions_total" in ok.text
        assert httpx.get(side + "/v1/status", headers={"Authorization": "Bearer k-123"}).status_code == 404
        with socket.create_connection(("127.0.0.1", port)) as sock:  # a head that never ends
            sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"x" * 20_000)
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed, nothing answered
