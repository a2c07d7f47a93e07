"""The raw ASGI handlers for `/c/{token}` (click redirect) and `/o/{token}.gif` (open pixel).

They sit in front of FastAPI so that the requests that make up nearly all traffic pay for no
routing, middleware or dependency injection: verify the token (HMAC, no database), append the
event to the journal, answer. The only wait is for this event-loop tick's single journal write
(shared by every request of the tick), so that no client gets a redirect for an event that is
not on disk; the database is never waited for. Everything else goes to the wrapped app.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any, Protocol

from app.classify import is_machine
from app.events import EventIds, RawEvent
from app.metrics import HotPathMeter, Metrics
from app.tokens import KIND_CLICK, KIND_OPEN, KeyRing, click_location

log = logging.getLogger("trackd.hotpath")

Scope = dict[str, Any]

# The smallest transparent 1x1 GIF that every mail client renders (43 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")


class ASGIApp(Protocol):
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None: ...


class Recorder(Protocol):
    def append(self, event: RawEvent) -> asyncio.Future[bool] | None: ...


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
_METHOD_START = _start(405, [(b"allow", b"GET, HEAD"), (b"content-length", b"0"), (b"cache-control", b"no-store")])
_NO_STORE = (b"cache-control", b"no-store")
_NO_BODY = (b"content-length", b"0")


class HotPath:
    """ASGI app: `/c/` and `/o/` answered here, everything else passed to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        keyring: KeyRing,
        metrics: Metrics,
        meter: HotPathMeter,
        *,
        user_agent_max_bytes: int,
        capture_forwarded_for: bool,
        fallback_url: str | None,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.metrics = metrics
        self.meter = meter
        # Set by the lifespan once the journal is open; until then events are counted as dropped.
        self.journal: Recorder | None = None
        self.ids = EventIds()
        self.ua_max = user_agent_max_bytes
        self.capture_xff = capture_forwarded_for
        self._error_logged = False
        self._fallback_start = (
            None
            if fallback_url is None
            else _start(302, [(b"location", fallback_url.encode("ascii")), _NO_STORE, _NO_BODY])
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/c/"):
                return await self._guarded("click", self.click, scope, path[3:], send)
            if path.startswith("/o/"):
                return await self._guarded("open", self.pixel, scope, path[3:], send)
        await self.app(scope, receive, send)

    async def _guarded(self, kind: str, handler: Any, scope: Scope, token: str, send: Any) -> None:
        started = time.perf_counter()
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await send(_METHOD_START)
            await send(_EMPTY_BODY)
            return
        try:
            await handler(scope, token, method == "HEAD", send)
        except Exception:
            # Nothing here is expected to fail; if it does, count it (an alert fires on any) and
            # let uvicorn answer 500 if no response started. One log line, not a flood.
            self.metrics.hot_errors[kind].inc()
            if not self._error_logged:
                self._error_logged = True
                log.exception("unexpected error on the %s path (logged once)", kind)
            raise
        self.meter.duration(kind, time.perf_counter() - started)

    async def _record(self, scope: Scope, kind: str, is_head: bool, payload: bytes) -> None:
        ua = xff = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                ua = value[: self.ua_max]
            elif name == b"x-forwarded-for" and self.capture_xff:
                xff = value
        client = scope.get("client")
        now = time.time()
        event = RawEvent(self.ids.next(now), now, is_head, payload, client[0] if client else None, xff, ua)
        machine = is_machine(kind, is_head, ua)
        journal = self.journal
        written = journal.append(event) if journal is not None else None
        if written is None:
            self.meter.outcome(kind, "dropped", machine)
            self.metrics.dropped_full.inc()
        elif await written:
            self.meter.outcome(kind, "recorded", machine)
        else:
            self.meter.outcome(kind, "dropped", machine)
            self.metrics.dropped_error.inc()

    def _bad_token(self, scope: Scope, kind: str, is_head: bool) -> None:
        ua = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                ua = value[: self.ua_max]
                break
        self.meter.outcome(kind, "bad_token", is_machine(kind, is_head, ua))

    async def click(self, scope: Scope, token: str, is_head: bool, send: Any) -> None:
        payload = self.keyring.verify(token, KIND_CLICK)
        if payload is None:
            self._bad_token(scope, "click", is_head)
            await send(self._fallback_start or _NOT_FOUND_START)
            await send(_EMPTY_BODY if self._fallback_start else _NOT_FOUND_BODY)
            return
        await self._record(scope, "click", is_head, payload)
        await send(_start(302, [(b"location", click_location(payload)), _NO_STORE, _NO_BODY]))
        await send(_EMPTY_BODY)

    async def pixel(self, scope: Scope, name: str, is_head: bool, send: Any) -> None:
        # A bad token still gets the image: a broken image in the mail helps nobody.
        payload = self.keyring.verify(name[:-4], KIND_OPEN) if name.endswith(".gif") else None
        if payload is None:
            self._bad_token(scope, "open", is_head)
        else:
            await self._record(scope, "open", is_head, payload)
        await send(_PIXEL_START)
        await send(_PIXEL_BODY)
