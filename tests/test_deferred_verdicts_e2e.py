"""Deferred verdicts across pods: two real `trackd serve` processes on one database, each getting
part of one scanner's burst of clicks, judge it the same as one process getting all of it, within
10 s of the last click; a person's single click stays a person's, and GET stats follows."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from tests.support import API_KEY, ServerProcess, running

LINKS = [f"https://shop.example.com/item-{i}" for i in range(4)]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
SETTLED_WITHIN_S = 10.0


def sign(base_url: str, campaign: str, recipient: str) -> list[str]:
    body = {"campaign_id": campaign, "recipient_id": recipient, "links": LINKS}
    response = httpx.post(f"{base_url}/v1/tracking-urls", headers={"Authorization": f"Bearer {API_KEY}"},
                          json=body, timeout=10)  # fmt: skip
    assert response.status_code == 200, response.text
    return [httpx.URL(url).raw_path.decode() for url in response.json()["click_urls"]]


def burst(servers: list[ServerProcess], paths: list[str], clicks: int = 6, gap_s: float = 0.2) -> None:
    """A scanner's clicks of every link, `gap_s` apart, the servers taking turns."""
    clients = [httpx.Client(base_url=s.base_url, timeout=10) for s in servers]
    try:
        for i in range(clicks):
            response = clients[i % len(clients)].get(paths[i % len(paths)], headers={"User-Agent": BROWSER})
            assert response.status_code == 302
            time.sleep(gap_s)
    finally:
        for client in clients:
            client.close()


async def verdicts(conn: asyncpg.Connection, campaign: str, recipient: str) -> list[tuple[bool, str | None]]:
    rows = await conn.fetch(
        "SELECT is_machine, machine_reason FROM events WHERE campaign_id = $1 AND recipient_id = $2"
        " ORDER BY occurred_at",
        campaign,
        recipient,
    )
    return [(r["is_machine"], r["machine_reason"]) for r in rows]


async def test_two_servers_judge_one_burst_as_one_server_does(tmp_path: Path, fresh_database_url: str) -> None:
    campaign = f"camp-{uuid.uuid4()}"
    with running(tmp_path / "a", fresh_database_url) as a, running(tmp_path / "b", fresh_database_url) as b:
        split, whole, person = "scanned-by-two", "scanned-by-one", "a-person"
        burst([a, b], sign(a.base_url, campaign, split))
        burst([a], sign(a.base_url, campaign, whole))
        person_path = sign(b.base_url, campaign, person)[1]
        assert httpx.get(f"{b.base_url}{person_path}", headers={"User-Agent": BROWSER}).status_code == 302
        last_click = time.monotonic()

        conn = await asyncpg.connect(fresh_database_url)
        try:
            want = [(True, "burst")] * 6
            while True:
                got = {r: await verdicts(conn, campaign, r) for r in (split, whole, person)}
                if got[split] == want and got[whole] == want and len(got[person]) == 1:
                    break
                assert time.monotonic() - last_click < SETTLED_WITHIN_S, got
                await asyncio.sleep(0.1)
            settled_s = time.monotonic() - last_click
            print(f"verdicts settled {settled_s:.2f} s after the last click")
            assert got[split] == got[whole]
            assert got[person] == [(False, None)]
            assert await conn.fetch("SELECT * FROM trackd_rollup_drift($1)", campaign) == []
        finally:
            await conn.close()
        stats = httpx.get(f"{a.base_url}/v1/campaigns/{campaign}/stats",
                          headers={"Authorization": f"Bearer {API_KEY}"}).json()  # fmt: skip
        assert stats["clicks"] == 13 and stats["human_clicks"] == 1 and stats["human_unique_clicks"] == 1, stats
        assert settled_s < SETTLED_WITHIN_S
        for server in (a, b):
            assert "Traceback" not in server.log()
            metrics = httpx.get(f"{server.base_url}/metrics").text
            assert "trackd_verdicts_lag_seconds" in metrics
