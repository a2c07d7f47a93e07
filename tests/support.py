"""Helpers the tests share: a real trackd server process, and free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx

from app.pgserver import EmbeddedPostgres
from loadtests import harness
from trackd_links.tokens import KIND_CLICK, KeyRing

ROOT = Path(__file__).resolve().parent.parent
SIGNING_KEYS = "k2:test-secret-number-two-abcdef,k1:test-secret-number-one-abcdef"
# What the tests' clients send as a person's browser: since the engagement rules (docs/engagement.md)
# an HTTP library's own user agent (python-httpx/...) is judged a machine's, as it should be.
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
API_KEY = "test-api-key-0123456789"


@contextlib.contextmanager
def postgres_dir() -> Iterator[Path]:
    """A directory for an embedded PostgreSQL's data. Not under pytest's tmp_path: pytest makes
    its base directory 0700 at every session start, which would lock the server's own user out
    whenever another pytest session starts on the same machine."""
    path = Path(tempfile.mkdtemp(prefix="trackd-test-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A started embedded PostgreSQL of its own (fast, and safe against process crashes only),
    stopped and removed afterwards."""
    with postgres_dir() as path:
        server = EmbeddedPostgres(path / "data", fast_unsafe=True)
        server.start()
        try:
            yield server
        finally:
            server.stop("immediate")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every test client comes from 127.0.0.1 and many replay one token: the per-token and per-address
# event limits (docs/reliability.md) would drop the events those tests count. The tests of the
# limits themselves pass their own values in `env`. (The same values the benchmarks use.)
UNLIMITED_RATES = harness.UNLIMITED_RATES


class ServerProcess:
    """`trackd serve` in a child process, on loopback, with its own data directory."""

    def __init__(self, data_dir: Path, database_url: str, env: dict[str, str] | None = None,
                 workers: int = 1) -> None:  # fmt: skip
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "TRACKD_DATA_DIR": str(data_dir),
            "TRACKD_HOST": "127.0.0.1",
            "TRACKD_PORT": str(self.port),
            "TRACKD_SIGNING_KEYS": SIGNING_KEYS,
            "TRACKD_API_KEYS": API_KEY,
            "TRACKD_FLUSH_INTERVAL_MS": "50",
            **UNLIMITED_RATES,
            **(env or {}),
        }
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 30) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--workers", str(self.workers)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self if self.proc else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(*args: object, **kwargs: object) -> Iterator[ServerProcess]:
    server = ServerProcess(*args, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def wait_for_count(conn: asyncpg.Connection, sql: str, *args: object, expected: int,
                         timeout: float = 5.0) -> float:  # fmt: skip
    """Poll until the count query `sql` returns `expected`; return how long it took."""
    started = time.monotonic()
    count = None
    while time.monotonic() - started < timeout:
        count = await conn.fetchval(sql, *args)
        if count == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {expected}, found {count} after {timeout}s: {sql} {args}")


def metric(base_url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample from /metrics (summed over label sets matching `labels`)."""
    total, found = 0.0, False
    for line in httpx.get(f"{base_url}/metrics", timeout=5).text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        series_name, _, label_text = series.partition("{")
        if series_name != name:
            continue
        if labels and not all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            continue
        total += float(value)
        found = True
    if not found:
        raise KeyError(f"no sample {name} {labels or ''} in /metrics")
    return total


def v1_payload(ring: KeyRing, kind: int, campaign: str, recipient: str, url: str | None = None, *,
               link_index: int = 0, sent_at: int | None = None) -> bytes:  # fmt: skip
    """A version 1 token's signed payload (docs/tokens.md, "Version 1"), as format 1 journal
    records of earlier versions hold them."""
    ids = bytes((len(campaign.encode()),)) + campaign.encode() + bytes((len(recipient.encode()),)) + recipient.encode()
    if kind == KIND_CLICK:
        return ring._head(kind, sent_at) + link_index.to_bytes(2, "big") + ids + (url or "").encode("ascii")
    return ring._head(kind, sent_at) + ids


# -- PgBouncer ---------------------------------------------------------------------------------

PGBOUNCER_PACKAGE = "pgbouncer"


def pgbouncer_binary() -> str:
    """The `pgbouncer` binary, or a failure naming the Debian package (`make test` installs it):
    the tests through PgBouncer are never skipped, under CI or not."""
    path = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if path is None:
        raise RuntimeError(
            f"pgbouncer is missing: install the Debian package `{PGBOUNCER_PACKAGE}`"
            f" (apt-get install {PGBOUNCER_PACKAGE}; `make test` does it when root)"
        )
    return path


def with_host_port(dsn: str, host: str, port: int) -> str:
    """`dsn` pointed at another host and port (same user, database and query)."""
    scheme, _, rest = dsn.partition("://")
    userinfo, _, location = rest.rpartition("@")
    _hostport, slash, tail = location.partition("/")
    return f"{scheme}://{userinfo}@{host}:{port}{slash}{tail}"


class PgBouncer:
    """A real pgbouncer in transaction pooling mode in front of one PostgreSQL, as production runs
    it (k8s/examples/pgbouncer.yaml): every client transaction may run on any server connection,
    and `pool_size` server connections per database are all the clients share."""

    def __init__(self, upstream_dsn: str, *, pool_size: int = 1) -> None:
        self.upstream_dsn = upstream_dsn
        self.pool_size = pool_size
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="trackd-test-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self, database_url: str) -> str:
        """The DSN of `database_url`'s database through this pgbouncer."""
        return with_host_port(database_url, "127.0.0.1", self.port)

    def _config(self) -> str:
        upstream = urlsplit(self.upstream_dsn)
        return "\n".join([
            "[databases]",
            # Any database name, on demand: the tests make a fresh database per test.
            f"* = host={upstream.hostname} port={upstream.port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            # The embedded PostgreSQL trusts loopback; pgbouncer's trust still wants the user
            # named in the auth file.
            "auth_type = trust",
            f"auth_file = {self.dir / 'userlist.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            "max_client_conn = 500",
            # What trackd needs is nothing here: it sends only startup parameters PgBouncer
            # tracks itself (app/db.py). Left empty on purpose so that a regression fails.
            "ignore_startup_parameters =",
            f"logfile = {self.dir / 'pgbouncer.log'}",
            f"pidfile = {self.dir / 'pgbouncer.pid'}",
            "admin_users = postgres",
            "",
        ])  # fmt: skip

    def start(self, timeout: float = 15) -> PgBouncer:
        binary = pgbouncer_binary()
        (self.dir / "pgbouncer.ini").write_text(self._config())
        user = urlsplit(self.upstream_dsn).username or "postgres"
        (self.dir / "userlist.txt").write_text(f'"{user}" ""\n')
        args = [binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root; the embedded PostgreSQL's user will do.
            from app.pgserver import _SYSTEM_USER

            self.dir.chmod(0o777)
            for path in self.dir.iterdir():
                path.chmod(0o644)
            args[1:1] = ["-u", _SYSTEM_USER]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=(self.dir / "stderr.log").open("wb"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"pgbouncer not listening after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.dir / "stderr.log", self.dir / "pgbouncer.log")
                         if p.exists())  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def pgbouncer(upstream_dsn: str, *, pool_size: int = 1) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(upstream_dsn, pool_size=pool_size).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
