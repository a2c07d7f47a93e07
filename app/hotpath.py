"""The raw ASGI handler for `/c/{token}` (click redirect) and `/o/{token}.gif` (open pixel).

It sits in front of FastAPI so that the requests that make up nearly all traffic pay for no
routing, middleware or dependency injection: verify the token (HMAC, no database), make the
event's `events` row, append it to the journal, answer. The only wait is for this event-loop
tick's single journal write (shared by every request of the tick), so that no client gets a
redirect for an event that is not on disk; the database is never waited for. Everything else
goes to the wrapped app.

It is one coroutine on purpose: each extra layer of `await` costs about a microsecond per
request, measured (docs/benchmarks.md). Under `trackd serve` most tracked requests do not reach
it at all: app.protocol answers them from uvicorn's parser callbacks through `answer()`, and
leaves the rest (other methods, pipelined requests, ...) to this ASGI path. A query string on
a tracked path is ignored; a '%' in its path makes it a bad token (one spelling per token).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import struct
from time import perf_counter, time_ns
from typing import Any, NamedTuple, Protocol

from app.copyrows import RowEncoder
from app.events import EventIds
from app.metrics import HotPathMeter, Metrics
from app.ratelimit import Buckets
from app.verdicts.evidence import (
    ACCEPT_LANGUAGE,
    HEAD,
    PREFETCH,
    PREFETCH_HEADER_SET,
    REASON_BITS,
    SEC_FETCH,
    SEC_FETCH_HEADERS,
    prefetch_in,
)
from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing

log = logging.getLogger("trackd.hotpath")

# A signed Location with a control byte (CR, LF, NUL, ... DEL) or a non-ASCII byte would split
# or corrupt the response head on app.protocol's path: such a click is a bad token (finding L1).
# A space is refused too: docs/tokens.md allows printable ASCII only (the signer never makes one).
_UNSAFE_LOCATION = re.compile(rb"[\x00-\x20\x7f-\xff]")

Scope = dict[str, Any]

# The smallest transparent 1x1 GIF that every mail client renders (43 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")


class ASGIApp(Protocol):
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None: ...


class Recorder(Protocol):
    def append(self, row: bytes, received_us: int) -> asyncio.Future[bool] | None: ...


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": False}


_EMPTY_BODY = _body(b"")
_PIXEL_START = _start(
    200,
    [
        (b"content-type", b"image/gif"),
        (b"content-length", str(len(PIXEL_GIF)).encode()),
        (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
        (b"pragma", b"no-cache"),
        (b"expires", b"0"),
    ],
)
_PIXEL_BODY = _body(PIXEL_GIF)


def pixel_headers() -> list[tuple[bytes, bytes]]:
    """The pixel response's headers (app.protocol writes the same ones)."""
    return list(_PIXEL_START["headers"])


_NOT_FOUND_TEXT = b"Link not found.\n"
_NOT_FOUND_START = _start(
    404,
    [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_NOT_FOUND_TEXT)).encode()),
        (b"cache-control", b"no-store"),
    ],
)
_NOT_FOUND_BODY = _body(_NOT_FOUND_TEXT)


def not_found() -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A click with a bad token and no fallback URL: 404, its headers and text."""
    return list(_NOT_FOUND_START["headers"]), _NOT_FOUND_TEXT


_METHOD_START = _start(405, [(b"allow", b"GET, HEAD"), (b"content-length", b"0"), (b"cache-control", b"no-store")])
_NO_STORE = (b"cache-control", b"no-store")
_NO_BODY = (b"content-length", b"0")


def redirect_headers() -> list[tuple[bytes, bytes]]:
    """A click redirect's headers after its Location (app.protocol writes the same ones)."""
    return [_NO_STORE, _NO_BODY]


# A client field of NULL (TRACKD_IP_MODE=drop): the limit then keys on the peer address.
_NULL_FIELD = b"\xff\xff\xff\xff"


class Answer(NamedTuple):
    """What a tracked request gets, decided once (HotPath.answer) and sent by the ASGI path or by
    app.protocol: for a click, a redirect to `location`, or 404 when it is None; for an open,
    the pixel."""

    kind: str  # "click" or "open"
    location: bytes | None
    written: asyncio.Future[bool] | None  # the journal write to wait for before answering
    outcome: str  # "recorded" (if the write succeeds), "dropped" or "bad_token"
    machine: bool


