"""An upgrade to links v2 strands nothing (issue #12 item 7): a journal segment written before it
(format 2, rows of 12 columns; tests/data/journal-format2) is adopted by a current `trackd
serve` and every event lands in `events` with every column as that version made it, the new
columns NULL; and the version 1 tokens of that time still redirect."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support import ROOT, ServerProcess
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
            assert (row["link_name"], row["part"], row["message_id"]) == (None, None, None)
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
