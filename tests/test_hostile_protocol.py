"""Hostile clients against a real `trackd serve` (docs/reliability.md, findings H1, H2, M1, M2,
L9 of the hostile-clients review): every limit of app.protocol, spoken to over raw sockets."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from tests.support import SIGNING_KEYS, ServerProcess, metric
from trackd_links.tokens import KeyRing

pytestmark = pytest.mark.e2e

RING = KeyRing.from_specs(SIGNING_KEYS.split(","))
CLICK = f"/c/{RING.sign_click('hostile', 'r-1', 0, 'https://shop.example.com/p')}"
MAX_CONNECTIONS = 20


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServerProcess]:
    env = {"TRACKD_HEADER_TIMEOUT_S": "1", "TRACKD_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    srv = ServerProcess(Path(tmp_path_factory.mktemp("hostile")), database_url, env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


def request(path: str = CLICK, version: str = "1.1", host: str = "Host: t.example\r\n", extra: str = "") -> bytes:
    return f"GET {path} HTTP/{version}\r\n{host}User-Agent: Mozilla/5.0 (X11)\r\n{extra}\r\n".encode()


def connect(server: ServerProcess, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_until_closed(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def click_ms(server: ServerProcess) -> float:
    started = time.perf_counter()
    response = httpx.get(server.base_url + CLICK, timeout=10)
    assert response.status_code == 302
    return (time.perf_counter() - started) * 1000


def client_events(server: ServerProcess, reason: str) -> float:
    try:
        return metric(server.base_url, "trackd_client_events_total", {"reason": reason})
    except KeyError:
        return 0.0


def hot_errors(server: ServerProcess) -> float:
    try:
        return metric(server.base_url, "trackd_hot_path_errors_total")
    except KeyError:
        return 0.0


def test_pipelining_clients_that_never_read_stay_bounded_in_memory(hostile: ServerProcess) -> None:
    """H1 at the issue's numbers: 4 connections with a tiny receive buffer pipeline clicks for
    20 s and never read; RSS grows by < 64 MB and other clients are answered in < 1 s."""
    assert hostile.proc is not None
    proc = psutil.Process(hostile.proc.pid)
    click_ms(hostile)
    rss_before = proc.memory_info().rss
    burst = request() * 2000
    stop = time.monotonic() + 20
    peak = rss_before

    def flood() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", hostile.port))
        sock.settimeout(0.2)
        with contextlib.suppress(OSError), sock:
            while time.monotonic() < stop:
                with contextlib.suppress(TimeoutError):
                    sock.send(burst)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    latencies = []
    while time.monotonic() < stop:
        latencies.append(click_ms(hostile))
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.2)
    for thread in threads:
        thread.join()
    assert (peak - rss_before) < 64 << 20, f"RSS grew by {(peak - rss_before) >> 20} MB"
    assert max(latencies) < 1000, latencies
    # Reading stopped (pipeline_paused), or a head left half-read while paused timed out.
    assert client_events(hostile, "pipeline_paused") + client_events(hostile, "header_timeout") >= 1


STREAM_MB = 128  # finding H2: 128 MB cost 17 s of server CPU and stalled clicks for seconds


@pytest.mark.parametrize(("prefix", "status"), [(f"GET {CLICK}?", 414), (f"GET {CLICK} HTTP/1.1\r\nX-Big: ", 431)])
def test_an_endless_target_or_header_is_refused_in_linear_time(hostile: ServerProcess, prefix: str,
                                                                status: int) -> None:  # fmt: skip
    """H2: a 128 MB target or header streamed in 64 KB writes while another client clicks every
    50 ms: refused early (the server closes long before 128 MB), under 1 s of server CPU, every
    concurrent click answered in < 500 ms."""
    assert hostile.proc is not None
    proc = psutil.Process(hostile.proc.pid)
    click_ms(hostile)
    cpu = proc.cpu_times()
    latencies: list[float] = []
    done = threading.Event()

    def clicks() -> None:
        while not done.is_set():
            latencies.append(click_ms(hostile))
            time.sleep(0.05)

    clicker = threading.Thread(target=clicks)
    clicker.start()
    sock = connect(hostile)
    chunk = b"a" * 65536
    streamed = 0
    started = time.monotonic()
    try:
        with contextlib.suppress(OSError):  # the server closes the connection once it refused
            sock.sendall(prefix.encode())
            for _ in range(STREAM_MB * 16):
                sock.sendall(chunk)
                streamed += len(chunk)
        answer = b""
        with contextlib.suppress(TimeoutError):  # no answer at all: the assertion below says so
            answer = read_until_closed(sock)
        settle = time.monotonic() + 3
        while len(latencies) < 5 and time.monotonic() < settle:  # clicks go on after the refusal too
            time.sleep(0.05)
    finally:
        done.set()
        clicker.join()
        sock.close()
    took = time.monotonic() - started
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:100]
    used = sum(proc.cpu_times()[:2]) - sum(cpu[:2])
    print(f"\n{status}: refused after {streamed >> 20} of {STREAM_MB} MB in {took:.2f} s; server CPU {used:.3f} s; "
          f"{len(latencies)} clicks, max {max(latencies):.1f} ms")  # fmt: skip
    assert streamed < STREAM_MB << 20, "the whole stream was taken: nothing was refused"
    assert used < 1.0, used
    assert len(latencies) >= 5 and max(latencies) < 500, latencies


def test_a_1mb_header_on_a_click_gets_431(hostile: ServerProcess) -> None:
    sock = connect(hostile)
    with contextlib.suppress(OSError):
        sock.sendall(request(extra="X-Big: " + "a" * (1 << 20) + "\r\n"))
    assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    sock.close()


def test_silent_and_half_sent_requests_are_closed_after_the_head_timeout(hostile: ServerProcess) -> None:
    """M1: TRACKD_HEADER_TIMEOUT_S=1 in this server."""
    before = client_events(hostile, "header_timeout")
    silent = connect(hostile)
    half = connect(hostile)
    half.sendall(b"GET /c/AAAA HTTP/1.1\r\nHost: x\r\n")
    after_click = connect(hostile)
    after_click.sendall(request())
    time.sleep(0.3)
    after_click.sendall(b"GET /healthz HTTP/1.1\r\n")  # a second request's head, never finished
    assert closed_within(silent, 4) and closed_within(half, 4) and closed_within(after_click, 4)
    for sock in (silent, half, after_click):
        sock.close()
    assert client_events(hostile, "header_timeout") >= before + 3


def test_connections_past_the_cap_are_closed_counted_and_logged_once(hostile: ServerProcess) -> None:
    before = client_events(hostile, "connection_limit")
    log_before = hostile.log().count("connection limit reached")
    idle = [connect(hostile) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.2)
    refused = [connect(hostile) for _ in range(3)]
    for sock in refused:
        assert closed_within(sock, 2)
        sock.close()
    for sock in idle:
        sock.close()
    time.sleep(0.3)
    assert click_ms(hostile) < 500  # answered again once the idle ones are gone
    assert client_events(hostile, "connection_limit") >= before + 3
    assert hostile.log().count("connection limit reached") == log_before + 1


def test_a_client_breaking_its_connection_is_not_a_hot_path_error(hostile: ServerProcess) -> None:
    """M2: pipelined clicks, then garbage on the same connection, 5 times."""
    errors = hot_errors(hostile)
    bad = client_events(hostile, "bad_request")
    for _ in range(5):
        sock = connect(hostile)
        sock.sendall(request() * 20)
        time.sleep(0.0005)
        with contextlib.suppress(OSError):
            sock.sendall(b"NOT HTTP\x01\r\n\r\n")
        read_until_closed(sock)
        sock.close()
    time.sleep(0.5)
    assert hot_errors(hostile) == errors
    assert client_events(hostile, "bad_request") >= bad + 5
    assert "Traceback" not in hostile.log()


def test_http_1_1_needs_exactly_one_host(hostile: ServerProcess) -> None:
    """L9: no Host, or two, is 400 for HTTP/1.1; HTTP/1.0 without Host is still answered."""
    for head in (request(host=""), request(host="Host: a\r\nHost: b\r\n"), request("/healthz", host="")):
        sock = connect(hostile)
        sock.sendall(head)
        assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
        sock.close()
    sock = connect(hostile)
    sock.sendall(request(version="1.0", host=""))
    assert read_until_closed(sock).startswith(b"HTTP/1.1 302 ")
    sock.close()


def test_idle_keep_alive_is_closed_after_the_keep_alive_timeout(hostile: ServerProcess) -> None:
    """Idle keep-alive is timed by the protocol's sweep (uvicorn's 5 s, no timer per request):
    a connection idle after a click, and one that only ever sends bare CRLFs after it (bytes
    that begin no request), are closed after 5 s and before 5 s plus a sweep period (1/4 of the
    shorter of the head and keep-alive timeouts) and some slack; a connection in use is not."""
    idle, crlf, busy = connect(hostile, timeout=10), connect(hostile, timeout=10), connect(hostile, timeout=10)
    for sock in (idle, crlf, busy):
        sock.sendall(request())
        assert sock.recv(65536).startswith(b"HTTP/1.1 302 ")
    started = time.monotonic()
    closed: dict[str, float] = {}
    while len(closed) < 2 and time.monotonic() - started < 9:
        crlf.sendall(b"\r\n")
        busy.sendall(request())
        assert busy.recv(65536).startswith(b"HTTP/1.1 302 "), "a connection in use was closed"
        for name, sock in (("idle", idle), ("crlf", crlf)):
            if name not in closed and closed_within(sock, 0.01):
                closed[name] = time.monotonic() - started
        time.sleep(0.2)
    for sock in (idle, crlf, busy):
        sock.close()
    assert set(closed) == {"idle", "crlf"}, closed
    assert all(4.8 < seconds < 7.5 for seconds in closed.values()), closed


UPGRADE = (b"GET /healthz HTTP/1.1\r\nHost: t.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip


def test_upgrade_requests_do_not_hold_connection_slots(hostile: ServerProcess) -> None:
    """Review finding: a WebSocket upgrade handed the transport to another protocol, so the
    connection never left the count; MAX_CONNECTIONS of them and every new client was refused.
    trackd has no WebSocket routes: the upgrade is answered as plain HTTP, counted, not logged."""
    before = client_events(hostile, "upgrade_refused")
    for _ in range(MAX_CONNECTIONS + 10):
        sock = connect(hostile)
        sock.sendall(UPGRADE)
        assert sock.recv(65536).startswith(b"HTTP/1.1 "), "no answer to an upgrade request"
        sock.close()
    time.sleep(0.3)
    assert click_ms(hostile) < 500
    assert metric(hostile.base_url, "trackd_open_connections") <= 2
    assert client_events(hostile, "upgrade_refused") >= before + MAX_CONNECTIONS + 10
    assert "Unsupported upgrade request" not in hostile.log()


@pytest.mark.parametrize("head", [
    f"GET {CLICK} HTTP/1.1\r\nHost: t.example\r\nContent-Length: 5\r\n\r\n",
    "POST /v1/tracking-urls HTTP/1.1\r\nHost: t.example\r\nAuthorization: Bearer x\r\nContent-Length: 100\r\n\r\n",
])  # fmt: skip
def test_a_declared_body_never_sent_is_timed_out(hostile: ServerProcess, head: str) -> None:
    """Review finding: a request whose body never came held its connection for good (no head
    timeout after the head, no keep-alive while a request is open). The body must keep arriving:
    TRACKD_HEADER_TIMEOUT_S (1 s here) between reads."""
    sock = connect(hostile)
    sock.sendall(head.encode())
    started = time.monotonic()
    assert closed_within(sock, 4), "a request with its body missing was never closed"
    assert time.monotonic() - started < 3
    sock.close()


def test_a_body_that_keeps_arriving_is_waited_for_past_keep_alive(hostile: ServerProcess) -> None:
    """Review finding (a regression of the keep-alive sweep): a request still arriving behind an
    answered one was closed by the keep-alive timeout (5 s). A body trickling in, a byte every
    0.7 s for 5.6 s, is waited for and answered, after the request before it."""
    sock = connect(hostile, timeout=10)
    sock.sendall(request("/healthz") + f"GET {CLICK} HTTP/1.1\r\nHost: t.example\r\nContent-Length: 8\r\n\r\n".encode())
    for byte in b"12345678":
        time.sleep(0.7)
        sock.sendall(bytes((byte,)))
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"HTTP/1.1 ") < 2 and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        assert chunk, f"closed by the server: {data!r}"
        data += chunk
    sock.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"302"], data


@pytest.mark.parametrize(("bad", "status"), [
    (request(host=""), b"400"),
    (request(path=CLICK + "?" + "x" * 9000), b"414"),
    (request(host="Host: a\r\nHost: b\r\n"), b"400"),
    (request(extra="X-Big: " + "a" * 40_000 + "\r\n"), b"431"),
])  # fmt: skip
def test_a_click_before_a_refused_request_gets_its_answer_first(hostile: ServerProcess, bad: bytes,
                                                                status: bytes) -> None:  # fmt: skip
    """Review finding: a request refused by one of trackd's own limits, pipelined behind a click
    being answered, closed the connection before the click's 302 (whose event was recorded)."""
    data = b""
    sock = connect(hostile)
    with contextlib.suppress(OSError):
        sock.sendall(request() + bad)
    data = read_until_closed(sock)
    sock.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"302", status], data[:300]
