"""Tracked requests answered below ASGI (app.protocol), spoken to over raw sockets: the bytes on
the wire, keep-alive, HTTP/1.0, pipelining, HEAD, and the requests it leaves to the ASGI path."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from app.protocol import TrackingProtocol
from tests.support import ServerProcess, metric
from tests.test_hotpath import RING, hot_path

pytestmark = pytest.mark.e2e


def signed(api: httpx.Client, url: str = "https://shop.example.com/p?x=1") -> tuple[str, str]:
    body = {"campaign_id": f"proto-{uuid.uuid4()}", "recipient_id": "r-1", "links": [url]}
    urls = api.post("/v1/tracking-urls", json=body).json()
    return httpx.URL(urls["click_urls"][0]).raw_path.decode(), httpx.URL(urls["open_url"]).raw_path.decode()


def request(path: str, method: str = "GET", version: str = "1.1", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: t.example\r\nUser-Agent: Mozilla/5.0 (X11)\r\n{extra}\r\n".encode()


class Conn:
    """A raw keep-alive connection that reads whole responses (headers + content-length body)."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        return self.sock.recv(1) == b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        assert data, "the server closed the connection"
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


def recorded(server: ServerProcess) -> float:
    return sum(
        metric(server.base_url, "trackd_interactions_total", {"kind": kind, "outcome": "recorded", "machine": machine})
        for kind in ("click", "open")
        for machine in ("true", "false")
    )


def test_a_click_and_a_pixel_on_one_keep_alive_connection(server: ServerProcess, api: httpx.Client) -> None:
    click, pixel = signed(api)
    before = recorded(server)
    conn = Conn(server)
    conn.send(request(click))
    status, headers, body = conn.response()
    assert status == 302 and body == b""
    assert headers["location"] == "https://shop.example.com/p?x=1"
    assert headers["cache-control"] == "no-store" and headers["content-length"] == "0"
    assert "date" in headers and "connection" not in headers
    conn.send(request(pixel))  # the same connection: kept alive
    status, headers, body = conn.response()
    assert status == 200 and headers["content-type"] == "image/gif" and body.startswith(b"GIF89a")
    assert headers["content-length"] == str(len(body)) == "43"
    conn.close()
    deadline = time.monotonic() + 5
    while recorded(server) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorded(server) == before + 2


def test_pipelined_requests_are_answered_in_order(server: ServerProcess, api: httpx.Client) -> None:
    first, pixel = signed(api, "https://a.example/1")
    second, _ = signed(api, "https://b.example/2")
    conn = Conn(server)
    conn.send(request(first) + request(pixel, "HEAD") + request(second) + request("/healthz"))
    assert conn.response()[1]["location"] == "https://a.example/1"
    status, headers, body = conn.response(head_only=True)  # HEAD: the headers of the GIF, no body
    assert status == 200 and headers["content-length"] == "43" and body == b""
    assert conn.response()[1]["location"] == "https://b.example/2"
    assert conn.response()[0] == 200  # an ASGI route after tracked ones, on the same connection
    conn.close()


def test_http_1_0_gets_its_answer_and_the_connection_closed(server: ServerProcess, api: httpx.Client) -> None:
    click, _ = signed(api)
    conn = Conn(server)
    conn.send(request(click, version="1.0"))
    status, headers, _ = conn.response()
    assert status == 302 and headers["connection"] == "close"
    assert conn.closed_by_server()
    conn.close()


def test_what_this_path_leaves_to_asgi_is_answered_the_same(server: ServerProcess, api: httpx.Client) -> None:
    click, pixel = signed(api)
    conn = Conn(server)
    conn.send(request(click))
    direct = conn.response()
    assert direct[0] == 302
    # An escaped character: one spelling per token on the wire (L5), so it is a bad token.
    token = click[3:]
    escaped = f"/c/%{ord(token[0]):02X}{token[1:]}"
    conn.send(request(escaped))
    assert conn.response()[0] == 404
    # Pipelined behind a click, a request goes through the ASGI path, which answers the same way.
    conn.send(request(click) + request(click))
    first, through_asgi = conn.response(), conn.response()
    assert through_asgi[0] == first[0] == 302
    assert {k: v for k, v in through_asgi[1].items() if k != "date"} == {
        k: v for k, v in direct[1].items() if k != "date"
    }
    conn.send(request(click[:-2] + ("AA" if not click.endswith("AA") else "BB")))  # a bad token
    assert conn.response()[0] == 404
    conn.send(request(pixel[:-6] + "x.gif"))  # a bad pixel token still gets the image
    status, _, body = conn.response()
    assert status == 200 and body.startswith(b"GIF89a")
    conn.send(request(click, "POST", extra="Content-Length: 0\r\n"))
    assert conn.response()[0] == 405
    conn.close()


