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
when the journal had no room. A token has one spelling: a tracked path with a '%' is a bad
token on both paths, and a signed Location with a control or non-ASCII byte is never written (a
bad token too). A tracked request with a body is decided only once its message is complete, so
that a body llhttp refuses (400) records nothing; a request followed by bytes llhttp refuses gets
its answer before the 400. Everything else goes through uvicorn untouched, to the ASGI app:
the API, the dashboard, `/metrics`, other methods, a request
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
import logging
import resource
from time import perf_counter
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.hotpath import PIXEL_GIF, Answer, HotPath, not_found, pixel_headers, redirect_headers
from app.settings import Settings

log = logging.getLogger("trackd.protocol")

# File descriptors kept free below RLIMIT_NOFILE (journal, database pool, logs, the listener).
_FD_RESERVE = 64


class _Limits:
    """The hostile-client limits (docs/reliability.md), read once per process."""

    def __init__(self, settings: Settings) -> None:
        self.target = settings.max_request_target_bytes
        self.headers = settings.max_header_bytes
        # A coarse, linear guard on a whole head still arriving (request line + headers).
        self.head = settings.max_request_target_bytes + settings.max_header_bytes + 1024
        self.timeout = settings.header_timeout_s
        self.pipelined = settings.max_pipelined_requests
        self.write_buffer = settings.max_write_buffer_bytes
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = settings.max_connections
        if soft != resource.RLIM_INFINITY:
            cap = max(1, min(cap, soft - _FD_RESERVE))
        self.connections = cap


@functools.cache
def _limits_from_environment() -> _Limits:
    return _Limits(Settings())


class _Refused(Exception):
    """Raised from a parser callback once the request was refused (and the connection closed)."""


def _plain(status: int, text: bytes) -> bytes:
    return (STATUS_LINE[status] + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(text)).encode() + b"\r\nconnection: close\r\n")  # fmt: skip


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

    __slots__ = ("body", "disconnected", "keep_alive", "message_event", "more_body", "response_complete", "then_400")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.body = b""
        self.more_body = True
        self.message_event = _NOBODY_WAITS
        self.then_400 = False  # bytes after this request were refused: 400 once it is answered


class TrackingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering tracked requests without an ASGI cycle, with
    limits on what one client may cost (docs/reliability.md): the request target and header
    sizes (accumulated linearly), the time a request head may take, the requests and response
    bytes queued per connection, and the open connections per process."""

    _open = 0  # connections open in this process
    _at_cap = False  # the connection cap was reached (logged once until it drops below)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app
        limits = getattr(app, "limits", None)
        self._limits: _Limits = limits if isinstance(limits, _Limits) else _limits_from_environment()
        self._url_parts: list[bytes] = []
        self._url_len = 0
        self._header_len = 0
        self._in_head = False
        self._head_bytes = 0
        self._head_since = 0.0  # loop.time() a request head began arriving; 0: none is
        self._counted = False
        self._held = False
        self._began_here = False
        self._running: Any = None
        self._deferred: functools.partial[bool] | None = None

    def _count(self, reason: str) -> None:
        app = self.app
        if isinstance(app, HotPath):
            app.metrics.client_events.labels(reason).inc()

    # -- connections: the cap, the gauge, the head timeout ------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cls = TrackingProtocol
        if cls._open >= self._limits.connections:
            self._count("connection_limit")
            if not cls._at_cap:
                cls._at_cap = True
                log.warning("connection limit reached (%d open): new connections are closed until some close",
                            cls._open)  # fmt: skip
            transport.abort()
            return
        cls._open += 1
        self._counted = True
        app = self.app
        if isinstance(app, HotPath):
            app.metrics.open_connections.inc()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            cls = TrackingProtocol
            cls._open -= 1
            if cls._at_cap and cls._open < self._limits.connections:
                cls._at_cap = False
            app = self.app
            if isinstance(app, HotPath):
                app.metrics.open_connections.dec()
        self._cancel_head_timer()
        TrackingProtocol._live.discard(self)
        self._gone()
        if exc is not None or (self.cycle is not None and not self.cycle.response_complete):
            self._count("disconnect")
        super().connection_lost(exc)

    # The head timeout costs a request two attribute stores: a timer per request (call_later
    # and cancel) measured as several per cent of a click. One sweep per process checks every
    # connection whose head is still arriving a few times per timeout instead, so a head is
    # given between the timeout and a quarter more.
    _live: set[TrackingProtocol] = set()
    _sweeping: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        if not self._head_since:
            self._head_since = self.loop.time()
        cls = TrackingProtocol
        cls._live.add(self)
        if cls._sweeping is None:
            cls._sweeping = self.loop.call_later(self._limits.timeout / 4, self._sweep, self.loop)

    def _cancel_head_timer(self) -> None:
        self._head_since = 0.0

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        cls = TrackingProtocol
        cls._sweeping = None
        now = loop.time()
        for conn in list(cls._live):
            since = conn._head_since
            if since and now - since > conn._limits.timeout:
                conn._head_timed_out()
        if cls._live:
            cls._sweeping = loop.call_later(self._limits.timeout / 4, self._sweep, loop)

    def _head_timed_out(self) -> None:
        self._head_since = 0.0
        if not self.transport.is_closing():
            self._count("header_timeout")
            self._close_all()

    def _close_all(self) -> None:
        """Close the connection; requests still queued or being answered through ASGI see a
        client that went away (uvicorn's send() then writes nothing), not a write that fails."""
        self._gone()
        self.pipeline.clear()
        self.transport.close()

    def _gone(self) -> None:
        for cycle in (self.cycle, self._running):
            if cycle is not None:
                cycle.disconnected = True
        for queued, _ in self.pipeline:
            queued.disconnected = True

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle  # self.cycle is the newest request, perhaps queued behind this one
        super()._start_asgi_task(cycle, app)

    def _refuse(self, status: int, reason: str, text: bytes) -> None:
        self._count(reason)
        if not self.transport.is_closing():
            parts = [_plain(status, text)]
            for name, value in self.server_state.default_headers:
                parts += (name, b": ", value, b"\r\n")
            parts += (b"\r\n", text)
            self.transport.write(b"".join(parts))
        self._close_all()
        raise _Refused(reason)

    def send_400_response(self, msg: str) -> None:
        self._count("bad_request")
        self._gone()
        super().send_400_response(msg)

    # -- the parser: sizes checked as bytes arrive, accumulated linearly ----------------------

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self._began_here = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused) or self.transport.is_closing():
                return  # refused (answered and closed) in a callback
            cycle = self.cycle
            if isinstance(cycle, _Answering) and not cycle.response_complete:
                # The request before the bad bytes was decided (its event perhaps recorded):
                # its answer goes out first, then the 400 (L2). Nothing queued behind it ran.
                cycle.then_400 = True
                self.pipeline.clear()
                self.flow.pause_reading()
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and not self._began_here and not self.transport.is_closing():
            # Only reads wholly inside one head are counted (a read that began it may hold
            # earlier requests): at most one read past the limit is ever parsed.
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.head:
                try:
                    self._refuse(431, "headers_too_large", b"Request header fields too large.\n")
                except _Refused:
                    pass

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_parts = []
        self._url_len = 0
        self._header_len = 0
        self._in_head = True
        self._head_bytes = 0
        self._began_here = True
        self._head_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url_len += len(url)
        if self._url_len > self._limits.target:
            self._refuse(414, "target_too_long", b"Request target too long.\n")
        self._url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_len += len(name) + len(value)
        if self._header_len > self._limits.headers:
            self._refuse(431, "headers_too_large", b"Request header fields too large.\n")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        self.url = b"".join(self._url_parts)
        # One pass over the headers for both checks that need them: the Host count, and whether
        # a body follows (then a tracked request is decided only once its message is complete).
        hosts = 0
        body = False
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" \t0")):
                body = True
        if hosts != 1 and self.parser.get_http_version() == "1.1":
            self._refuse(400, "bad_request", b"Exactly one Host header is required.\n")
        if not self._answer_tracked(body):
            super().on_headers_complete()

    # -- pipelining: stop reading while the client does not keep up ---------------------------

    def on_response_complete(self) -> None:
        # uvicorn's, except that reading resumes only while the queue and the unsent responses
        # are under their limits (uvicorn resumed unconditionally, letting a client that never
        # reads queue hundreds of thousands of requests).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self._maybe_resume()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _maybe_resume(self) -> None:
        try:
            buffered = self.transport.get_write_buffer_size()
        except NotImplementedError:  # a transport that does not say
            buffered = 0
        if len(self.pipeline) < self._limits.pipelined and buffered < self._limits.write_buffer:
            self._held = False
            self.flow.resume_reading()
        else:
            self.flow.pause_reading()
            if not self._held:
                self._held = True
                self._count("pipeline_paused")

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._held and not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._maybe_resume()

    def _answer_tracked(self, body: bool) -> bool:
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
        if body:
            # A body follows: decide (and record) only once the message is complete, so that a
            # request llhttp then refuses (400) records nothing (L2).
            waiting = _Answering(keep_alive)
            waiting.response_complete = True  # its body is skipped, not kept
            self.cycle = waiting  # type: ignore[assignment, unused-ignore]
            self._deferred = functools.partial(self._decide, kind, token, is_head, keep_alive, started)
            return True
        return self._decide(kind, token, is_head, keep_alive, started)

    def on_message_complete(self) -> None:
        deferred = self._deferred
        if deferred is None:
            super().on_message_complete()
            return
        self._deferred = None
        if not deferred() and not self.transport.is_closing():
            self.transport.close()  # answer() failed (counted, logged): no ASGI cycle to take it now

    def _decide(self, kind: str, token: bytes, is_head: bool, keep_alive: bool, started: float) -> bool:
        hot: HotPath = self.app  # type: ignore[assignment, unused-ignore]
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
            self.cycle = answering  # type: ignore[assignment, unused-ignore]
        except Exception:
            hot.unexpected(kind)
            hot.meter.request(kind, answer.outcome, answer.machine, perf_counter() - started)
            self.transport.close()  # perhaps recorded, not answered: the client's retry is a new request
        return True

    def _respond(self, answering: _Answering, head: tuple[bytes, bytes], body: bytes, answer: Answer,
                 started: float, written: asyncio.Future[bool] | None) -> None:  # fmt: skip
        hot: HotPath = self.app  # type: ignore[assignment, unused-ignore]
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
        if answering.then_400:
            if not transport.is_closing():
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if not answering.keep_alive:
            transport.close()
        self.on_response_complete()
