"""The hot path below ASGI: tracked requests answered from uvicorn's HTTP parser callbacks.

Through ASGI, every request costs uvicorn a `RequestResponseCycle`, an `asyncio.Event`, a task,
and two messages through `send()` that are checked header by header; for the two routes that
make up nearly all of trackd's traffic that machinery cost more than trackd's own work (side by
side on this machine: ~31 against ~19 CPU µs per click, docs/benchmarks.md). This protocol is
uvicorn's own `HttpToolsProtocol` with one change: when a request's headers are complete and it
is a `GET` or `HEAD` of `/c/{token}` or `/o/{token}.gif` whose token verifies, it records the event
through the same `HotPath.record` the ASGI path uses and, once the event-loop tick's journal
write has returned, writes the response bytes itself — the same status, headers and body the ASGI
path sends. Durability is unchanged: no response leaves before its event is written.

Everything else goes through uvicorn untouched, to the ASGI app: the API, the dashboard,
`/metrics`, and the tracked requests this path leaves alone — a bad token (404, fallback
redirect or the image, counted as such), a full journal, another method, a path with percent
escapes, a request pipelined behind one still being answered, a WebSocket upgrade.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.hotpath import PIXEL_GIF, HotPath, pixel_headers
from app.tokens import KIND_CLICK, KIND_OPEN

log = logging.getLogger("trackd.protocol")

_PIXEL_HEAD = STATUS_LINE[200], b"".join(name + b": " + value + b"\r\n" for name, value in pixel_headers())
_CLICK_TAIL = b"\r\ncache-control: no-store\r\ncontent-length: 0\r\n"
_CLOSE = b"connection: close\r\n"


class _NobodyWaits:
    """uvicorn sets its cycle's event when body bytes arrive or the client goes; no ASGI app
    waits on this one."""

    def set(self) -> None:
        pass


_NOBODY_WAITS = _NobodyWaits()


class _Answering:
    """Stands in for uvicorn's RequestResponseCycle while a tracked response waits for its
    journal write: uvicorn's callbacks (a request body, the client going, shutdown) read and set
    these attributes of the current cycle."""

    __slots__ = ("body", "disconnected", "keep_alive", "message_event", "more_body", "response_complete")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.body = b""
        self.more_body = True
        self.message_event = _NOBODY_WAITS


class TrackingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering tracked requests without an ASGI cycle."""

    def on_headers_complete(self) -> None:
        try:
            taken = self._answer_tracked()
        except Exception:  # never lose a request to this shortcut: let uvicorn and ASGI have it
            log.exception("tracked request left to the ASGI path after an unexpected error")
            taken = False
        if not taken:
            super().on_headers_complete()

    def _answer_tracked(self) -> bool:
        hot = self.app
        parser = self.parser
        if not isinstance(hot, HotPath) or parser.should_upgrade():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind a response not yet sent: uvicorn queues it
        method = parser.get_method()
        if method != b"GET" and method != b"HEAD":
            return False
        path = httptools.parse_url(self.url).path
        if path.startswith(b"/c/"):
            kind, token = "click", path[3:]
        elif path.startswith(b"/o/") and path.endswith(b".gif"):
            kind, token = "open", path[3:-4]
        else:
            return False
        if b"%" in token:
            return False  # escapes: uvicorn unquotes them for the ASGI path
        started = perf_counter()
        payload = hot.keyring.verify(token.decode("ascii", "replace"), KIND_CLICK if kind == "click" else KIND_OPEN)
        if payload is None:
            return False
        agent, location, written = hot.record(
            kind, method == b"HEAD", payload, self.headers, self.client[0] if self.client else None
        )
        if written is None:
            return False  # nothing appended: the ASGI path answers and counts it as dropped
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        answering = self.cycle = _Answering(keep_alive)  # type: ignore[assignment]
        if kind == "click":
            head: tuple[bytes, ...] = (STATUS_LINE[302], b"location: " + location + _CLICK_TAIL)
            body = b""
        else:
            head = _PIXEL_HEAD
            body = b"" if method == b"HEAD" else PIXEL_GIF
        written.add_done_callback(lambda done: self._respond(done, answering, head, body, kind, agent.machine, started))
        return True

    def _respond(self, written: asyncio.Future[bool], answering: _Answering, head: tuple[bytes, ...],
                 body: bytes, kind: str, machine: bool, started: float) -> None:  # fmt: skip
        try:
            self._write_response(written, answering, head, body, kind, machine, started)
        except Exception:  # the event is recorded; the client will retry on a closed connection
            log.exception("could not send a tracked response")
            self.transport.close()

    def _write_response(self, written: asyncio.Future[bool], answering: _Answering, head: tuple[bytes, ...],
                        body: bytes, kind: str, machine: bool, started: float) -> None:  # fmt: skip
        hot: HotPath = self.app  # type: ignore[assignment]
        ok = not written.cancelled() and written.exception() is None and written.result()
        if not ok:
            hot.metrics.dropped_error.inc()  # answered all the same, as on the ASGI path
        transport = self.transport
        if not transport.is_closing():
            # uvicorn's default headers (date, server if enabled) are read now: they change
            # every second. `keep_alive` may have been turned off meanwhile by a shutdown.
            parts = [head[0]]
            for name, value in self.server_state.default_headers:
                parts += (name, b": ", value, b"\r\n")
            parts.append(head[1])
            if not answering.keep_alive:
                parts.append(_CLOSE)
            parts += (b"\r\n", body)
            transport.write(b"".join(parts))
        answering.response_complete = True
        answering.message_event.set()
        hot.meter.request(kind, "recorded" if ok else "dropped", machine, perf_counter() - started)
        if not answering.keep_alive:
            transport.close()
        self.on_response_complete()
