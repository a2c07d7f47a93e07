"""TRACKD_NETWORKS_FILE through a real `trackd serve`: read at start (a bad file stops the server
with one line naming the setting), read again on SIGHUP (a real signal to the real process; a
file that no longer loads is logged and the lists in use are kept)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from tests.support import API_KEY, ROOT, ServerProcess, wait_for_count

HEADER = "network,scope,certainty,label,source,date\n"
LOOPBACK = "127.0.0.0/8,both,certain,test-loopback,https://example.com/our-own-checker,2026-12-01\n"


def _click_url(server: ServerProcess, campaign: str, recipient: str) -> str:
    answer = httpx.post(f"{server.base_url}/v1/tracking-urls", headers={"Authorization": f"Bearer {API_KEY}"},
                        json={"campaign_id": campaign, "recipient_id": recipient,
                              "links": ["https://shop.example/"]}, timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text
    url: str = answer.json()["click_urls"][0]
    return url


async def _verdict(conn: asyncpg.Connection, campaign: str, recipient: str) -> tuple[bool, str | None]:
    await wait_for_count(conn, "SELECT count(*) FROM events WHERE campaign_id = $1 AND recipient_id = $2",
                         campaign, recipient, expected=1)  # fmt: skip
    row = await conn.fetchrow(
        "SELECT is_machine, machine_reason FROM events WHERE campaign_id = $1 AND recipient_id = $2",
        campaign,
        recipient,
    )
    assert row is not None
    return row["is_machine"], row["machine_reason"]


async def test_sighup_reloads_the_networks_file_and_keeps_the_lists_when_it_is_bad(
    tmp_path: Path, database_url: str
) -> None:
    lists = tmp_path / "networks.csv"
    lists.write_text(HEADER, encoding="utf-8")
    campaign = f"reload-{uuid.uuid4()}"
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"}
    conn = await asyncpg.connect(database_url)
    try:
        with ServerProcess(tmp_path / "srv", database_url, env={"TRACKD_NETWORKS_FILE": str(lists)}) as server:
            httpx.get(_click_url(server, campaign, "before"), headers=browser, timeout=10)
            assert await _verdict(conn, campaign, "before") == (False, None)

            lists.write_text(HEADER + LOOPBACK, encoding="utf-8")
            server.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "network lists reloaded" not in server.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "network lists reloaded (" in server.log()
            httpx.get(_click_url(server, campaign, "after"), headers=browser, timeout=10)
            assert await _verdict(conn, campaign, "after") == (True, "scanner_network")

            lists.write_text(
                HEADER + "not-a-network,both,certain,x,https://example.com/,2026-12-01\n", encoding="utf-8"
            )
            server.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "not reloaded" not in server.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "SIGHUP: network lists not reloaded, the ones in use are kept" in server.log()
            assert server.proc is not None and server.proc.poll() is None  # still serving
            httpx.get(_click_url(server, campaign, "kept"), headers=browser, timeout=10)
            assert await _verdict(conn, campaign, "kept") == (True, "scanner_network")
            assert "Traceback" not in server.log()
    finally:
        await conn.close()


def test_a_bad_networks_file_stops_serve_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    lists = tmp_path / "networks.csv"
    lists.write_text(HEADER + "10.0.0.1/8,both,certain,x,https://example.com/,2026-12-01\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "TRACKD_DATA_DIR": str(tmp_path / "data"), "TRACKD_NETWORKS_FILE": str(lists)},
    )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "TRACKD_NETWORKS_FILE" in lines[0] and "Traceback" not in done.stderr
