"""`POST /v1/rewrite` through a real `trackd serve` (issue 15): the bearer check before the body,
the size cap (TRACKD_REWRITE_MAX_BYTES) as a JSON 413, bad options as a 422 naming the field, and
a rewritten email whose links redirect to exactly their targets and whose pixel answers."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support import API_KEY, SIGNING_KEYS, ServerProcess
from trackd_links.tokens import KIND_CLICK, KeyRing

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_KEY}"}
RING = KeyRing.from_specs(SIGNING_KEYS.split(","))
JSON = {"Content-Type": "application/json"}
CAP = 2 << 20  # TRACKD_REWRITE_MAX_BYTES's default

EMAIL = """<!doctype html>
<html><head><title>Hi</title></head>
<body>
<p><a href="https://shop.example/p?a=1&amp;b=2&region=eu">Shop</a>
<a href="mailto:help@example.com">Mail us</a></p>
</body></html>
"""


def test_the_bearer_check_comes_before_the_body_and_the_cap(server: ServerProcess) -> None:
    url = server.base_url + "/v1/rewrite"
    broken = httpx.post(url, content=b"{not json", headers=JSON)
    assert broken.status_code == 401 and broken.json()["error"] == "unauthorized", broken.text
    # Over the rewrite cap and without a key: the key is what is refused, before reading.
    big = b'{"campaign_id": "c", "recipient_id": "r", "html": "' + b"a" * (CAP + 10) + b'"}'
    refused = httpx.post(url, content=big, headers=JSON, timeout=30)
    assert refused.status_code == 401, refused.text
    wrong_key = httpx.post(url, content=b"{not json", headers={**JSON, "Authorization": "Bearer nope"})
    assert wrong_key.status_code == 401
    # With a key, the same broken body is the client's JSON error.
    keyed = httpx.post(url, content=b"{not json", headers={**JSON, **AUTH})
    assert keyed.status_code == 422 and keyed.json()["detail"][0]["type"] == "json_invalid"


def test_over_the_cap_is_a_json_413(api: httpx.Client) -> None:
    big = b'{"campaign_id": "c", "recipient_id": "r", "html": "' + b"a" * (CAP + 10) + b'"}'
    declared = api.post("/v1/rewrite", content=big, headers=JSON, timeout=30)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"] == "request_entity_too_large"
    assert "TRACKD_REWRITE_MAX_BYTES" in declared.json()["message"]

    # Chunked (no Content-Length): refused while it streams in.
    def chunks() -> object:
        yield b'{"campaign_id": "c", "recipient_id": "r", "html": "'
        for _ in range(CAP // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    streamed = api.post("/v1/rewrite", content=chunks(), headers=JSON, timeout=30)  # type: ignore[arg-type]
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"] == "request_entity_too_large"
    # Just under the cap is taken.
    html = "a" * (CAP - 200)
    ok = api.post("/v1/rewrite", json={"campaign_id": "c", "recipient_id": "r", "html": html}, timeout=30)
    assert ok.status_code == 200, ok.text[:300]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"pixel": "top"}, "options.pixel"),
        ({"text": "sometimes"}, "options.text"),
        ({"honeypot": "yes"}, "options.honeypot"),
        ({"no_such_option": 1}, "options.no_such_option"),
    ],
)
def test_bad_options_are_a_422_naming_the_field(api: httpx.Client, options: dict[str, object], field: str) -> None:
    answer = api.post("/v1/rewrite", json={"campaign_id": "c", "recipient_id": "r", "html": EMAIL, "options": options})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "invalid_options" and body["field"] == field
    assert body["message"].startswith(field + ":")


def test_bad_requests_are_422s(api: httpx.Client) -> None:
    neither = api.post("/v1/rewrite", json={"campaign_id": "c", "recipient_id": "r"})
    assert neither.status_code == 422 and "html" in neither.json()["message"]
    extra = api.post("/v1/rewrite", json={"campaign_id": "c", "recipient_id": "r", "html": "x", "nope": 1})
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "nope"]
    # 255 characters, but more than 255 bytes: the signer's limit, refused before any rewriting.
    wide = api.post("/v1/rewrite", json={"campaign_id": "c", "recipient_id": "é" * 200, "html": EMAIL})
    assert wide.status_code == 422 and "recipient_id" in wide.json()["message"], wide.text


def test_a_rewritten_email_redirects_and_its_pixel_answers(api: httpx.Client, client: httpx.Client) -> None:
    answer = api.post("/v1/rewrite", json={"campaign_id": "rw-e2e", "recipient_id": "r-1", "html": EMAIL,
                                           "sent_at": 1_700_000_000, "message_id": "<m-1@example>"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["error"] is None
    assert set(out) == {"html", "text", "open_url", "links", "skipped", "error"}
    (link,) = [k for k in out["links"] if k["part"] == "html"]
    # The attribute's value decoded as a browser does: &amp; is &, &region is not an entity.
    assert link["url"] == "https://shop.example/p?a=1&b=2&region=eu"
    assert link["raw"] == "https://shop.example/p?a=1&amp;b=2&region=eu"
    assert link["click_url"] in out["html"] and link["raw"] not in out["html"]
    assert "mailto:help@example.com" in out["html"]
    redirect = client.get(link["click_url"])
    assert redirect.status_code == 302, redirect.text
    assert redirect.headers["location"] == link["url"]
    assert out["open_url"] and out["open_url"].endswith(".gif")
    pixel = client.get(out["open_url"])
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert pixel.content.startswith(b"GIF")


def test_one_email_for_two_recipients(api: httpx.Client) -> None:
    # The second request reuses the compiled email: it must still be this recipient's own.
    outs = []
    for recipient in ("r-a", "r-b"):
        answer = api.post("/v1/rewrite", json={"campaign_id": "rw-two", "recipient_id": recipient, "html": EMAIL})
        assert answer.status_code == 200, answer.text
        outs.append(answer.json())
    assert outs[0]["html"] != outs[1]["html"] and outs[0]["open_url"] != outs[1]["open_url"]
    for out, recipient in zip(outs, ("r-a", "r-b"), strict=True):
        (link,) = out["links"]
        claims = RING.open(link["click_url"].rsplit("/c/", 1)[1], KIND_CLICK)
        assert claims is not None and claims.recipient_id == recipient and claims.part == "html"
        assert out["html"].replace(link["click_url"], link["raw"]).count(link["raw"]) == 1


def test_without_a_pixel_undoing_the_links_gives_the_input_back(api: httpx.Client) -> None:
    text = "Shop at https://shop.example/p?a=1&b=2 today.\n"
    answer = api.post("/v1/rewrite", json={"campaign_id": "c", "recipient_id": "r", "html": EMAIL, "text": text,
                                           "options": {"pixel": "none", "text": "all"}})  # fmt: skip
    assert answer.status_code == 200, answer.text
    out = answer.json()
    html, plain = out["html"], out["text"]
    for link in out["links"]:
        if link["part"] == "html":
            html = html.replace(link["click_url"], link["raw"])
        else:
            plain = plain.replace(link["click_url"], link["raw"])
    assert html == EMAIL and plain == text


def test_rewrites_do_not_stall_redirects(server: ServerProcess, api: httpx.Client) -> None:
    click = api.post("/v1/tracking-urls", json={"campaign_id": "rw-stall", "recipient_id": "r",
                                                "links": ["https://a.example/"]}).json()["click_urls"][0]  # fmt: skip
    row = '<p><a href="https://shop.example/{0}?utm_source=x&amp;n={0}">item {0}</a></p>\n'
    links = "".join(row.format(i) for i in range(4000))
    email = f"<html><body>{links}</body></html>"
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
        for _ in range(3):
            done_one = httpx.post(server.base_url + "/v1/rewrite", headers=AUTH, timeout=60,
                                  json={"campaign_id": "rw-stall", "recipient_id": "r", "html": email})  # fmt: skip
            assert done_one.status_code == 200 and len(done_one.json()["links"]) == 4000
        elapsed = time.monotonic() - started
    finally:
        done.set()
        worker.join()
    # On the event loop, a click would wait for a whole rewrite; off it, for a GIL switch or two.
    assert max(latencies) < max(0.1, elapsed / 9), (max(latencies), elapsed)
