"""The command line: `trackd serve` on the embedded database (what `make run` does), `trackd sign`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from app.pgserver import EmbeddedPostgres
from tests.support import API_KEY, ROOT, SIGNING_KEYS, ServerProcess, postgres_dir
from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_sign_prints_pixel_and_click_urls() -> None:
    env = {"TRACKD_SIGNING_KEYS": SIGNING_KEYS, "TRACKD_PUBLIC_URL": "https://t.example.com/"}
    result = run_cli("sign", "--campaign", "C", "--recipient", "R", "https://a.example/x?y=1", "https://b.example/",
                     env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert len(lines) == 3
    ring = KeyRing.from_specs(SIGNING_KEYS.split(","))
    assert lines[0].startswith("https://t.example.com/o/") and lines[0].endswith(".gif")
    assert ring.verify(lines[0].removeprefix("https://t.example.com/o/").removesuffix(".gif"), KIND_OPEN)
    for line in lines[1:]:
        assert ring.verify(line.removeprefix("https://t.example.com/c/"), KIND_CLICK)


def test_sign_refuses_bad_urls() -> None:
    result = run_cli("sign", "--campaign", "C", "--recipient", "R", "javascript:alert(1)",
                     env={"TRACKD_SIGNING_KEYS": SIGNING_KEYS})  # fmt: skip
    assert result.returncode == 2 and "javascript" in result.stderr


def test_keygen_makes_a_usable_key() -> None:
    result = run_cli("keygen", "--kid", "2026-11")
    KeyRing.from_specs([result.stdout.strip()])


def _click(server: ServerProcess, campaign: str) -> None:
    signed = httpx.post(
        f"{server.base_url}/v1/tracking-urls",
        json={"campaign_id": campaign, "recipient_id": "r", "links": ["https://example.com/"]},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    assert httpx.get(signed["click_urls"][0]).status_code == 302


def _clicks(server: ServerProcess, campaign: str) -> int:
    stats = httpx.get(
        f"{server.base_url}/v1/campaigns/{campaign}/stats", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    return stats.json()["clicks"]


@pytest.mark.e2e
def test_serve_on_embedded_postgres_stops_it_and_reuses_its_data() -> None:
    """`make run`: no DATABASE_URL, so trackd starts PostgreSQL in its data directory, and stops
    it on SIGTERM; the next start finds the same data."""
    with postgres_dir() as data_dir:
        _serve_twice(data_dir)


def _serve_twice(tmp_path: Path) -> None:
    campaign = f"embedded-{uuid.uuid4()}"
    server = ServerProcess(tmp_path, database_url="", env={"TRACKD_SIGNING_KEYS": ""})
    pg = EmbeddedPostgres(tmp_path / "pg")
    with server.start(timeout=60):
        assert pg.is_running()
        _click(server, campaign)
        assert (tmp_path / "dev-signing-key").exists()  # no keys set: a dev key kept for next time
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit.
    assert server.proc is not None and server.proc.returncode in (0, -15), server.log()
    assert "Application shutdown complete" in server.log()
    assert not pg.is_running(), "the embedded PostgreSQL must stop with the service"
    assert "1 events not committed" not in server.log()

    # Ctrl-C in `make run` is a SIGINT to the foreground process group: the same clean stop.
    again = ServerProcess(tmp_path, database_url="", env={"TRACKD_SIGNING_KEYS": ""}).start(timeout=60)
    assert _clicks(again, campaign) == 1
    again.signal(signal.SIGINT)
    assert again.proc is not None and again.proc.wait(60) in (0, -signal.SIGINT, 1), again.log()
    assert "Application shutdown complete" in again.log()
    assert not pg.is_running()
