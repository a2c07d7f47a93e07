"""uvicorn's httptools protocol with limits on what one client may cost (docs/reliability.md,
"Hostile clients"): every limit is checked as bytes arrive, in time linear in them.

- The request target and the header block are capped (414, 431) and the whole head still
  arriving is bounded per read, so an endless target or header is refused after a few KiB
  rather than concatenated for seconds (H2).
- A request head must arrive within `TRACKD_HEADER_TIMEOUT_S`; an idle keep-alive connection
  is closed after uvicorn's keep-alive timeout. One sweep per process enforces both: a timer
  per request (uvicorn's `call_later` and `cancel` for keep-alive) cost several per cent of a
  click, the sweep two float stores per request (M1).
- Reading stops while a connection's queued requests or unsent response bytes are over their
  limits, and resumes once the client catches up (H1).
- Past `TRACKD_MAX_CONNECTIONS` open connections, new ones are closed at once, counted, and
  logged once until the count drops below the cap (M1).
- A request refused here, or by llhttp, records nothing and counts a client event, never a
  hot-path error (M2).

uvicorn's own `on_message_begin` builds the ASGI scope of every request; here it is built only
for a request handed to uvicorn (`hand_to_uvicorn`): tracked requests answered below ASGI never
need one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.hotpath import HotPath
from app.protocol.limits import ProcessLimits, process_limits
from app.protocol.wire import refusal

log = logging.getLogger("trackd.protocol")


class _Refused(Exception):
    """Raised from a parser callback once the request was refused (and the connection closed)."""


class GuardedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits: ProcessLimits = process_limits()
        self._header_len = 0
        self._hosts = 0  # Host headers in this request
        self._body = False  # a body follows this request's head
        self._in_head = False
        self._in_body = False  # the head is complete and a body is still arriving
        self._head_bytes = 0
        self._began_here = False  # the current read began a request head
        # loop.time() a request head began arriving (or its body last made progress) / the
        # connection fell idle; 0: it has not.
        self._head_since = 0.0
        self._idle_since = 0.0
        self._counted = False
        self._held = False  # reading stopped for the client's backlog (counted once per stop)
        self._running: Any = None  # the request uvicorn's ASGI task is running

    def count(self, reason: str) -> None:
        app = self.app
        if isinstance(app, HotPath):
            app.metrics.client_events.labels(reason).inc()

    # -- connections: the cap, the gauge, the head and idle timeouts ---------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self._limits
        if len(limits.open) >= limits.connections:
            self.count("connection_limit")
            if not limits.at_cap:
                limits.at_cap = True
                log.warning("connection limit reached (%d open, TRACKD_MAX_CONNECTIONS): new connections are "
                            "closed until some close", len(limits.open))  # fmt: skip
            transport.abort()
            return
        limits.open.add(self)
        self._counted = True
        # The transport pauses writing (and calls resume_writing below a quarter) at the same
        # limit past which on_response_complete stops reading: reading always resumes once the
        # client has caught up (a read limit below the transport's mark could stop for good).
        try:
            transport.set_write_buffer_limits(high=limits.write_buffer)
        except NotImplementedError:  # a transport without flow control (tests' stand-ins)
            pass
        app = self.app
        if isinstance(app, HotPath):
            app.metrics.open_connections.inc()
        self._head_since = self.loop.time()  # a client that connects and says nothing is timed too
        sweeping = limits.sweeping
        if sweeping is None or sweeping.cancelled() or limits.sweep_loop is not self.loop:
            self._schedule_sweep()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._head_since = self._idle_since = 0.0
        self._gone()
        if exc is not None or (self.cycle is not None and not self.cycle.response_complete):
            self.count("disconnect")
        super().connection_lost(exc)

    def _release(self) -> None:
        """This connection no longer counts against the cap or in the gauge."""
        if self._counted:
            self._counted = False
            limits = self._limits
            limits.open.discard(self)
            if limits.at_cap and len(limits.open) < limits.connections:
                limits.at_cap = False
            app = self.app
            if isinstance(app, HotPath):
                app.metrics.open_connections.dec()

    def _schedule_sweep(self) -> None:
        period = min(self._limits.header_timeout, float(self.timeout_keep_alive)) / 4
        limits = self._limits
        if limits.sweeping is not None:
            limits.sweeping.cancel()
        limits.sweep_loop = self.loop  # a process may run more than one loop in turn (tests, embedders)
        limits.sweeping = self.loop.call_later(period, self._sweep, period)

    def _sweep(self, period: float) -> None:
        """Every `period` (a quarter of the shortest timeout): close each connection whose head
        has taken longer than the head timeout, or that has been idle longer than keep-alive.
        A connection gets between its timeout and a quarter more."""
        limits = self._limits
        limits.sweeping = None
        now = self.loop.time()
        head_timeout = limits.header_timeout
        for conn in list(limits.open):
            if conn.loop is not self.loop:  # left over from a loop that has ended
                limits.open.discard(conn)
                continue
            if conn._head_since and now - conn._head_since > head_timeout:
                conn._head_timed_out()
            elif conn._idle_since and now - conn._idle_since > conn.timeout_keep_alive:
                conn._idle_since = 0.0
                conn.timeout_keep_alive_handler()
        if limits.open:
            limits.sweeping = self.loop.call_later(period, self._sweep, period)

    def _head_timed_out(self) -> None:
        self._head_since = 0.0
        if not self.transport.is_closing():
            self.count("header_timeout")
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

    def refuse(self, status: int, reason: str, text: bytes) -> None:
        """Answer `status`, close, and stop the parser (raises _Refused out of its callback). If
        a request before this one is still being answered here, its answer goes first."""
        self.count(reason)
        data = refusal(status, text, self.server_state.default_headers)
        if not self.answer_pending_then(data):
            if not self.transport.is_closing():
                self.transport.write(data)
            self._close_all()
        raise _Refused(reason)

    def send_400_response(self, msg: str) -> None:
        self.count("bad_request")
        self._gone()
        super().send_400_response(msg)

    def answer_pending_then(self, refusal_bytes: bytes) -> bool:
        """A request refused (by a limit or by llhttp) followed one whose answer is still to be
        sent: whether that answer goes first, then `refusal_bytes` and the close (done by
        app.protocol.tracking), rather than the refusal now."""
        return False

    # -- WebSocket upgrades: trackd has no WebSocket routes ------------------------------------

    def handle_websocket_upgrade(self) -> None:
        # The transport goes to another protocol object: connection_lost will not come here,
        # so this connection leaves the count now (or every upgrade would hold a slot for good).
        self._release()
        super().handle_websocket_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn logs two warnings per upgrade request (`trackd serve` runs with ws="none"):
        # one client could flood the log. The request is answered as plain HTTP; count it.
        self.count("upgrade_refused")

    # -- the parser: sizes checked as bytes arrive, accumulated linearly ----------------------

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
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
            if self.answer_pending_then(refusal(400, b"Invalid HTTP request received.",
                                                self.server_state.default_headers)):  # fmt: skip
                self.count("bad_request")
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_body:
            self._head_since = self.loop.time()  # the body made progress: its timeout starts again
        elif self._in_head and not self._began_here and not self.transport.is_closing():
            # Only reads wholly inside one head are counted (a read that began it may hold
            # earlier requests): at most one read past the limit is ever parsed.
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.head:
                try:
                    self.refuse(431, "headers_too_large", b"Request header fields too large.\n")
                except _Refused:
                    pass

    def on_message_begin(self) -> None:
        # uvicorn's, less the ASGI scope (made by hand_to_uvicorn, for the requests that need it).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._header_len = 0
        self._hosts = 0
        self._body = False
        self._in_head = True
        self._head_bytes = 0
        self._began_here = True
        # Timed from here as a head, no longer as idle (bytes that begin no request, such as
        # bare CRLFs, leave a connection idle: it is still closed after keep-alive).
        self._head_since = self.loop.time()
        self._idle_since = 0.0

    def on_url(self, url: bytes) -> None:
        url = self.url + url  # bounded by the limit below, so never quadratic
        if len(url) > self._limits.target:
            self.refuse(414, "target_too_long", b"Request target too long.\n")
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's, plus the size limit and what on_headers_complete needs to know (the Host
        # count; whether a body follows), so that the headers are walked once.
        self._header_len += len(name) + len(value)
        if self._header_len > self._limits.headers:
            self.refuse(431, "headers_too_large", b"Request header fields too large.\n")
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"content-length":
            if value.strip(b" \t0"):
                self._body = True
        elif name == b"transfer-encoding":
            self._body = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._idle_since = 0.0
        if self._body:
            # A body follows: it too must keep arriving (TRACKD_HEADER_TIMEOUT_S between reads),
            # or one declared and never sent would hold the connection for good.
            self._in_body = True
            self._head_since = self.loop.time()
        else:
            self._head_since = 0.0
        if self._hosts != 1 and self.parser.get_http_version() == "1.1":
            self.refuse(400, "bad_request", b"Exactly one Host header is required.\n")
        if not self.answer_here():
            self.hand_to_uvicorn()

    def on_message_complete(self) -> None:
        if self._in_body:
            self._in_body = False
            self._head_since = 0.0
        HttpToolsProtocol.on_message_complete(self)

    def answer_here(self) -> bool:
        """Whether this request is answered below ASGI (app.protocol.tracking); here, never."""
        return False

    def hand_to_uvicorn(self) -> None:
        """The request goes through uvicorn as usual: its ASGI scope (as uvicorn's
        on_message_begin makes it), then uvicorn's on_headers_complete."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        HttpToolsProtocol.on_headers_complete(self)

    # -- pipelining: stop reading while the client does not keep up ---------------------------

    def on_response_complete(self) -> None:
        # uvicorn's, except that reading resumes only while the queue and the unsent responses
        # are under their limits (uvicorn resumed unconditionally, letting a client that never
        # reads queue hundreds of thousands of requests), and that idle keep-alive is timed by
        # the sweep, not by a timer per request.
        self.server_state.total_requests += 1
        transport = self.transport
        if transport.is_closing():
            return
        limits = self._limits
        try:
            buffered = transport.get_write_buffer_size()
        except NotImplementedError:  # a transport that does not say
            buffered = 0
        if len(self.pipeline) < limits.pipelined and buffered <= limits.write_buffer:
            self._held = False
            flow = self.flow
            if flow.read_paused:
                flow.resume_reading()
        else:
            self._hold()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._in_head and not self._in_body:  # else the next request is timed as it arrives
            self._idle_since = self.loop.time()

    def _hold(self) -> None:
        self.flow.pause_reading()
        if not self._held:
            self._held = True
            self.count("pipeline_paused")

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._held and not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            limits = self._limits
            if len(self.pipeline) < limits.pipelined and self.transport.get_write_buffer_size() <= limits.write_buffer:
                self._held = False
                self.flow.resume_reading()
