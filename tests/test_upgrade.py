"""An upgrade to links v2 strands nothing (issue #12 item 7): a journal segment written before it
(format 2, rows of 12 columns; tests/data/journal-format2) is adopted by a current `trackd
serve` and every event lands in `events` with every column as that version made it, the new
columns NULL; and the version 1 tokens of that time still redirect."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support import ROOT, SIGNING_KEYS, ServerProcess
from trackd_links.tokens import KIND_CLICK, KeyRing

pytestmark = pytest.mark.e2e

FIXTURE = ROOT / "tests" / "data" / "journal-format2"
OLD_KEY = "old:journal-fixture-secret-0123456789"
T0 = dt.datetime(2025, 12, 2, tzinfo=dt.UTC)


async def _rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT kind, campaign_id, recipient_id, link_index, url, occurred_at, sent_at, is_machine, ip::text AS ip,"
            " user_agent, link_name, part, message_id FROM events WHERE campaign_id = 'fixture-campaign'"
            " ORDER BY occurred_at"
        )
    finally:
        await conn.close()


def test_a_journal_written_before_links_v2_replays(tmp_path: Path, database_url: str) -> None:
    orphan = tmp_path / "journal" / "20251202T000000-1-fixture"
    orphan.mkdir(parents=True)
    shutil.copy(FIXTURE / "00000001.seg", orphan / "00000001.seg")
    server = ServerProcess(tmp_path, database_url, env={"TRACKD_SIGNING_KEYS": f"new:a-new-key-0123456789,{OLD_KEY}"})
    server.start()
    try:
        deadline = time.monotonic() + 30
        rows = asyncio.run(_rows(database_url))
        while len(rows) < 5:
            assert time.monotonic() < deadline, f"only {len(rows)} of 5 events replayed:\n{server.log()[-2000:]}"
            time.sleep(0.2)
            rows = asyncio.run(_rows(database_url))
        assert len(rows) == 5
        for i, row in enumerate(rows):
            click = i < 3
            assert row["kind"] == ("click" if click else "open")
            assert (row["campaign_id"], row["recipient_id"]) == ("fixture-campaign", f"r-{i}")
            assert row["occurred_at"] == T0 + dt.timedelta(milliseconds=i)
            assert row["sent_at"] == dt.datetime.fromtimestamp(1_764_600_000, dt.UTC)
            assert row["link_index"] == (i if click else None)
            assert row["url"] == (f"https://shop.example.com/p/{i}?q=%C3%BC" if click else None)
            assert row["ip"] == "198.51.100.0/24" and row["user_agent"].startswith("Mozilla/5.0 (Macintosh")
            assert (row["link_name"], row["part"], row["message_id"]) == (None, "api" if click else None, None)
        while orphan.exists() and any(orphan.glob("*.seg")):  # removed once its rows are committed
            assert time.monotonic() < deadline + 10, "the replayed segment was never cleaned up"
            time.sleep(0.2)
        # A version 1 link of that time still redirects (its key kept second in the ring).
        old = KeyRing.from_specs([OLD_KEY])
        v1 = old._seal(old._head(KIND_CLICK, 1_764_600_000) + b"\x00\x00\x03c-1\x04r-42https://shop.example.com/")
        answer = httpx.get(f"{server.base_url}/c/{v1}", timeout=5)
        assert answer.status_code == 302 and answer.headers["location"] == "https://shop.example.com/"
    finally:
        server.stop()


def test_version_1_tokens_open_on_both_paths(server: ServerProcess) -> None:
    """A version 1 click and pixel alone on a connection (answered below ASGI, app.protocol) and
    pipelined behind another request (uvicorn queues them: the ASGI path, app.hotpath)."""
    ring = KeyRing.from_specs(SIGNING_KEYS.split(","))
    click = ring._seal(ring._head(KIND_CLICK, 1_700_000_000) + b"\x00\x01\x03c-1\x04r-42https://shop.example.com/v1")
    pixel = ring._seal(ring._head(0, 1_700_000_000) + b"\x03c-1\x04r-42")

    def request(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: t.example\r\nUser-Agent: Mozilla/5.0 (X11)\r\n\r\n".encode()

    for pipelined in (False, True):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            head = request("/healthz") if pipelined else b""
            sock.sendall(head + request(f"/c/{click}") + request(f"/o/{pixel}.gif"))
            data = b""
            while data.count(b"HTTP/1.1 ") < (3 if pipelined else 2) or not data.endswith(b";"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
        answers = data.split(b"HTTP/1.1 ")[1:]
        click_answer, pixel_answer = answers[-2], answers[-1]
        assert click_answer.startswith(b"302 ") and b"location: https://shop.example.com/v1\r\n" in click_answer
        assert pixel_answer.startswith(b"200 ") and b"GIF89a" in pixel_answer
