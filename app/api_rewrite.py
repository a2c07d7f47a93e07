"""`POST /v1/rewrite`: a whole email in (HTML and/or text), the same email out with its links
tracked and an open pixel, for one recipient (engine: app.rewrite; URLs: app.rewrite_signer)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.api import APIError, Authorised, parse_json_body
from app.rewrite import CompiledEmail, OptionsError, Rendered, RewriteOptions, compile_email
from app.rewrite_signer import KeyRingSigner, resolve_sent_at
from trackd_links.tokens import SigningError

log = logging.getLogger("trackd.rewrite")

# Compiling a 2 MB email takes a few hundred milliseconds of CPU: never on the event loop, which
# serves the redirects. A pool of its own, not the loop's default executor, so that a burst of
# rewrites queues here and cannot delay the other work handed to threads (journal syncs); two
# threads, because the GIL lets only one run Python at a time anyway.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="trackd-rewrite")


class _CompiledCache:
    """The last few compiled emails, by content. A sender posts one campaign's email once per
    recipient: compiling it (about 25 ms for 100 KB) every time would be the request's main cost,
    rendering (a few ms) is the rest. Compiling is a pure function of what the key holds, and
    render never changes a CompiledEmail, so sharing one between requests and threads is safe.
    Bounded by entries and by the characters they hold (their chunks are about that size)."""

    def __init__(self, max_entries: int = 16, max_chars: int = 16 << 20) -> None:
        self.max_entries, self.max_chars = max_entries, max_chars
        self._items: OrderedDict[tuple[object, ...], tuple[CompiledEmail, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, html: str | None, text: str | None, options: RewriteOptions, own: tuple[str, ...],
            max_chars: int) -> CompiledEmail:  # fmt: skip
        key = (_digest(html), _digest(text), options, own, max_chars)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        compiled = compile_email(html, text, options, own_prefixes=own, max_chars=max_chars)
        size = len(html or "") + len(text or "")
        with self._lock:
            if key not in self._items and size <= self.max_chars:
                self._items[key] = (compiled, size)
                self._chars += size
                while len(self._items) > self.max_entries or self._chars > self.max_chars:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self._chars -= dropped
        return compiled


def _digest(part: str | None) -> bytes | None:
    # surrogatepass: a part may hold lone surrogates (JSON escapes); they are part of its identity.
    return None if part is None else hashlib.blake2b(part.encode("utf-8", "surrogatepass"), digest_size=20).digest()


_COMPILED = _CompiledCache()


class RewriteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    campaign_id: str = Field(min_length=1, max_length=255)
    recipient_id: str = Field(min_length=1, max_length=255)
    html: str | None = Field(default=None, description="the HTML part, as text (any charset, decoded)")
    text: str | None = Field(default=None, description="the plain-text part")
    sent_at: int | None = Field(default=None, ge=0, lt=2**32, description="unix seconds; default now")
    message_id: str | None = Field(default=None, min_length=1, description="the sender's message id (send logs)")
    options: dict[str, Any] | None = Field(
        default=None,
        description='pixel: "bottom" (default) | "marker" | "none"; text: "off" | "match-html" (default) | "all";'
        " honeypot: bool; list_unsubscribe: [URL] never tracked; skip: [pattern] never tracked",
    )


class RewrittenLink(BaseModel):
    part: str
    index: int
    name: str | None
    url: str
    raw: str
    click_url: str


class SkippedLink(BaseModel):
    part: str
    raw: str
    reason: str


class RewriteResponse(BaseModel):
    html: str | None
    text: str | None
    open_url: str | None
    links: list[RewrittenLink]
    skipped: list[SkippedLink]
    error: str | None = Field(description="null, or why the email came back untouched (fail-open)")


rewrite_router = APIRouter(prefix="/v1")

_BODY_SCHEMA = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": RewriteRequest.model_json_schema()}}}
}


async def _read_capped(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `max_bytes`: from Content-Length
    before reading anything, else while it streams in, so no more than the cap is ever held."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> APIError:
    return APIError(413, "request_entity_too_large",
                    f"POST /v1/rewrite bodies are limited to {max_bytes} bytes (TRACKD_REWRITE_MAX_BYTES)",
                    max_bytes=max_bytes)  # fmt: skip


def rewrite_one(signer: KeyRingSigner, body: RewriteRequest, options: RewriteOptions, sent_at: int,
                max_chars: int) -> dict[str, Any]:  # fmt: skip
    """Compile and render (in a worker thread). The engine fails open by itself; anything it
    raises all the same (a bug, or a signer error it let through) fails open here too: the input
    back untouched with the reason, never half a rewrite and never a 500 for a sender to retry."""
    try:
        compiled = _COMPILED.get(body.html, body.text, options, signer.own_prefixes, max_chars)
        out = compiled.render(signer, body.campaign_id, body.recipient_id, sent_at=sent_at,
                              message_id=body.message_id)  # fmt: skip
    except Exception as exc:
        log.exception("rewrite failed open (campaign %r)", body.campaign_id)
        return {"html": body.html, "text": body.text, "open_url": None, "links": [], "skipped": [],
                "error": f"internal error: {type(exc).__name__}: {exc}"}  # fmt: skip
    return rendered_json(out)


def rendered_json(out: Rendered) -> dict[str, Any]:
    """A rendered email as POST /v1/rewrite answers it (also `trackd rewrite --json` and its manifest)."""
    return {
        "html": out.html,
        "text": out.text,
        "open_url": out.open_url,
        "links": [
            {
                "part": k.part,
                "index": k.index,
                "link_index": k.link_index,
                "name": k.name,
                "url": k.url,
                "raw": k.raw,
                "click_url": k.click_url,
            }
            for k in out.links
        ],
        "skipped": [{"part": s.part, "raw": s.raw, "reason": s.reason} for s in out.skipped],
        "error": out.error,
    }


@rewrite_router.post("/rewrite", response_model=RewriteResponse, openapi_extra=_BODY_SCHEMA)
async def rewrite(request: Request, svc: Authorised) -> Response:
    # `svc` (the bearer check) is resolved before this body runs: nothing is read unauthenticated.
    cap = svc.settings.rewrite_max_bytes
    raw = await _read_capped(request, cap)
    signer = KeyRingSigner(svc.keyring, svc.settings.base_url)
    loop = asyncio.get_running_loop()
    # Everything that costs CPU in proportion to the email (JSON in, compile, render, JSON out)
    # runs in the pool; the loop only reads the body and writes the answer.
    content = await loop.run_in_executor(_POOL, _answer, raw, signer, cap)
    return Response(content, media_type="application/json")


def _answer(raw: bytes, signer: KeyRingSigner, cap: int) -> bytes:
    """The answer's JSON, or the APIError / RequestValidationError for the client (raised through
    the future into the endpoint, so the app's handlers answer them as every other error)."""
    body = parse_json_body(raw, RewriteRequest)
    if body.html is None and body.text is None:
        raise APIError(422, "invalid_request", "give html, text or both", field="html")
    try:
        options = RewriteOptions.parse(body.options)
    except OptionsError as exc:
        field = f"options.{exc.field}"
        raise APIError(422, "invalid_options", f"{field}: {exc.message}", field=field) from None
    sent_at = resolve_sent_at(body.sent_at)
    try:
        # The ids are the same in every token: refused here as the sender's error (422), not
        # discovered link by link inside the engine.
        signer.open_url(campaign_id=body.campaign_id, recipient_id=body.recipient_id, sent_at=sent_at,
                        message_id=body.message_id)  # fmt: skip
    except SigningError as exc:
        raise APIError(422, "invalid_request", str(exc)) from None
    result = rewrite_one(signer, body, options, sent_at, cap)
    # ASCII JSON: a part may hold lone surrogates (JSON escapes) and answering must never fail on them.
    return json.dumps(result, ensure_ascii=True, separators=(",", ":")).encode("ascii")
