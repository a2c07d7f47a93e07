"""Links v2 (issue #12) end to end: the same link minted four ways -- the API, `trackd sign`, the
Python signer (trackd_links.KeyRing) and the Node implementation of docs/tokens.md -- is the same
token, redirects identically on one real server, and records the same event rows. Each token is
opaque: its bytes show none of the campaign, the recipient or the URL."""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid

import asyncpg
import httpx
import pytest

from tests.support import API_KEY, ROOT, SIGNING_KEYS, ServerProcess, wait_for_count
from tests.test_tokens_node import run_node
from trackd_links import KeyRing

pytestmark = pytest.mark.e2e

URL = "https://shop.example/spring/sale?utm_source=mail&utm_campaign=spring"
RECIPIENT = "alice.liddell@example.com"
SENT_AT = 1767225600  # fixed: AES-SIV is deterministic, so four minters of one link make one token
WAYS = ("api", "trackd sign", "python", "node")


def mint_api(server: ServerProcess, campaign: str) -> tuple[str, str]:
    response = httpx.post(
        f"{server.base_url}/v1/tracking-urls",
        json={"campaign_id": campaign, "recipient_id": RECIPIENT, "links": [URL], "sent_at": SENT_AT},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["click_urls"][0], body["open_url"]


def mint_cli(server: ServerProcess, campaign: str) -> tuple[str, str]:
    env = {**server.env, "TRACKD_PUBLIC_URL": server.base_url}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "sign", "--campaign", campaign, "--recipient", RECIPIENT,
         "--sent-at", str(SENT_AT), URL],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pixel, click = done.stdout.split()
    return click, pixel


def mint_python(server: ServerProcess, campaign: str) -> tuple[str, str]:
    ring = KeyRing.from_specs(SIGNING_KEYS.split(","))
    click = ring.sign_click(campaign, RECIPIENT, 0, URL, sent_at=SENT_AT)
    pixel = ring.sign_open(campaign, RECIPIENT, sent_at=SENT_AT)
    return f"{server.base_url}/c/{click}", f"{server.base_url}/o/{pixel}.gif"


def mint_node(server: ServerProcess, campaign: str) -> tuple[str, str]:
    key = SIGNING_KEYS.split(",")[0]  # the first key mints (docs/tokens.md, "Keys")
    common = {"sent_at": SENT_AT, "campaign_id": campaign, "recipient_id": RECIPIENT, "link_name": None,
              "message_id": None, "honeypot": False}  # fmt: skip
    click_fields = {**common, "link_index": 0, "url": URL, "part": "api"}
    open_fields = {**common, "link_index": None, "url": None, "part": None}
    click, pixel = run_node([
        {"op": "mint", "key": key, "kind": "click", "fields": click_fields},
        {"op": "mint", "key": key, "kind": "open", "fields": open_fields},
    ])  # fmt: skip
    assert "token" in click and "token" in pixel, (click, pixel)
    return f"{server.base_url}/c/{click['token']}", f"{server.base_url}/o/{pixel['token']}.gif"


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1].removesuffix(".gif")


def b64decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


async def test_one_link_minted_four_ways_redirects_and_records_identically(
    server: ServerProcess, client: httpx.Client, db: asyncpg.Connection
) -> None:
    campaign = f"links-v2-{uuid.uuid4()}"
    minted = {
        way: mint(server, campaign)
        for way, mint in zip(WAYS, (mint_api, mint_cli, mint_python, mint_node), strict=True)
    }

    # The same fields under the same key: the same token, whoever minted it.
    assert len({click for click, _ in minted.values()}) == 1, minted
    assert len({pixel for _, pixel in minted.values()}) == 1, minted

    for way, (click_url, pixel_url) in minted.items():
        for url in (click_url, pixel_url):
            raw = b64decode(token_of(url))
            assert raw[2:4] == b"k2"  # the header (kid) is the only clear text ...
            for secret in (campaign, RECIPIENT, URL, "shop.example", "spring", "alice"):
                assert secret.encode() not in raw, (way, secret)  # ... everything else is ciphertext
        click = client.get(httpx.URL(click_url).raw_path.decode())
        assert (click.status_code, click.headers["location"]) == (302, URL), way
        pixel = client.get(httpx.URL(pixel_url).raw_path.decode())
        assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif", way

    await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=8)
    rows = await db.fetch(
        "SELECT kind, campaign_id, recipient_id, url, link_index, link_name, part, message_id,"
        " extract(epoch FROM sent_at)::bigint AS sent_at FROM events WHERE campaign_id = $1",
        campaign,
    )
    shapes = sorted(tuple(row) for row in rows)
    click_row = ("click", campaign, RECIPIENT, URL, 0, None, "api", None, SENT_AT)
    open_row = ("open", campaign, RECIPIENT, None, None, None, None, None, SENT_AT)
    assert shapes == [click_row] * 4 + [open_row] * 4
