"""Tracked requests answered from uvicorn's parser callbacks, without an ASGI cycle.

Every tracked GET or HEAD is decided by `HotPath.answer` (the same call the ASGI path makes) and
answered here: a redirect, the pixel, a bad click's 404 or fallback redirect, an answer when the
journal had no room. A token has one spelling: a tracked path with a '%' is a bad token on both
paths, and a signed Location with a control or non-ASCII byte is never written (a bad token too).
A tracked request with a body is decided only once its message is complete, so that a body
llhttp refuses (400) records nothing; a request followed by bytes llhttp refuses gets its answer
before the 400. Left to uvicorn, untouched: the API, the dashboard, `/metrics`, other methods, a
request pipelined behind one still being answered, a WebSocket upgrade, and tracked requests
while access logging is on (uvicorn's send() writes that line) or while the client is not
reading its answers (uvicorn's send() waits for the buffer to drain). Once `answer()` has run
the request is answered here: an unexpected error then closes the connection (counted in
`trackd_hot_path_errors_total`, logged once) rather than recording its event a second time
through the ASGI path.

Written for speed (docs/benchmarks.md): each Python call per request shows in the throughput
ratio, so the work is in few functions and what can be made at import is (app.protocol.wire).
"""

from __future__ import annotations

import asyncio
import functools
from time import perf_counter
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.hotpath import Answer, HotPath
from app.protocol import wire
from app.protocol.guarded import GuardedProtocol


class _NobodyWaits:
    """uvicorn sets its cycle's event when body bytes arrive or the client goes; no ASGI app
    waits on this one."""

    def set(self) -> None:
        pass


_NOBODY_WAITS = _NobodyWaits()


class Answering:
    """Stands in for uvicorn's RequestResponseCycle while a tracked response waits for its
    journal write: uvicorn's callbacks (a request body, the client going, shutdown) read and set
    these attributes of the current cycle."""

    __slots__ = ("body", "disconnected", "keep_alive", "message_event", "more_body", "response_complete", "then")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.body = b""
        self.more_body = True
        self.message_event = _NOBODY_WAITS
        # The request after this one was refused (llhttp's 400, a limit's 414/431/400): that
        # answer, written once this one's is, then the connection closes.
        self.then: bytes | None = None


class TrackingProtocol(GuardedProtocol):
    """GuardedProtocol (uvicorn's, with limits per client) answering tracked requests itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: functools.partial[bool] | None = None

    def answer_pending_then(self, refusal_bytes: bytes) -> bool:
        cycle = self.cycle
        if isinstance(cycle, Answering) and not cycle.response_complete:
            # The request before the refused one was decided (its event perhaps recorded): its
            # answer goes out first, then the refusal (L2). Nothing queued behind it ran.
            cycle.then = refusal_bytes
            self.pipeline.clear()
            self.flow.pause_reading()
            return True
        return False

    def answer_here(self) -> bool:
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
            kind = "click"
        elif path.startswith(b"/o/"):
            kind = "open"
        else:
            return False
        if b"%" in path:
            token = b""  # one spelling per token on the wire: an escaped one is a bad token (L5)
        elif kind == "click":
            token = path[3:]
        else:
            token = path[3:-4] if path.endswith(b".gif") else b""
        started = perf_counter()
        is_head = method == b"HEAD"
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        if self._body:
            # A body follows: decide (and record) only once the message is complete, so that a
            # request llhttp then refuses (400) records nothing (L2).
            waiting = Answering(keep_alive)
            waiting.response_complete = True  # its body is skipped, not kept
            self.cycle = waiting  # type: ignore[assignment]
            if self.expect_100_continue and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # or a strict client never sends it
            self._deferred = functools.partial(self._decide, kind, token, is_head, keep_alive, started)
            return True
        return self._decide(kind, token, is_head, keep_alive, started)

    def on_message_complete(self) -> None:
        if self._in_body:
            self._in_body = False
            self._head_since = 0.0
        deferred = self._deferred
        if deferred is not None:
            self._deferred = None
            if not deferred() and not self.transport.is_closing():
                self.transport.close()  # answer() failed (counted, logged): no ASGI cycle to take it now
            return
        cycle: object = self.cycle  # uvicorn's type for it; ours may stand in (Answering)
        if cycle.__class__ is Answering:
            return  # answered here: no ASGI app waits for the end of its message
        HttpToolsProtocol.on_message_complete(self)

    def _decide(self, kind: str, token: bytes, is_head: bool, keep_alive: bool, started: float) -> bool:
        hot: HotPath = self.app
        try:
            answer = hot.answer(kind, is_head, token.decode("ascii", "replace"), self.headers,
                                self.client[0] if self.client else None)  # fmt: skip
        except Exception:  # raised before anything was appended (answer() appends last)
            hot.unexpected(kind)
            return False
        # From here the request is answered here, whatever happens: its event may be recorded.
        try:
            if kind == "open":
                head, body = wire.PIXEL_HEAD, wire.PIXEL
            elif answer.location is None:
                head, body = wire.NOT_FOUND_HEAD, wire.NOT_FOUND_TEXT
            else:
                head, body = (wire.REDIRECT_LINE, b"location: " + answer.location + wire.REDIRECT_TAIL), b""
            answering = Answering(keep_alive)
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

    def _respond(self, answering: Answering, head: tuple[bytes, bytes], body: bytes, answer: Answer,
                 started: float, written: asyncio.Future[bool] | None) -> None:  # fmt: skip
        hot: HotPath = self.app
        outcome = answer.outcome
        if written is not None and (written.cancelled() or written.exception() is not None or not written.result()):
            outcome = "dropped"
            hot.metrics.dropped_error.inc()  # answered all the same, as on the ASGI path
        transport = self.transport
        try:
            if not transport.is_closing():
                # uvicorn's default headers (date, server if enabled) are read now: they change
                # every second. `keep_alive` may have been turned off meanwhile by a shutdown.
                parts = [head[0]]
                for name, value in self.server_state.default_headers:
                    parts += (name, b": ", value, b"\r\n")
                parts.append(head[1])
                if not answering.keep_alive:
                    parts.append(wire.CLOSE)
                parts += (b"\r\n", body)
                transport.write(b"".join(parts))
            answering.response_complete = True
            if answering.then is not None:
                if not transport.is_closing():
                    transport.write(answering.then)
                self._close_all()
            else:
                if not answering.keep_alive:
                    transport.close()
                self.on_response_complete()
        except Exception:
            hot.unexpected(answer.kind)
            transport.close()
        finally:
            hot.meter.request(answer.kind, outcome, answer.machine, perf_counter() - started)
