"""URL fidelity: every hard URL in the corpus comes back as `Location` exactly (IRIs as their URI
form), and every URL we must not sign is refused with a 422 naming it."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.url_corpus import CORPUS, REJECTED
from trackd_links.urls import InvalidURL, to_location


@pytest.mark.parametrize(("label", "url", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_location_of(label: str, url: str, expected: str) -> None:
    assert to_location(url) == expected


@pytest.mark.parametrize(("label", "value"), REJECTED, ids=[r[0] for r in REJECTED])
def test_refused(label: str, value: object) -> None:
    with pytest.raises(InvalidURL):
        to_location(value)


# The two tests that talk to a server are e2e; the rest check to_location() alone (unit tests).
@pytest.mark.e2e
def test_corpus_round_trips_through_the_server(api: httpx.Client, client: httpx.Client) -> None:
    assert len(CORPUS) >= 60
    links = [url for _, url, _ in CORPUS]
    response = api.post("/v1/tracking-urls", json={"campaign_id": "corpus", "recipient_id": "r", "links": links})
    assert response.status_code == 200, response.text
    click_urls = response.json()["click_urls"]
    assert len(click_urls) == len(CORPUS)
    for (label, _, expected), click_url in zip(CORPUS, click_urls, strict=True):
        for method in ("GET", "HEAD"):
            redirect = client.request(method, httpx.URL(click_url).raw_path.decode())
            assert redirect.status_code == 302, label
            # Compare the raw header bytes: no client-side decoding can hide a difference.
            raw = dict(redirect.headers.raw)[b"location"]
            assert raw == expected.encode("ascii"), label


JSON_REJECTED = [r for r in REJECTED if not isinstance(r[1], bytes)]  # bytes have no JSON form


@pytest.mark.e2e
@pytest.mark.parametrize(("label", "value"), JSON_REJECTED, ids=[r[0] for r in JSON_REJECTED])
def test_api_names_the_refused_link(api: httpx.Client, label: str, value: object) -> None:
    links = ["https://example.com/fine", value]
    # ASCII-escaped JSON, so that even a lone surrogate reaches the server as a JSON \\u escape.
    body = json.dumps({"campaign_id": "c", "recipient_id": "r", "links": links}, ensure_ascii=True)
    response = api.post("/v1/tracking-urls", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, label
    answer = response.json()
    if isinstance(value, str):
        assert answer["error"] == "invalid_link" and answer["index"] == 1 and answer["link"] == value
    else:  # not a string at all: the schema error points at links[1]
        assert answer["error"] == "invalid_request"
        assert answer["detail"][0]["loc"][:3] == ["body", "links", 1]


@pytest.mark.parametrize("url", ["http\u017f://evil.com/", "HTTP\u017f://x/", "\u0127ttps://x/", "https\u212a://x/"])
def test_lookalike_scheme_refused(url: str) -> None:
    with pytest.raises(InvalidURL):
        to_location(url)


def test_any_string_gives_ascii_uri_or_invalid_url() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=2000, deadline=None)
    @given(st.one_of(st.text(), st.text().map(lambda t: "https://" + t), st.text().map(lambda t: "http" + t)))
    def check(text: str) -> None:
        try:
            location = to_location(text)
        except InvalidURL:
            return
        assert location.isascii() and all(0x21 <= ord(c) <= 0x7E for c in location)

    check()
