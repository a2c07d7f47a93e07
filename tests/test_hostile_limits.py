"""Hostile-client limits, each on its own, against a real `trackd serve` over real sockets
(docs/reliability.md; findings M4 and H1 of the hostile-clients review):

- one link flooded during a real PostgreSQL outage cannot fill the journal nor take the pod out
  of the Service, and a person's clicks are all kept (the per-token event limit, item 6);
- `trackd_open_connections` reports the connections really open;
- the write-buffer limit alone (the queue limit lifted) stops reading from a client that sends
  one request at a time and never reads its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from app.pgserver import EmbeddedPostgres
from tests.support import SIGNING_KEYS, ServerProcess, embedded_postgres, metric
from trackd_links.tokens import KeyRing

RING = KeyRing.from_specs(SIGNING_KEYS.split(","))
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t.example\r\nUser-Agent: {USER_AGENT}\r\n\r\n".encode()


def dropped(base_url: str, reason: str) -> float:
    return metric(base_url, "trackd_events_dropped_total", {"reason": reason})


def client_events(base_url: str, reason: str) -> float:
    try:
        return metric(base_url, "trackd_client_events_total", {"reason": reason})
    except KeyError:  # a labelled counter has no sample before its first increment
        return 0.0


async def _count(dsn: str, campaign: str, recipient: str | None) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        sql = "SELECT count(*) FROM events WHERE campaign_id = $1 AND ($2::text IS NULL OR recipient_id = $2)"
        return int(await conn.fetchval(sql, campaign, recipient))
    finally:
        await conn.close()


def rows(dsn: str, campaign: str, recipient: str | None = None) -> int:
    return asyncio.run(_count(dsn, campaign, recipient))


def settled_rows(dsn: str, campaign: str, recipient: str | None = None, quiet: float = 0.5) -> int:
    """The row count once it has not changed for `quiet` seconds (the writer flushes every 50 ms)."""
    last = rows(dsn, campaign, recipient)
    while True:
        time.sleep(quiet)
        if (now := rows(dsn, campaign, recipient)) == last:
            return now
        last = now


def wait_rows(dsn: str, campaign: str, expected: int, timeout: float) -> int:
    """Poll `events` until `campaign` has `expected` rows (or the time is up); return the count."""
    deadline = time.monotonic() + timeout
    while (found := rows(dsn, campaign)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


# -- 1. one token flooded while PostgreSQL is really down (M4, item 6) --------------------------

BURST = 20  # TRACKD_TOKEN_EVENT_BURST
PER_S = 2.0  # TRACKD_TOKEN_EVENTS_PER_S
JOURNAL_MAX = 65536  # TRACKD_JOURNAL_MAX_BYTES: a few hundred events, where a flood is thousands
FLOOD_S = 8.0
PIPELINE = 100  # requests per write on a flood connection


@dataclass
class FloodConnection:
    """A keep-alive connection pipelining one click `PIPELINE` at a time, as fast as it is
    answered, and the client-side times that bracket the server's."""

    port: int
    path: str
    until: float
    answered: int = 0
    not_302: int = 0
    started_at: float = 0.0  # before the first request was sent
    first_answer_at: float = 0.0  # when the first answer arrived (the server saw one before)
    last_sent_at: float = 0.0  # before the last batch was sent (the server saw all of it after)
    ended_at: float = 0.0  # when the last answer arrived
    error: str | None = None

    def run(self) -> None:
        batch = get(self.path) * PIPELINE
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.started_at = time.monotonic()
                while time.monotonic() < self.until:
                    self.last_sent_at = time.monotonic()
                    sock.sendall(batch)
                    self._read(sock, PIPELINE)
                self.ended_at = time.monotonic()
        except OSError as exc:
            self.error = repr(exc)

    def _read(self, sock: socket.socket, count: int) -> None:
        pending = b""
        while count:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed by the server")
            if not self.first_answer_at:
                self.first_answer_at = time.monotonic()
            heads = (pending + chunk).split(b"\r\n\r\n")  # a 302 has no body (content-length: 0)
            pending = heads.pop()
            for head in heads:
                self.answered += 1
                self.not_302 += not head.startswith(b"HTTP/1.1 302 ")
            count -= len(heads)


