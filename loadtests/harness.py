"""What every benchmark needs around the load generator: an embedded PostgreSQL, `trackd serve`
and the bare ASGI baseline as child processes on loopback, links signed through the API, and the
counters to check against (rows in `events`, trackd's own `/metrics`).

The harness talks to trackd only through HTTP, `/metrics` and PostgreSQL, so it keeps working
whatever the recorder inside `trackd serve` becomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from app.pgserver import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
# Fixed benchmark credentials: the server only ever listens on 127.0.0.1.
SIGNING_KEYS = "b1:bench-signing-secret-0123456789"
API_KEY = "bench-api-key-0123456789"
UNLIMITED_RATES = {
    "TRACKD_TOKEN_EVENT_BURST": "1000000000",
    "TRACKD_TOKEN_EVENTS_PER_S": "1000000000",
    "TRACKD_CLIENT_EVENT_BURST": "1000000000",
    "TRACKD_CLIENT_EVENTS_PER_S": "1000000000",
}
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_postgres(path: Path) -> EmbeddedPostgres:
    """The same durable settings `make run` uses (fast_unsafe=False): the numbers include fsync."""
    pg = EmbeddedPostgres(path, fast_unsafe=False)
    pg.start()
    return pg


class Child:
    """A server child process on loopback whose log goes to a file."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], log_dir: Path,
                 cwd: Path = ROOT) -> None:  # fmt: skip
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}-{port}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + path, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_trackd(database_url: str, data_dir: Path, extra_env: dict[str, str] | None = None, *,
                 root: Path = ROOT, name: str = "trackd") -> Child:  # fmt: skip
    """`trackd serve` of this tree, or of another checkout `root` (loadtests.ab) served with this
    interpreter and its dependencies."""
    port = free_port()
    env = {
        **os.environ,
        **({"PYTHONPATH": str(root)} if root != ROOT else {}),
        "DATABASE_URL": database_url,
        "TRACKD_DATA_DIR": str(data_dir),
        "TRACKD_SIGNING_KEYS": SIGNING_KEYS,
        "TRACKD_API_KEYS": API_KEY,
        "TRACKD_LOG_LEVEL": "warning",
        # wrk replays 1,000 tokens from one address at tens of thousands of requests a second:
        # far past the per-token and per-address event limits, which would drop what the bench
        # counts. The limiter still runs on every request (its cost is in the figures).
        **UNLIMITED_RATES,
        **(extra_env or {}),
    }
    # BENCH_TRACKD_MODULE: another entry point with trackd's CLI (to measure a variant).
    module = os.environ.get("BENCH_TRACKD_MODULE", "app.cli")
    argv = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port", str(port)]
    child = Child(name, argv, port, env, data_dir, cwd=root)
    child.wait_ready("/readyz")
    return child


def start_bare(log_dir: Path) -> Child:
    port = free_port()
    argv = [sys.executable, "-m", "loadtests.bare", "--port", str(port)]
    child = Child("bare", argv, port, dict(os.environ), log_dir)
    child.wait_ready("/healthz")
    return child


@dataclass(frozen=True)
class SignedLinks:
    click_paths: list[str]
    open_paths: list[str]


def sign_through_api(base_url: str, count: int, campaign: str = "bench") -> SignedLinks:
    """`count` recipients, one click link each: `count` click tokens and `count` pixel tokens."""
    clicks: list[str] = []
    opens: list[str] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        for i in range(count):
            url = f"https://shop.example.com/spring-sale/item-{i}?utm_source=mail&utm_campaign={campaign}&r={i}"
            body = {"campaign_id": campaign, "recipient_id": f"r-{i:07d}@example.com", "links": [url]}
            response = client.post("/v1/tracking-urls", json=body)
            response.raise_for_status()
            data = response.json()
            clicks.append(httpx.URL(data["click_urls"][0]).raw_path.decode())
            opens.append(httpx.URL(data["open_url"]).raw_path.decode())
    return SignedLinks(clicks, opens)


_RECORDED = re.compile(r"^trackd_interactions_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


def recorded_total(base_url: str) -> int:
    """Events trackd says it accepted for recording (all kinds and methods), from `/metrics`."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return int(sum(float(v) for labels, v in _RECORDED.findall(text) if 'outcome="recorded"' in labels))


async def count_since(dsn: str, since: float) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM events WHERE occurred_at >= to_timestamp($1)", since)
    finally:
        await conn.close()


async def wait_rows(dsn: str, since: float, expected: int, timeout: float) -> tuple[int, float]:
    """Poll the table until it holds `expected` rows received since `since`.
    Returns (rows found, seconds it took); stops polling after `timeout`."""
    conn = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        while True:
            rows = await conn.fetchval("SELECT count(*) FROM events WHERE occurred_at >= to_timestamp($1)", since)
            elapsed = time.monotonic() - started
            if rows >= expected or elapsed > timeout:
                return rows, elapsed
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


@contextlib.contextmanager
def stack(work_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[tuple[EmbeddedPostgres, Child]]:
    """PostgreSQL + trackd, torn down in reverse order whatever happens."""
    pg = start_postgres(work_dir / "pg")
    try:
        server = start_trackd(pg.dsn, work_dir, extra_env)
        try:
            yield pg, server
        finally:
            server.stop()
    finally:
        pg.stop("fast")
