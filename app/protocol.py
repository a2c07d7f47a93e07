"""The hot path below ASGI: tracked requests answered from uvicorn's HTTP parser callbacks.

Through ASGI, every request costs uvicorn a `RequestResponseCycle`, an `asyncio.Event`, a task,
and two messages through `send()` that are checked header by header; for the two routes that
make up nearly all of trackd's traffic that machinery cost more than trackd's own work (side by
side on this machine: ~31 against ~19 CPU µs per click, docs/benchmarks.md). This protocol is
uvicorn's own `HttpToolsProtocol` with one change: when a request's headers are complete and it
is a `GET` or `HEAD` of `/c/{token}` or `/o/{token}.gif`, it lets `HotPath.answer` decide and
record, and once the event-loop tick's journal write has returned writes the response bytes
itself — the same status, headers and body the ASGI path sends. Durability is unchanged: no
response leaves before its event is written.

Every tracked GET or HEAD is decided by `HotPath.answer` — the same call the ASGI path makes —
and answered here: a redirect, the pixel, a bad click's 404 or fallback redirect, an answer
when the journal had no room. Everything else goes through uvicorn untouched, to the ASGI app:
the API, the dashboard, `/metrics`, other methods, a path with percent escapes, a request
pipelined behind one still being answered, a WebSocket upgrade, and tracked requests while
access logging is on (uvicorn's send() writes that line) or while the client is not reading its
answers (uvicorn's send() waits for the buffer to drain). Once `answer()` has run, the request
is answered here: an unexpected error then closes the connection (counted in
`trackd_hot_path_errors_total`, logged once) rather than recording its event a second time
through the ASGI path.
"""

from __future__ import annotations

import asyncio
import functools
from time import perf_counter

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.hotpath import PIXEL_GIF, Answer, HotPath, not_found, pixel_headers, redirect_headers


def _lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


# The response heads, made once from the ASGI path's own headers.
_PIXEL_HEAD = STATUS_LINE[200], _lines(pixel_headers())
_NOT_FOUND_HEAD = STATUS_LINE[404], _lines(not_found()[0])
_NOT_FOUND_TEXT = not_found()[1]
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
        elif path.startswith(b"/o/"):
            kind, token = "open", (path[3:-4] if path.endswith(b".gif") else b"")
        else:
            return False
        if b"%" in token:
            return False  # escapes: uvicorn unquotes them for the ASGI path
        started = perf_counter()
        is_head = method == b"HEAD"
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        try:
            answer = hot.answer(kind, is_head, token.decode("ascii", "replace"), self.headers,
                                self.client[0] if self.client else None)  # fmt: skip
        except Exception:  # raised before anything was appended (answer() appends last)
            hot.unexpected(kind)
            return False
        # From here the request is answered here, whatever happens: its event may be recorded.
        try:
            if kind == "open":
                head, body = _PIXEL_HEAD, PIXEL_GIF
            elif answer.location is None:
                head, body = _NOT_FOUND_HEAD, _NOT_FOUND_TEXT
            else:
                head, body = (STATUS_LINE[302], b"location: " + answer.location + _CLICK_TAIL), b""
            answering = _Answering(keep_alive)
            respond = functools.partial(self._respond, answering, head, b"" if is_head else body, answer, started)
            if answer.written is None:
                self.loop.call_soon(respond, None)  # nothing to wait for (a bad token, no room)
            else:
                answer.written.add_done_callback(respond)
            self.cycle = answering  # type: ignore[assignment]
        except Exception:
            hot.unexpected(kind)
            hot.meter.request(kind, answer.outcome, answer.machine, perf_counter() - started)
            self.transport.close()  # perhaps recorded, not answered: the client's retry is a new request
        return True

    def _respond(self, answering: _Answering, head: tuple[bytes, bytes], body: bytes, answer: Answer,
                 started: float, written: asyncio.Future[bool] | None) -> None:  # fmt: skip
        hot: HotPath = self.app  # type: ignore[assignment]
        outcome = answer.outcome
        if written is not None and (written.cancelled() or written.exception() is not None or not written.result()):
            outcome = "dropped"
            hot.metrics.dropped_error.inc()  # answered all the same, as on the ASGI path
        try:
            self._send(answering, head, body)
        except Exception:
            hot.unexpected(answer.kind)
            self.transport.close()
        finally:
            hot.meter.request(answer.kind, outcome, answer.machine, perf_counter() - started)

    def _send(self, answering: _Answering, head: tuple[bytes, bytes], body: bytes) -> None:
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
