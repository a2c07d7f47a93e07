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
escapes, a request pipelined behind one still being answered, a WebSocket upgrade, and all of
them while access logging is on (uvicorn's send() writes that line) or while the client is not
reading its answers (uvicorn's send() waits for the buffer to drain). Once an event is recorded
here it is answered here: an unexpected error then closes the connection (counted in
`trackd_hot_path_errors_total`, logged once) rather than recording it a second time through
the ASGI path.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.hotpath import PIXEL_GIF, HotPath, pixel_headers, redirect_headers
from app.tokens import KIND_CLICK, KIND_OPEN


def _lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


# The response heads, made once from the ASGI path's own headers.
_PIXEL_HEAD = STATUS_LINE[200], _lines(pixel_headers())
_CLICK_TAIL = b"\r\n" + _lines(redirect_headers())
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
        if not self._answer_tracked():
            super().on_headers_complete()

    def _answer_tracked(self) -> bool:
        """Answer the request now if it is a tracked one this path takes; False leaves it to
        uvicorn (and nothing has been recorded)."""
        hot = self.app
        parser = self.parser
        if (
            not isinstance(hot, HotPath)  # uvicorn wrapped the app (trace logging, proxy headers)
            or self.access_log  # uvicorn's send() writes the access log line: let it
            or self.flow.write_paused  # the client does not read: uvicorn's send() waits for it
            or parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)  # pipelined: uvicorn queues it
        ):
            return False
        method = parser.get_method()
        if method != b"GET" and method != b"HEAD":
            return False
        try:
            path = httptools.parse_url(self.url).path
        except httptools.HttpParserInvalidURLError:
            return False  # uvicorn answers 400
        if not path:
            return False
        if path.startswith(b"/c/"):
            kind, token = "click", path[3:]
        elif path.startswith(b"/o/") and path.endswith(b".gif"):
            kind, token = "open", path[3:-4]
        else:
            return False
        if b"%" in token:
            return False  # escapes: uvicorn unquotes them for the ASGI path
        try:
            return self._record(hot, kind, token, method == b"HEAD")
        except Exception:  # raised before anything was appended (record() appends last)
            hot.unexpected(kind)
            return False

    def _record(self, hot: HotPath, kind: str, token: bytes, is_head: bool) -> bool:
        started = perf_counter()
        payload = hot.keyring.verify(token.decode("ascii", "replace"), KIND_CLICK if kind == "click" else KIND_OPEN)
        if payload is None:
            return False  # the ASGI path answers bad tokens (404, fallback, the image) and counts them
        parser = self.parser
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        agent, location, written = hot.record(kind, is_head, payload, self.headers,
                                              self.client[0] if self.client else None)  # fmt: skip
        if written is None:
            return False  # nothing appended: the ASGI path answers and counts it as dropped
        # From here the event is in this tick's write: it is answered here, whatever happens.
        try:
            answering = _Answering(keep_alive)
            if kind == "click":
                head: tuple[bytes, ...] = (STATUS_LINE[302], b"location: " + location + _CLICK_TAIL)
                body = b""
            else:
                head = _PIXEL_HEAD
                body = b"" if is_head else PIXEL_GIF
            machine = agent.machine
            written.add_done_callback(lambda done: self._respond(done, answering, head, body, kind, machine, started))
            self.cycle = answering  # type: ignore[assignment]
        except Exception:
            hot.unexpected(kind)
            hot.meter.request(kind, "recorded", agent.machine, perf_counter() - started)
            self.transport.close()  # recorded, not answered: the client's retry is a new request
        return True

    def _respond(self, written: asyncio.Future[bool], answering: _Answering, head: tuple[bytes, ...],
                 body: bytes, kind: str, machine: bool, started: float) -> None:  # fmt: skip
        hot: HotPath = self.app  # type: ignore[assignment]
        ok = not written.cancelled() and written.exception() is None and written.result()
        try:
            if not ok:
                hot.metrics.dropped_error.inc()  # answered all the same, as on the ASGI path
            self._send(answering, head, body)
        except Exception:
            hot.unexpected(kind)
            self.transport.close()
        finally:
            hot.meter.request(kind, "recorded" if ok else "dropped", machine, perf_counter() - started)

    def _send(self, answering: _Answering, head: tuple[bytes, ...], body: bytes) -> None:
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
        if not answering.keep_alive:
            transport.close()
        self.on_response_complete()
