"""The live dashboard, driven in a real headless Chromium: it asks for a key, then its numbers and
charts follow the clicks and opens we send. Also takes the README's screenshot."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.loadclient import Load, signed_paths
from tests.support import API_KEY, ROOT, ServerProcess, embedded_postgres

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's background services would try the network, which this machine does not have.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs the Debian package chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def send(server: ServerProcess, paths: list[str], rate: float = 200) -> None:
    """Send from another thread: the test's own thread is busy driving the browser."""
    runner = threading.Thread(target=asyncio.run, args=(Load("127.0.0.1", server.port, paths, rate=rate).run(),))
    runner.start()
    runner.join(60)


def logged_in(browser: Browser, server: ServerProcess) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.base_url}/dashboard")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#api-key", API_KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#state")).to_have_text("live", timeout=10_000)
    assert errors == []
    return page


def test_page_and_assets_are_served_by_trackd(server: ServerProcess) -> None:
    page = httpx.get(f"{server.base_url}/dashboard")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset in ("dashboard.js", "dashboard.css", "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css"):
        assert httpx.get(f"{server.base_url}/dashboard/assets/{asset}").status_code == 200, asset
    assert httpx.get(f"{server.base_url}/dashboard/assets/../settings.py").status_code == 404


def test_a_wrong_key_is_refused(browser: Browser, server: ServerProcess) -> None:
    page = browser.new_page()
    page.goto(f"{server.base_url}/dashboard")
    page.fill("#api-key", "not-the-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That key was refused.", timeout=10_000)
    page.close()


def test_numbers_and_charts_follow_the_traffic(browser: Browser, server: ServerProcess) -> None:
    campaign = f"dash-{uuid.uuid4().hex[:8]}"
    page = logged_in(browser, server)
    page.fill("#campaign", campaign)
    page.dispatch_event("#campaign", "change")
    expect(page.locator("#clicks-total")).to_have_text("0", timeout=10_000)
    expect(page.locator("#opens-total")).to_have_text("0")

    send(server, signed_paths(campaign, 48, click_share=0.25))  # 12 clicks, 36 opens
    expect(page.locator("#clicks-total")).to_have_text("12", timeout=15_000)
    expect(page.locator("#opens-total")).to_have_text("36", timeout=15_000)
    # The charts (not only the tiles) carry the numbers: what each one plots, summed.
    expect(page.locator("#chart-clicks")).to_have_attribute("data-total", "12")
    expect(page.locator("#chart-opens")).to_have_attribute("data-total", "36")
    for chart in ("opens", "clicks", "lag", "backlog"):
        assert page.locator(f"#chart-{chart} canvas").count() == 1

    send(server, signed_paths(campaign + "-more", 10))
    page.fill("#campaign", "")
    page.dispatch_event("#campaign", "change")
    expect(page.locator("#clicks-total")).not_to_have_text("12", timeout=15_000)
    page.close()


def fleet(server: ServerProcess) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    answer = httpx.get(f"{server.base_url}/v1/fleet", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started, answer.json()


def test_one_pods_page_shows_every_pods_backlog_and_says_when_postgresql_is_down(
    browser: Browser, tmp_path: Path
) -> None:
    """Two trackd processes (two pods) on one PostgreSQL of this test's own: the page served by
    one lists both, from the heartbeats in PostgreSQL. Then PostgreSQL stops: the page says so
    in words (and /v1/fleet answers at once, no 500), with this pod's backlog still counted; and
    once PostgreSQL is back, the page is live again and the backlog drains."""
    with embedded_postgres() as pg:
        a = ServerProcess(tmp_path / "a", pg.dsn, env={"TRACKD_DB_STATEMENT_TIMEOUT_MS": "2000"}).start()
        b = ServerProcess(tmp_path / "b", pg.dsn, env={"TRACKD_DB_STATEMENT_TIMEOUT_MS": "2000"}).start()
        try:
            page = logged_in(browser, a)
            pods = page.locator("#pods tbody tr.reporting")
            expect(pods).to_have_count(2, timeout=20_000)
            expect(page.locator("#pods")).to_have_attribute("data-reporting", "2")
            instances = [pods.nth(i).get_attribute("data-instance") for i in range(2)]
            assert {int(str(i).rsplit(":", 1)[1]) for i in instances} == {a.proc.pid, b.proc.pid}
            for i in range(2):
                assert pods.nth(i).get_attribute("data-backlog") == "0"
            expect(page.locator("#db-down")).to_be_hidden()
            _, answer = fleet(a)
            assert answer["database"] == "ok" and len(answer["pods"]) == 2

            pg.stop("immediate")
            expect(page.locator("#state")).to_have_text("PostgreSQL unreachable", timeout=15_000)
            down = page.locator("#db-down")
            expect(down).to_be_visible()
            expect(down).to_contain_text("PostgreSQL unreachable since ")
            expect(down).to_contain_text("events are safe in the pods' journals")
            expect(page.locator("#opens-total")).to_have_text("\u2013")  # a dash, not a stale or blank number
            took, answer = fleet(a)
            assert answer["database"] == "unreachable" and answer["unreachable_since"], answer
            assert took < 3, took
            send(a, signed_paths(f"down-{uuid.uuid4().hex[:8]}", 20))
            expect(page.locator("#backlog-now")).to_have_text("20 rows", timeout=15_000)

            pg.start()
            expect(page.locator("#state")).to_have_text("live", timeout=30_000)
            expect(down).to_be_hidden()
            expect(page.locator("#backlog-now")).to_have_text("0 rows", timeout=30_000)
            expect(page.locator("#pods tbody tr.reporting")).to_have_count(2, timeout=20_000)
            page.close()
        finally:
            a.stop()
            b.stop()


def test_screenshot_for_the_readme(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    """Takes the README's screenshot. It lands in docs/ only with TRACKD_UPDATE_SCREENSHOT=1, so
    that an ordinary `make test` leaves the working tree as it found it."""
    page = logged_in(browser, server)
    for i in range(8):  # some seconds of uneven traffic, so that the charts have a shape
        send(server, signed_paths(f"shot-{i}", 30 + 40 * (i % 3), click_share=0.3), rate=60 + 40 * (i % 3))
    page.wait_for_timeout(2000)
    expect(page.locator("#state")).to_have_text("live")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.close()
    if os.environ.get("TRACKD_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