def test_a_tracked_request_with_a_body_is_answered_and_the_body_skipped(
    server: ServerProcess, api: httpx.Client
) -> None:
    click, _ = signed(api)
    conn = Conn(server)
    conn.send(request(click, extra="Content-Length: 5\r\n") + b"hello" + request(click))
    assert conn.response()[0] == 302
    assert conn.response()[0] == 302  # the body was not taken for the next request
    conn.close()


# -- the protocol on its own: which requests skip the ASGI cycle ---------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("198.51.100.7", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connected(hot: object, **options: object) -> tuple[TrackingProtocol, ServerState, FakeTransport]:
    """The protocol on a fake connection, configured as `trackd serve` configures uvicorn."""
    settings: dict[str, object] = {"proxy_headers": False, "access_log": False, **options}
    config = uvicorn.Config(hot, http=TrackingProtocol, log_level="warning", lifespan="off", **settings)  # type: ignore[arg-type]
    config.load()
    state = ServerState()
    protocol = TrackingProtocol(config=config, server_state=state, app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, state, transport


async def test_requests_this_path_must_not_take_go_to_uvicorn() -> None:
    """With access logging on, or a client that does not read its answers, uvicorn's own send()
    has work to do (log the line, wait for the buffer to drain); a malformed target gets
    uvicorn's 400, without a traceback in the log."""
    token = RING.sign_click("c", "r", 0, "https://shop.example/sale")
    click = f"GET /c/{token} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    hot, _, _ = hot_path()
    protocol, state, _ = connected(hot, access_log=True)
    protocol.data_received(click)
    assert len(state.tasks) == 1
    await asyncio.gather(*state.tasks)
    protocol, state, _ = connected(hot)
    protocol.pause_writing()
    protocol.data_received(click)
    assert len(state.tasks) == 1
    protocol.resume_writing()
    await asyncio.gather(*state.tasks)
    protocol, state, transport = connected(hot)
    protocol.data_received(b"GET http://h:99999999/c/x HTTP/1.1\r\nHost: t\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 400") and not state.tasks
    await asyncio.sleep(0.01)
    assert hot.metrics.registry.get_sample_value("trackd_hot_path_errors_total", {"kind": "click"}) == 0


async def test_a_tracked_request_skips_the_asgi_cycle_and_waits_for_its_journal_write() -> None:
    hot, _, journal = hot_path()
    protocol, state, transport = connected(hot)
    written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    journal.append = lambda row, us: (journal.rows.append(row), written)[1]  # type: ignore[method-assign]
    token = RING.sign_click("c", "r", 0, "https://shop.example/sale")
    protocol.data_received(f"GET /c/{token} HTTP/1.1\r\nHost: t\r\nUser-Agent: UA\r\n\r\n".encode())
    assert len(journal.rows) == 1 and not state.tasks  # recorded, and no ASGI task was started
    await asyncio.sleep(0.01)
    assert transport.written == b""  # nothing goes out before the journal write returns
    written.set_result(True)
    await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 302 Found\r\n")
    assert b"\r\nlocation: https://shop.example/sale\r\n" in transport.written and not transport.closing
    bad = f"GET /c/{token[:-2]}xx HTTP/1.1\r\nHost: t\r\nUser-Agent: UA\r\n\r\n".encode()
    protocol.data_received(bad)
    await asyncio.sleep(0)
    assert not state.tasks and len(journal.rows) == 1  # answered here too, and not recorded
    assert transport.written.count(b"HTTP/1.1 ") == 2 and b"404 Not Found" in transport.written
    assert transport.written.endswith(b"\r\n\r\nLink not found.\n")
    recorded = {"kind": "click", "outcome": "bad_token", "machine": "false"}
    hot.meter.flush()
    assert hot.metrics.registry.get_sample_value("trackd_interactions_total", recorded) == 1
