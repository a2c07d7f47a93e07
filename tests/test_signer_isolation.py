"""In-process signing from a sender's own code, which very often has a package named `app` (Flask
and FastAPI projects, most of all): `trackd_links` must sign without importing trackd's `app`,
and what it signs there must open in trackd and redirect on a real server.

The sender's process is a subprocess whose sys.path starts with a directory holding a package
`app` of its own (whose `app.tokens` and `app.urls` raise, the names trackd's signer had before
it moved), and whose working directory is not trackd's checkout (so that `''` on sys.path finds
the sender's `app`, not ours)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import SIGNING_KEYS, wait_for_count
from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing

URL = "https://shop.example/sale?utm_source=mail&x=%2B1"
SENDER_APP = {
    "__init__.py": '"""The sender\'s own web app."""\n\nSENDER = "this is the sender\'s app"\n',
    "tokens.py": 'raise ImportError("this is the sender\'s app: it has no tokens module")\n',
    "urls.py": 'raise ImportError("this is the sender\'s app: it has no urls module")\n',
}
SENDER_SCRIPT = """
import json, os, sys
sys.path.insert(0, {sender_dir!r})
import app  # the sender's app, imported first, as a sender's code would
assert app.SENDER == "this is the sender's app", app.__file__
from trackd_links import KeyRing
ring = KeyRing.from_specs(os.environ["TRACKD_SIGNING_KEYS"].split(","))
click = ring.sign_click({campaign!r}, "r-42", 0, {url!r}, link_name="hero-cta", message_id="m-1", part="html")
pixel = ring.sign_open({campaign!r}, "r-42", message_id="m-1")
trap = ring.sign_click({campaign!r}, "r-42", 1, {url!r}, part="html", honeypot=True)
trackd_app = sorted(name for name, mod in sys.modules.items()
                    if (name == "app" or name.startswith("app.")) and mod is not app)
print(json.dumps({{"click": click, "open": pixel, "honeypot": trap, "app_file": app.__file__,
                  "trackd_app_modules": trackd_app,
                  "app_modules": sorted(n for n in sys.modules if n == "app" or n.startswith("app."))}}))
"""


def sender_app(tmp_path: Path) -> Path:
    package = tmp_path / "sender" / "app"
    package.mkdir(parents=True)
    for name, text in SENDER_APP.items():
        (package / name).write_text(text)
    return package.parent


def run_sender(tmp_path: Path, script: str, *python_args: str) -> subprocess.CompletedProcess[str]:
    sender_dir = sender_app(tmp_path)
    env = {**os.environ, "TRACKD_SIGNING_KEYS": SIGNING_KEYS, "PYTHONPATH": str(sender_dir)}
    return subprocess.run(
        [sys.executable, *python_args, "-c", script], cwd=sender_dir, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def sign_in_sender(tmp_path: Path, campaign: str) -> dict[str, Any]:
    script = SENDER_SCRIPT.format(sender_dir=str(tmp_path / "sender"), campaign=campaign, url=URL)
    done = run_sender(tmp_path, script)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["app_file"] == str(tmp_path / "sender" / "app" / "__init__.py")
    # Only the sender's `app` was ever imported: no trackd `app` module, and no app.tokens/app.urls
    # (which would have raised).
    assert result["app_modules"] == ["app"] and result["trackd_app_modules"] == []
    return result


def test_trackd_links_never_imports_app(tmp_path: Path) -> None:
    """Importing trackd_links (and signing) loads no module named app or app.*: -X importtime lists
    every module imported, and sys.modules every one loaded."""
    script = textwrap.dedent("""
        import sys, trackd_links
        trackd_links.KeyRing.from_specs(["k1:0123456789abcdef"]).sign_click("c", "r", 0, "https://a.example/")
        print(sorted(n for n in sys.modules if n == "app" or n.startswith("app.")))
    """)
    done = run_sender(tmp_path, script, "-X", "importtime")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "trackd_links.tokens" in imported  # the listing is what it claims to be
    assert [m for m in imported if m == "app" or m.startswith("app.")] == []


@pytest.mark.e2e
async def test_signed_beside_a_senders_app_opens_and_redirects(tmp_path: Path, client: httpx.Client,
                                                               db: asyncpg.Connection) -> None:  # fmt: skip
    campaign = f"isolation-{uuid.uuid4()}"
    tokens = sign_in_sender(tmp_path, campaign)

    ring = KeyRing.from_specs(SIGNING_KEYS.split(","))
    click = ring.open(tokens["click"], KIND_CLICK)
    assert click is not None
    assert (click.campaign_id, click.recipient_id, click.link_index, click.url) == (campaign, "r-42", 0, URL)
    assert (click.link_name, click.message_id, click.part, click.honeypot) == ("hero-cta", "m-1", "html", False)
    pixel = ring.open(tokens["open"], KIND_OPEN)
    assert pixel is not None and (pixel.campaign_id, pixel.message_id) == (campaign, "m-1")

    # The server the tests share runs with the same TRACKD_SIGNING_KEYS (tests/support.py).
    redirect = client.get(f"/c/{tokens['click']}")
    assert redirect.status_code == 302 and redirect.headers["location"] == URL
    gif = client.get(f"/o/{tokens['open']}.gif")
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif" and gif.content.startswith(b"GIF")
    # A honeypot link redirects like any other; its click is recorded as a machine's.
    trap = client.get(f"/c/{tokens['honeypot']}", headers={"User-Agent": "Mozilla/5.0 (X11) Firefox/120"})
    assert trap.status_code == 302 and trap.headers["location"] == URL
    await wait_for_count(db, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=3)
    rows = await db.fetch("SELECT kind, link_index, link_name, part, message_id, is_machine, machine_reason"
                          " FROM events WHERE campaign_id = $1 ORDER BY kind, link_index", campaign)  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("click", 0, "hero-cta", "html", "m-1", False, None),
        ("click", 1, None, "html", None, True, "honeypot"),
        ("open", None, None, None, "m-1", False, None),
    ]