class HotPath:
    """ASGI app: `/c/` and `/o/` answered here, everything else passed to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        keyring: KeyRing,
        metrics: Metrics,
        meter: HotPathMeter,
        rows: RowEncoder,
        *,
        user_agent_max_bytes: int,
        capture_forwarded_for: bool,
        fallback_url: str | None,
        token_rate: Buckets | None = None,
        client_rate: Buckets | None = None,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.metrics = metrics
        self.meter = meter
        self.rows = rows
        # Set by the lifespan once the journal is open; until then events are counted as dropped.
        self.journal: Recorder | None = None
        self.ids = EventIds()
        # The receipt clock (nanoseconds): replaced only by the labelled evaluation, which replays
        # cases at the times their sources describe (tests/tools/eval_truth.py).
        self.clock = time_ns
        self.ua_max = user_agent_max_bytes
        self.capture_xff = capture_forwarded_for
        self._error_logged = False
        self._fallback = None if fallback_url is None else fallback_url.encode("ascii")
        # Per-token and per-client-address event limits; without them (tests of this class), none.
        unlimited = Buckets(1 << 62, 1e18, max_entries=1)
        self.token_rate = unlimited if token_rate is None else token_rate  # (an empty Buckets is falsy)
        self.client_rate = unlimited if client_rate is None else client_rate

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if path.startswith("/c/"):
            click = True
            token = path[3:]
        elif path.startswith("/o/"):
            click = False
            token = path[3:-4] if path.endswith(".gif") else ""
        else:
            return await self.app(scope, receive, send)
        if b"%" in scope.get("raw_path", b""):
            token = ""  # one spelling per token on the wire: an escaped one is a bad token (L5)
        started = perf_counter()
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await send(_METHOD_START)
            await send(_EMPTY_BODY)
            return
        kind = "click" if click else "open"
        outcome = ""
        machine = False
        try:
            client = scope.get("client")  # optional in ASGI
            answer = self.answer(kind, method == "HEAD", token, scope["headers"], client[0] if client else None)
            machine = answer.machine
            outcome = answer.outcome
            if answer.written is not None and not await asyncio.shield(answer.written):  # shared by the tick
                outcome = "dropped"
                self.metrics.dropped_error.inc()  # answered all the same
            if not click:
                await send(_PIXEL_START)
                await send(_PIXEL_BODY)
            elif answer.location is None:
                await send(_NOT_FOUND_START)
                await send(_NOT_FOUND_BODY)
            else:
                await send({"type": "http.response.start", "status": 302,
                            "headers": [(b"location", answer.location), _NO_STORE, _NO_BODY]})  # fmt: skip
                await send(_EMPTY_BODY)
        except BaseException as exc:
            if outcome:  # the event's fate was settled (recorded or not); only the answer failed
                self.meter.request(kind, outcome, machine, perf_counter() - started)
            if outcome and isinstance(exc, RuntimeError) and "closed" in str(exc):
                # uvicorn's send() wrote to a transport the client (or a 400) already closed:
                # a client event, not a hot-path fault (uvloop raises before connection_lost).
                self.metrics.client_events.labels("disconnect").inc()
                return
            if isinstance(exc, Exception):
                self.unexpected(kind)  # uvicorn answers 500 if no response started
            raise  # a cancellation too (shutdown): counted above if its event was settled
        self.meter.request(kind, outcome, machine, perf_counter() - started)

    def unexpected(self, kind: str) -> None:
        """Nothing on the hot path is expected to fail; if it does, count it (an alert fires on
        any) and log the exception being handled, once: one log line, not a flood."""
        self.metrics.hot_errors[kind].inc()
        if not self._error_logged:
            self._error_logged = True
            log.exception("unexpected error on the %s path (logged once)", kind)

    def answer(self, kind: str, is_head: bool, token: str, headers: list[tuple[bytes, bytes]],
               peer: str | None) -> Answer:  # fmt: skip
        """Verify the token, classify the request and append the event's row to the journal: what
        the client gets, and which journal write it must wait for. Shared by the ASGI path and
        app.protocol, which answers the same requests below ASGI."""
        claims = self.keyring.verify(token, KIND_CLICK if kind == "click" else KIND_OPEN)
        # The headers as a dict (made in C), then a lookup per header the rules read: measured
        # 0.36 us more than the old loop that found only the user agent (docs/benchmarks.md).
        # A repeated header counts by its last value, as before.
        seen = dict(headers)
        ua = seen.get(b"user-agent")
        if ua is not None:
            ua = ua[: self.ua_max]
        xff = seen.get(b"x-forwarded-for") if self.capture_xff else None
        bits = HEAD if is_head else 0
        if b"accept-language" in seen:
            bits |= ACCEPT_LANGUAGE
        if not SEC_FETCH_HEADERS.isdisjoint(seen):
            bits |= SEC_FETCH
        if not PREFETCH_HEADER_SET.isdisjoint(seen) and prefetch_in(seen):
            bits |= PREFETCH
        rows = self.rows
        if claims is None:
            # A bad click goes to the fallback URL or gets a 404; a bad pixel still gets the
            # image: a broken image in the mail helps nobody.
            return Answer(kind, self._fallback, None, "bad_token", rows.agent(kind, bits & REASON_BITS, ua).machine)
        received_us = self.clock() // 1000
        id_hi, id_lo = self.ids.pair(received_us // 1000)
        client = rows.client(peer, xff)
        try:
            if kind == "click":
                bits |= client.click_bits
                agent = rows.agent(kind, bits & REASON_BITS, ua)
                row, location, machine = rows.click_row(id_hi, id_lo, received_us, agent, client, bits, claims, ua)
            else:
                bits |= client.open_bits
                agent = rows.agent(kind, bits & REASON_BITS, ua)
                machine = agent.machine
                row, location = rows.open_row(id_hi, id_lo, received_us, agent.fields, client, bits, claims), b""
        except (IndexError, struct.error):
            # Authentic but not decodable (a length running past the claims, a reserved flag):
            # a bad token (L8).
            return Answer(kind, self._fallback, None, "bad_token", rows.agent(kind, bits & REASON_BITS, ua).machine)
        if kind == "click" and _UNSAFE_LOCATION.search(location) is not None:
            return Answer(kind, self._fallback, None, "bad_token", machine)  # L1
        # One link, or one address, cannot fill the journal (docs/reliability.md): past their
        # burst and rate its events are answered and counted, not kept.
        now = received_us * 1e-6
        if not self.token_rate.take(token, now):
            self.metrics.dropped_rate_token.inc()
            return Answer(kind, location, None, "dropped", machine)
        if not self.client_rate.take(client.field if client.field != _NULL_FIELD else peer, now):
            self.metrics.dropped_rate_client.inc()
            return Answer(kind, location, None, "dropped", machine)
        journal = self.journal
        written = journal.append(row, received_us) if journal is not None else None
        if written is None:
            self.metrics.dropped_full.inc()  # no room (or no journal yet): answered, not recorded
            return Answer(kind, location, None, "dropped", machine)
        return Answer(kind, location, written, "recorded", machine)