@dataclass
class Watch:
    """/readyz polled every 100 ms from a connection of its own."""

    base_url: str
    until: float
    answers: list[tuple[int, bool | None]] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < self.until:
                response = client.get("/readyz")
                self.answers.append((response.status_code, response.json().get("journal_full")))
                time.sleep(0.1)


@dataclass
class Person:
    """One recipient clicking their own link every 0.4 s."""

    base_url: str
    path: str
    until: float
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5, headers={"User-Agent": USER_AGENT}) as client:
            while time.monotonic() < self.until:
                started = time.perf_counter()
                self.statuses.append(client.get(self.path).status_code)
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.4)


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so that it may be stopped and started."""
    with embedded_postgres() as server:
        yield server


@pytest.mark.faults
def test_one_token_flooded_during_an_outage_cannot_fill_the_journal(tmp_path: Path, pg: EmbeddedPostgres) -> None:
    """PostgreSQL really stopped; one valid click flooded over two keep-alive connections for 8 s
    while a person clicks another link. /readyz stays 200 and never reports a full journal, the
    flood is counted as rate_token drops (never journal_full), the person's clicks are all kept,
    and once PostgreSQL is back `events` holds the person's clicks plus exactly what the token
    bucket lets through: BURST + PER_S x elapsed, bracketed by the client's own clock."""
    env = {
        "TRACKD_JOURNAL_MAX_BYTES": str(JOURNAL_MAX),
        "TRACKD_TOKEN_EVENT_BURST": str(BURST),
        "TRACKD_TOKEN_EVENTS_PER_S": str(PER_S),
        "TRACKD_DB_STATEMENT_TIMEOUT_MS": "2000",
        "TRACKD_FLUSH_INTERVAL_MS": "50",
    }  # the per-address limit stays lifted (tests.support): only the per-token one is tested
    flood_path = "/c/" + RING.sign_click("outage-flood", "attacker", 0, "https://shop.example.com/sale")
    human_path = "/c/" + RING.sign_click("outage-human", "person", 0, "https://shop.example.com/p/1")
    with ServerProcess(tmp_path / "trackd", pg.dsn, env=env) as srv:
        pg.stop("immediate")
        until = time.monotonic() + FLOOD_S
        floods = [FloodConnection(srv.port, flood_path, until) for _ in range(2)]
        person = Person(srv.base_url, human_path, until)
        watch = Watch(srv.base_url, until + 0.5)
        runs = [*(f.run for f in floods), person.run, watch.run]
        threads = [threading.Thread(target=run) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        sent = sum(f.answered for f in floods)
        assert all(f.error is None for f in floods), [f.error for f in floods]
        assert sum(f.not_302 for f in floods) == 0
        clicks = len(person.statuses)
        assert set(person.statuses) == {302} and max(person.latencies) < 1.0, person.latencies
        # Ready throughout, and the journal never full.
        assert len(watch.answers) >= FLOOD_S * 5
        assert set(watch.answers) == {(200, False)}, sorted(set(watch.answers))

        # While PostgreSQL is still down: the flood went to rate_token, nothing to journal_full,
        # and everything answered is accounted for: journaled (the backlog) or dropped by rate.
        by_token = dropped(srv.base_url, "rate_token")
        assert dropped(srv.base_url, "journal_full") == 0
        assert dropped(srv.base_url, "rate_client") == 0
        assert dropped(srv.base_url, "journal_write_error") == 0
        assert by_token > 0
        ready = httpx.get(f"{srv.base_url}/readyz").json()
        assert ready["backlog_rows"] == sent + clicks - by_token, (ready, sent, clicks, by_token)
        assert 0 < ready["journal_bytes"] < JOURNAL_MAX
        # The control: at what one event costs the journal, the flood alone would have filled it
        # many times over had it been journaled (M4: /readyz 503 and real clicks dropped).
        per_event = ready["journal_bytes"] / ready["backlog_rows"]
        assert sent * per_event > 10 * JOURNAL_MAX, (sent, per_event)

        pg.start()
        assert wait_rows(pg.dsn, "outage-human", clicks, timeout=30) == clicks  # every one of them
        kept = sent - round(by_token)
        assert wait_rows(pg.dsn, "outage-flood", kept, timeout=30) == kept  # the rows recount it

    # The bucket starts full (BURST) and refills at PER_S; flooded without pause it never caps,
    # so over the server's span T from the flood's first request to its last refused one,
    # BURST + PER_S*T - 1 < kept <= BURST + PER_S*T. The client's clock brackets T: from the
    # first answer back to the last batch sent (inside), from the first send to the last
    # answer (outside).
    inner = max(f.last_sent_at for f in floods) - min(f.first_answer_at for f in floods)
    outer = max(f.ended_at for f in floods) - min(f.started_at for f in floods)
    low, high = BURST + PER_S * inner - 1, BURST + PER_S * outer
    print(f"\nflood: {sent} clicks in {outer:.2f} s, {kept} kept (bounds {low:.2f} .. {high:.2f}); person: {clicks}")
    assert low <= kept <= high, (kept, low, high)


# -- 2 and 3: a server of this module's own -----------------------------------------------------

# A click whose Location is ~7.8 KB (an IRI path, percent-encoded): few answers fill buffers.
BIG_CLICK = "/c/" + RING.sign_click("write-buffer", "never-reads", 0, "https://shop.example.com/" + "ü" * 1300)
SMALL_CLICK = "/c/" + RING.sign_click("write-buffer", "reads", 0, "https://shop.example.com/p")
WRITE_BUFFER = 4096  # TRACKD_MAX_WRITE_BUFFER_BYTES, its minimum
# uvloop's transport pauses writing past 64 KiB (its default high-water mark): without trackd's
# own limit, that is where a connection whose client does not read stops being read.
UVLOOP_HIGH_WATER = 64 << 10


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServerProcess]:
    env = {
        "TRACKD_MAX_WRITE_BUFFER_BYTES": str(WRITE_BUFFER),
        "TRACKD_MAX_PIPELINED_REQUESTS": "10000",  # the queue limit out of the way
        "TRACKD_MAX_REQUEST_TARGET_BYTES": "16384",  # BIG_CLICK's token
        "TRACKD_HEADER_TIMEOUT_S": "60",  # a head left half-read must not close it meanwhile
    }
    srv = ServerProcess(Path(tmp_path_factory.mktemp("limits")), database_url, env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


def scrape(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name:
            return float(value)
    raise KeyError(name)


def established(server: ServerProcess) -> int:
    """The server process's ESTABLISHED sockets on its HTTP port, as the kernel counts them."""
    assert server.proc is not None
    return sum(1 for c in psutil.Process(server.proc.pid).net_connections("tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port)  # fmt: skip


def settle_gauge(client: httpx.Client, server: ServerProcess, expected: int, timeout: float = 3) -> tuple[float, int]:
    """Scrape until trackd_open_connections is `expected` and the kernel agrees; the last pair."""
    deadline = time.monotonic() + timeout
    while True:
        seen = scrape(client, "trackd_open_connections"), established(server)
        if seen == (expected, expected) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


@pytest.mark.e2e
def test_the_open_connections_gauge_counts_the_real_connections(limits: ServerProcess) -> None:
    """N idle keep-alive sockets move trackd_open_connections by exactly N, scraped over a
    connection of its own (counted too), and it agrees with the kernel's count throughout."""
    n = 25
    with httpx.Client(base_url=limits.base_url, timeout=5) as scraper:
        scrape(scraper, "trackd_open_connections")  # the scraper's own connection is open now
        baseline = established(limits)
        assert settle_gauge(scraper, limits, baseline) == (baseline, baseline)
        idle = []
        try:
            for _ in range(n):
                sock = socket.create_connection(("127.0.0.1", limits.port), timeout=5)
                idle.append(sock)
                sock.sendall(get("/healthz"))  # one answered request: then idle, kept alive
                assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            assert settle_gauge(scraper, limits, baseline + n) == (baseline + n, baseline + n)
        finally:
            for sock in idle:
                sock.close()
        assert settle_gauge(scraper, limits, baseline) == (baseline, baseline)


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int]:
    """(tx_queue, rx_queue) of the ESTABLISHED loopback socket local_port -> remote_port, from
    /proc/net/tcp: bytes not yet acknowledged by the peer, and bytes not yet read by the owner."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if fields[3] == "01" and (local, remote) == (local_port, remote_port):
            tx, rx = fields[4].split(":")
            return int(tx, 16), int(rx, 16)
    raise LookupError(f"no established socket {local_port} -> {remote_port}")


def response_bytes(server: ServerProcess, path: str) -> int:
    """The exact size of one answer to `path` (a 302: its head is all of it)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(get(path))
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 302 ")
    return len(data)


@pytest.mark.e2e
def test_the_write_buffer_limit_alone_stops_reading_from_a_client_that_never_reads(
    limits: ServerProcess, database_url: str
) -> None:
    """One request per round (the queue limit is 10,000: it plays no part), a 4 KB receive
    buffer, never a read. Once the kernel's buffers are full, trackd's own write buffer passes
    TRACKD_MAX_WRITE_BUFFER_BYTES after an answer and reading stops: counted once as
    pipeline_paused, the requests pile up unread in the server's socket, no more are answered,
    and trackd's buffer holds at most the limit plus the answers of the few requests already
    read, far below uvloop's 64 KiB (where reading would stop without the limit). Meanwhile
    other clients are answered in < 1 s."""
    answer = response_bytes(limits, BIG_CLICK)
    before_rows = settled_rows(database_url, "write-buffer", "never-reads")
    paused = client_events(limits.base_url, "pipeline_paused")
    request = get(BIG_CLICK)
    latencies: list[float] = []
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with sock, httpx.Client(base_url=limits.base_url, timeout=5) as other:
        sock.connect(("127.0.0.1", limits.port))
        sock.settimeout(0.05)
        client_port = sock.getsockname()[1]
        deadline = time.monotonic() + 30
        stopped_at = 0.0
        sends = 0
        next_probe = 0.0
        # Sends go on for 1.5 s after reading stopped, so that "stopped" is seen under pressure.
        while time.monotonic() < deadline and not (stopped_at and time.monotonic() > stopped_at + 1.5):
            with contextlib.suppress(TimeoutError):  # the client's own send buffer is full
                sock.sendall(request)
                sends += 1
            time.sleep(0.002)  # one request per round
            # Probed by time, not by count: once the server stops reading, the client's buffers
            # fill and sends stop counting, so a count-based probe could never run again. Every
            # 0.25 s: a probe (a click and a /metrics read) costs tens of ms on a loaded machine,
            # and probing more often starves the sends that are meant to fill the buffers.
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + 0.25
                started = time.perf_counter()
                assert other.get(SMALL_CLICK).status_code == 302
                latencies.append(time.perf_counter() - started)
                if not stopped_at and client_events(limits.base_url, "pipeline_paused") > paused:
                    stopped_at = time.monotonic()
        assert stopped_at, f"reading never stopped after {sends} requests"
        assert client_events(limits.base_url, "pipeline_paused") == paused + 1  # once per stop

        # Answered: one event row per answer (the rate limits are lifted), and no more of them
        # while the client's requests wait unread.
        answered = settled_rows(database_url, "write-buffer", "never-reads") - before_rows
        server_tx, server_rx = tcp_queues(limits.port, client_port)
        _, client_rx = tcp_queues(client_port, limits.port)
        assert server_rx > 4 * len(request), f"only {server_rx} bytes unread: the server is still reading"
        # What the server wrote that is not in the kernel (its socket's unacknowledged bytes and
        # the client's unread ones) is still in trackd's transport buffer.
        in_trackd = answered * answer - server_tx - client_rx
        print(f"\n{sends} sent, {answered} answered ({answer} B each), {in_trackd} B left in trackd's "
              f"buffer, {server_rx} B unread by the server")  # fmt: skip
        assert 0 < in_trackd < WRITE_BUFFER + 4 * answer < UVLOOP_HIGH_WATER, in_trackd
    assert latencies and max(latencies) < 1.0, latencies
