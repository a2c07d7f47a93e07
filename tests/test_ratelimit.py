"""The per-token and per-address event limits: the bucket of app.ratelimit with a fake clock, and
the rule against a real server."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.ratelimit import Buckets
from tests.support import API_KEY, metric, running, wait_for_count


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = Clock()
    b = Buckets(20, 0.2, clock=clock)
    assert all(b.take(b"t") for _ in range(20))
    assert not b.take(b"t")
    clock.now += 4.9
    assert not b.take(b"t")
    clock.now += 0.2
    assert b.take(b"t") and not b.take(b"t")
    clock.now += 1000
    assert sum(b.take(b"t") for _ in range(50)) == 20  # refills to the burst, not beyond


def test_keys_are_independent() -> None:
    b = Buckets(2, 1, clock=Clock())
    assert b.take("a") and b.take("a") and not b.take("a")
    assert b.take("b") and b.take("b") and not b.take("b")


def test_memory_is_bounded_when_keys_rotate() -> None:
    b = Buckets(1, 0.001, max_entries=100, clock=Clock())
    for i in range(10_000):
        assert b.take(i)
    assert len(b) == 100
    b.take("hot")
    assert not b.take("hot")
    for i in range(50):
        b.take(("x", i))
    assert len(b) == 100
    assert not b.take("hot")  # the 99 keys before it went first: its bucket is still empty
    for i in range(100):
        b.take(("y", i))
    assert b.take("hot")  # evicted, it came back with a full bucket (as a new key would)


# -- against a real server -------------------------------------------------------------------


@pytest.mark.e2e
async def test_one_token_or_one_address_cannot_fill_the_journal(tmp_path: Path, database_url: str,
                                                                db: asyncpg.Connection) -> None:  # fmt: skip
    """Past a token's burst its events are answered and counted as rate_token, not journaled;
    past an address's burst, rate_client; the rows and the counters add up to the requests."""
    env = {"TRACKD_TOKEN_EVENT_BURST": "20", "TRACKD_TOKEN_EVENTS_PER_S": "0.01",
           "TRACKD_CLIENT_EVENT_BURST": "50", "TRACKD_CLIENT_EVENTS_PER_S": "0.01"}  # fmt: skip
    campaign = f"rate-{uuid.uuid4()}"
    with running(tmp_path, database_url, env=env) as srv, httpx.Client(base_url=srv.base_url) as client:
        signed = client.post("/v1/tracking-urls", headers={"Authorization": f"Bearer {API_KEY}"},
                             json={"campaign_id": campaign, "recipient_id": "r",
                                   "links": [f"https://a.example/{i}" for i in range(40)]}).json()  # fmt: skip
        one = signed["click_urls"][0]
        for _ in range(100):  # one link, replayed
            assert client.get(one).status_code == 302
        for url in signed["click_urls"][1:]:  # 39 other links from the same address
            assert client.get(url).status_code == 302
        by_token = metric(srv.base_url, "trackd_events_dropped_total", {"reason": "rate_token"})
        by_client = metric(srv.base_url, "trackd_events_dropped_total", {"reason": "rate_client"})
        assert by_token == 80
        # The address had 20 events of its burst of 50 left after the first link: 30 more kept.
        assert by_client == 39 - 30
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["journal_full"] is False
        # Exact: the rows kept and the events counted as dropped are the 139 requests answered.
        await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=50)
        assert 50 + by_token + by_client == 139


def test_a_clock_stepping_back_neither_refills_nor_owes() -> None:
    """Review finding: the hot path charges on the wall clock; an NTP step back made a debt of
    (step x rate) tokens, refusing a legitimate address for as long again."""
    clock = Clock()
    clock.now = 1000.0
    b = Buckets(2, 1.0, clock=clock)
    assert b.take("a") and b.take("a") and not b.take("a")
    clock.now = 970.0  # 30 s back
    assert not b.take("a")  # no refill from a step back
    clock.now = 1001.1
    assert b.take("a")  # refilled as if the step never happened, not 30 s later
