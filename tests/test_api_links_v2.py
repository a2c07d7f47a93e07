"""`POST /v1/tracking-urls` with the links v2 fields (issue #12 item 2, ../shared/DESIGN.md):
`link_names`, `message_id` and `honeypot`, through a real server into `events`."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from tests.support import wait_for_count

pytestmark = pytest.mark.e2e

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def _path(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


async def test_link_names_message_id_and_honeypot_land_in_events(api: httpx.Client, client: httpx.Client,
                                                                 db: asyncpg.Connection) -> None:  # fmt: skip
    campaign = f"v2-{uuid.uuid4()}"
    body = {"campaign_id": campaign, "recipient_id": "r-1", "message_id": "<20261203.42@mail.example>",
            "links": ["https://shop.example.com/a", "https://shop.example.com/b"],
            "link_names": ["hero-cta", None], "honeypot": True}  # fmt: skip
    answer = api.post("/v1/tracking-urls", json=body)
    assert answer.status_code == 200, answer.text
    urls = answer.json()
    assert set(urls) == {"open_url", "click_urls", "honeypot_url"}
    for url, target in zip(urls["click_urls"], body["links"], strict=True):
        got = client.get(_path(url), headers={"User-Agent": UA})
        assert got.status_code == 302 and got.headers["location"] == target
    honeypot = client.get(_path(urls["honeypot_url"]), headers={"User-Agent": UA})
    assert honeypot.status_code == 302 and honeypot.headers["location"] == body["links"][0]
    assert client.get(_path(urls["open_url"]), headers={"User-Agent": UA}).status_code == 200
    await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=4)
    rows = await db.fetch(
        "SELECT kind, link_index, link_name, part, message_id, is_machine, machine_reason FROM events"
        " WHERE campaign_id = $1 ORDER BY kind, link_index NULLS FIRST", campaign)  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("click", 0, "hero-cta", "api", body["message_id"], False, None),
        ("click", 1, None, "api", body["message_id"], False, None),
        ("click", 2, None, "api", body["message_id"], True, "honeypot"),  # after the real links
        ("open", None, None, None, body["message_id"], False, None),
    ]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"link_names": ["a"]}, "link_names has 1 entries for 2 links"),
        ({"link_names": ["a", "n" * 65]}, "link_names[1]: link_name must be at most 64 bytes"),
        ({"honeypot_link": "https://x.example/"}, "honeypot_link is given without"),
        ({"honeypot": True, "honeypot_link": ""}, "honeypot_link"),
        ({"link_names": ["a", ""]}, "link_name must be a non-empty string"),
        ({"message_id": "m\x00"}, "message_id must not contain NUL"),
        ({"honeypot": True, "honeypot_link": "javascript:alert(1)"}, "honeypot_link"),
    ],
)
def test_bad_v2_fields_are_a_422_naming_them(api: httpx.Client, extra: dict[str, object], fragment: str) -> None:
    body = {"campaign_id": "c", "recipient_id": "r", "links": ["https://a.example/", "https://b.example/"], **extra}
    answer = api.post("/v1/tracking-urls", json=body)
    assert answer.status_code == 422, answer.text
    assert fragment in answer.text, answer.text


def test_without_honeypot_there_is_no_honeypot_url(api: httpx.Client) -> None:
    answer = api.post("/v1/tracking-urls", json={"campaign_id": "c", "recipient_id": "r", "links": []})
    assert answer.status_code == 200 and "honeypot_url" not in answer.json()
