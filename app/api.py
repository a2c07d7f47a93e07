"""The authenticated `/v1` API and the operational endpoints (FastAPI routers)."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket
import time
import uuid
from typing import Annotated, Any, TypeVar

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import __version__, analytics
from app.analytics import CampaignStats
from app.rewrite_signer import click_url, open_url
from app.services import Services
from trackd_links.tokens import KeyRing, SigningError
from trackd_links.urls import InvalidURL

MAX_LINKS = 1000
M = TypeVar("M", bound=BaseModel)


class ASCIIJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error may echo back input that is not valid UTF-8 (a lone
    surrogate from a JSON escape), and answering must never fail on it."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _large(payload: dict[str, Any]) -> Response:
    """A long answer (1,440 minutes, a feed page of 10,000 events) encoded by orjson in one call:
    returned as a dict, FastAPI would walk it with jsonable_encoder and then json.dumps it, which
    cost more than the query. Only plain values reach here (str, int, bool, None, UUID)."""
    return Response(orjson.dumps(payload), media_type="application/json")


class APIError(Exception):
    """An error answered as `{"error": code, "message": ..., **details}` with `status`."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        body = {"error": self.code, "message": self.message, **self.details}
        return ASCIIJSONResponse(body, status_code=self.status, headers=headers)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services  # set by the lifespan (app.main)
    return svc


def authorised(request: Request, svc: Annotated[Services, Depends(services)]) -> Services:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not svc.api_keys:
        raise APIError(401, "unauthorized", "no API keys are configured (TRACKD_API_KEYS)")
    if scheme.lower() != "bearer" or not key:
        raise APIError(401, "unauthorized", "missing bearer API key")
    given = key.strip().encode("utf-8", "replace")
    # Compare against every key, always, so timing does not reveal which one nearly matched.
    ok = False
    for candidate in svc.api_keys:
        ok |= hmac.compare_digest(given, candidate)
    if not ok:
        raise APIError(401, "unauthorized", "invalid API key")
    return svc


Authorised = Annotated[Services, Depends(authorised)]


class TrackingURLsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    campaign_id: str = Field(min_length=1, max_length=255)
    recipient_id: str = Field(min_length=1, max_length=255)
    links: list[str] = Field(default_factory=list, max_length=MAX_LINKS)
    sent_at: int | None = Field(default=None, ge=0, lt=2**32, description="unix seconds; default now")
    # Links v2 (docs/tokens.md): carried inside the tokens, kept in `events` with every event.
    link_names: list[str | None] | None = Field(
        default=None, max_length=MAX_LINKS,
        description="one name per link (or null), e.g. hero-cta: per-link stats by name, up to 64 bytes",
    )  # fmt: skip
    message_id: str | None = Field(default=None, min_length=1, description="the sender's message id (send logs)")
    honeypot: bool = Field(default=False, description="also return honeypot_url: a link only machines follow")
    honeypot_link: str | None = Field(
        default=None, min_length=1, description="where honeypot_url goes; default the first link"
    )


class TrackingURLsResponse(BaseModel):
    open_url: str
    click_urls: list[str]
    honeypot_url: str | None = None


v1 = APIRouter(prefix="/v1")


# Links signed between two yields to the event loop: a 1,000-link batch of long IRIs takes
# ~0.6 s of CPU, which must not stall the redirects served by the same loop.
SIGN_SLICE = 25


async def _parse_body(request: Request) -> TrackingURLsRequest:
    """The body, parsed only now: after the bearer check (a dependency), so an unauthenticated
    client cannot make trackd parse megabytes of JSON. Errors are answered as FastAPI's own."""
    return parse_json_body(await request.body(), TrackingURLsRequest)


def parse_json_body(raw: bytes, model: type[M]) -> M:
    """`raw` as `model`, errors answered as FastAPI's own (422 with `detail`), or 400."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([error]) from None
    except (RecursionError, UnicodeDecodeError, ValueError):
        raise APIError(400, "bad_request", "there was an error parsing the body") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
        raise RequestValidationError(errors) from None


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI body of a route that parses its own body (after the bearer check)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


_BODY_SCHEMA = _body_schema(TrackingURLsRequest)


@v1.post(
    "/tracking-urls", response_model=TrackingURLsResponse, response_model_exclude_none=True, openapi_extra=_BODY_SCHEMA
)
async def tracking_urls(request: Request, svc: Authorised) -> dict[str, Any]:
    body = await _parse_body(request)
    ring, base = svc.keyring, svc.settings.base_url
    names = body.link_names
    if body.honeypot_link is not None and not body.honeypot:
        raise APIError(422, "invalid_request", 'honeypot_link is given without "honeypot": true')
    if names is not None and len(names) != len(body.links):
        raise APIError(422, "invalid_request", f"link_names has {len(names)} entries for {len(body.links)} links:"
                       " one name (or null) per link")  # fmt: skip
    ids = body.campaign_id, body.recipient_id
    try:
        open_token = ring.sign_open(*ids, sent_at=body.sent_at, message_id=body.message_id)
    except SigningError as exc:
        raise APIError(422, "invalid_request", str(exc)) from None
    click_urls = []
    for index, link in enumerate(body.links):
        if index and index % SIGN_SLICE == 0:
            await asyncio.sleep(0)
        try:
            token = ring.sign_click(*ids, index, link, sent_at=body.sent_at, message_id=body.message_id,
                                    link_name=None if names is None else names[index])  # fmt: skip
        except InvalidURL as exc:
            raise APIError(422, "invalid_link", f"links[{index}]: {exc}", link=link, index=index) from None
        except SigningError as exc:  # the URL passed: the link's name (or the ids) did not
            field = "link_names" if names is not None and names[index] is not None and "link_name" in str(exc) else None
            where = f"{field}[{index}]" if field else f"links[{index}]"
            raise APIError(422, "invalid_request" if field else "invalid_link", f"{where}: {exc}", link=link,
                           index=index, **({"field": field} if field else {})) from None  # fmt: skip
        click_urls.append(click_url(base, token))
    out: dict[str, Any] = {"open_url": open_url(base, open_token), "click_urls": click_urls}
    if body.honeypot:
        out["honeypot_url"] = _honeypot_url(ring, body, base)
    return out


def _honeypot_url(ring: KeyRing, body: TrackingURLsRequest, base: str) -> str:
    """A click URL with the honeypot flag (docs/tokens.md): meant for a link no person sees, so
    its click is recorded as a machine's (reason honeypot). It goes where a real link of the
    email goes (`honeypot_link`, else the first link, else trackd's own base URL), so that a
    scanner sees nothing special; its link index follows the real links'."""
    target = body.honeypot_link if body.honeypot_link is not None else (body.links[0] if body.links else f"{base}/")
    index = min(len(body.links), 0xFFFF)
    try:
        token = ring.sign_click(body.campaign_id, body.recipient_id, index, target, sent_at=body.sent_at,
                                message_id=body.message_id, honeypot=True)  # fmt: skip
    except (InvalidURL, SigningError) as exc:
        raise APIError(422, "invalid_link", f"honeypot_link: {exc}", link=target) from None
    return click_url(base, token)


@v1.get("/campaigns/{campaign_id}/stats", response_model=CampaignStats)
async def campaign_stats(campaign_id: str, svc: Authorised) -> dict[str, Any]:
    """A campaign's totals, uniques, rates, machine reasons and time to first open / click."""
    return analytics.stats(campaign_id, await _fetch(svc, analytics.STATS_SQL, _campaign(campaign_id)))


@v1.get("/campaigns/{campaign_id}/links")
async def campaign_links(campaign_id: str, svc: Authorised) -> dict[str, Any]:
    """Clicks and unique clickers per link, all and people only, ordered by link index."""
    return analytics.links(campaign_id, await _fetch(svc, analytics.LINKS_SQL, _campaign(campaign_id)))


@v1.get("/campaigns/{campaign_id}/series")
async def campaign_series(
    campaign_id: str,
    svc: Authorised,
    interval: Annotated[str, Query(description="minute, hour or day (UTC)")] = "hour",
    since: Annotated[str | None, Query(description="unix seconds or ISO 8601, inclusive")] = None,
    until: Annotated[str | None, Query(description="unix seconds or ISO 8601, exclusive; default now")] = None,
) -> Response:
    """Opens and clicks per bucket with data, and the uniques new in each (they add up)."""
    window = analytics.series_window(interval, since, until, time.time())
    rows = await _fetch(svc, window.interval.sql, *analytics.series_args(_campaign(campaign_id) or "", window))
    return _large(analytics.series(campaign_id, window, rows))


@v1.post("/campaigns/{campaign_id}/sends", status_code=201,
         openapi_extra=_body_schema(analytics.SendsReport))  # fmt: skip
async def campaign_sends(campaign_id: str, request: Request, response: Response, svc: Authorised) -> dict[str, Any]:
    """Record how many messages went out (the denominator of open_rate and click_rate); 200
    instead of 201 when this report_id was recorded already."""
    body = parse_json_body(await request.body(), analytics.SendsReport)
    report_id = _text_id("report_id", body.report_id) or str(uuid.uuid4())
    (row,) = await _fetch(svc, analytics.SENDS_SQL, _campaign(campaign_id), report_id, body.messages)
    response.status_code = 201 if row["recorded"] else 200
    return analytics.sends(campaign_id, report_id, row)


@v1.get("/events")
async def event_feed(
    svc: Authorised,
    campaign_id: Annotated[str | None, Query(max_length=255)] = None,
    after: Annotated[str | None, Query(max_length=64, description="the `next` of the previous answer")] = None,
    limit: Annotated[int | None, Query(description=f"default {analytics.FEED_DEFAULT_LIMIT}")] = None,
) -> Response:
    """Every event once, in the order of the transactions that inserted them; resume from `next`."""
    position, count = analytics.decode_cursor(after), analytics.feed_limit(limit)
    campaign = _campaign(campaign_id)
    if campaign is None:
        rows = await _fetch(svc, analytics.FEED_SQL, str(position[0]), position[1], count)
        return _large(analytics.feed(rows, position, count))
    # One campaign: its next batches, then their rows (app.analytics, FEED_CAMPAIGN_SQL).
    batches = await _fetch(svc, analytics.FEED_BATCHES_SQL, *analytics.feed_batches_args(campaign, position, count))
    rows = []
    if batches:
        args = analytics.feed_campaign_args(campaign, batches, position, count)
        rows = await _fetch(svc, analytics.FEED_CAMPAIGN_SQL, *args)
    return _large(analytics.feed(rows, position, count, batches))


@v1.get("/recipients/{recipient_id}")
async def recipient(recipient_id: str, svc: Authorised) -> dict[str, Any]:
    """A recipient's engagement with every campaign, and the links they clicked."""
    rows = await _fetch(svc, analytics.RECIPIENT_SQL, *analytics.recipient_args(_recipient(recipient_id)))
    return analytics.recipient(recipient_id, rows)


@v1.delete("/recipients/{recipient_id}")
async def erase_recipient(recipient_id: str, svc: Authorised) -> dict[str, Any]:
    """Erase a recipient's events in every campaign and their part of every number."""
    (row,) = await _fetch(svc, analytics.ERASE_SQL, _recipient(recipient_id))
    return {"recipient_id": recipient_id, "erased_events": row["erased_events"]}


MAX_SERIES_SECONDS = 3600
DEFAULT_SERIES_SECONDS = 900

_PER_SECOND_SQL = """
SELECT extract(epoch FROM s.second)::bigint AS second,
       coalesce(sum(p.events) FILTER (WHERE p.kind = 'open' AND NOT p.is_machine), 0)::bigint AS opens,
       coalesce(sum(p.events) FILTER (WHERE p.kind = 'click' AND NOT p.is_machine), 0)::bigint AS clicks,
       coalesce(sum(p.events) FILTER (WHERE p.kind = 'open' AND p.is_machine), 0)::bigint AS machine_opens,
       coalesce(sum(p.events) FILTER (WHERE p.kind = 'click' AND p.is_machine), 0)::bigint AS machine_clicks,
       coalesce(max(p.max_lag_ms), 0) AS max_lag_ms
FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 second') AS s(second)
LEFT JOIN interactions_per_second p
       ON p.second = s.second AND ($3::text IS NULL OR p.campaign_id = $3)
GROUP BY s.second ORDER BY s.second
"""


@v1.get("/interactions/per-second")
async def per_second(
    svc: Authorised,
    campaign_id: Annotated[str | None, Query(max_length=255)] = None,
    since: Annotated[float | None, Query(description="unix seconds, inclusive; default until - 900")] = None,
    until: Annotated[float | None, Query(description="unix seconds, inclusive; default now")] = None,
) -> dict[str, Any]:
    """Opens and clicks per second (people and machines apart), every second of the range present
    (zeros where nothing happened), from `interactions_per_second`."""
    end = analytics.instant("until", until, time.time())
    start = analytics.instant("since", since, end.timestamp() - DEFAULT_SERIES_SECONDS + 1)
    if start > end:
        raise APIError(422, "invalid_range", "since must not be after until")
    if (end - start).total_seconds() >= MAX_SERIES_SECONDS:
        raise APIError(422, "invalid_range", f"at most {MAX_SERIES_SECONDS} seconds per request")
    rows = await _fetch(svc, _PER_SECOND_SQL, start, end, _campaign(campaign_id))
    return {
        "campaign_id": campaign_id,
        "since": int(start.timestamp()),
        "until": int(end.timestamp()),
        "series": [dict(r) for r in rows],
    }


def _campaign(campaign_id: str | None) -> str | None:
    return _text_id("campaign_id", campaign_id)


def _recipient(recipient_id: str) -> str:
    return _text_id("recipient_id", recipient_id) or ""


def _text_id(name: str, value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL: refuse it here as bad input, not as a database failure.
    if value is not None and ("\x00" in value or len(value.encode("utf-8", "replace")) > 255):
        raise APIError(422, "invalid_request", f"{name} must be at most 255 bytes, without NUL")
    return value


async def _fetch(svc: Services, sql: str, *args: object) -> list[asyncpg.Record]:
    if svc.pool is None or not svc.schema_ready:
        raise APIError(503, "unavailable", "the database is not reachable yet")
    try:
        return await svc.pool.fetch(sql, *args)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise APIError(503, "unavailable", f"the database did not answer: {type(exc).__name__}") from None


@v1.get("/status")
async def status(svc: Authorised) -> dict[str, Any]:
    """This instance's view: is anything queued up, and how late are we?"""
    writer = svc.writer
    now = time.time()
    oldest = writer.oldest_pending_at() if writer else None
    last = writer.last_commit_at if writer else None
    return {
        "instance": {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__},
        "ready": svc.ready,
        "schema_ready": svc.schema_ready,
        "shutting_down": svc.shutting_down,
        "writer": {
            "state": writer.state if writer else "starting",
            "last_error": writer.last_error if writer else None,
            "last_commit_at": last,
            "last_commit_age_s": None if last is None else round(now - last, 3),
        },
        "backlog": {
            "rows": writer.pending_rows if writer else 0,
            "bytes": writer.pending_bytes() if writer else 0,
            "oldest_pending_age_s": None if oldest is None else round(now - oldest, 3),
            "adopted_journals": len(writer.orphans) if writer else 0,
        },
        "journal": {
            "bytes": svc.journal.own_bytes,
            "max_bytes": svc.journal.max_bytes,
            "full": svc.journal.full,
            "fsync": svc.settings.journal_fsync.value,
        },
    }


@v1.get("/fleet")
async def fleet(svc: Authorised) -> dict[str, Any]:
    """Every pod's backlog (from the heartbeats each writer keeps in PostgreSQL, this pod's live)
    and whether PostgreSQL answers: what /dashboard shows. Never a 500 and never slow: with the
    database unreachable it says so within a second and a half, with this pod's own numbers."""
    if svc.heartbeat is None:
        raise APIError(503, "unavailable", "starting")
    return await svc.heartbeat.fleet()


ops = APIRouter()


@ops.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    return Response(b"ok\n", media_type="text/plain")


@ops.get("/readyz", include_in_schema=False)
async def readyz(svc: Annotated[Services, Depends(services)]) -> JSONResponse:
    writer = svc.writer
    body = {
        "ready": svc.ready,
        "schema_ready": svc.schema_ready,
        "shutting_down": svc.shutting_down,
        "writer": writer.state if writer else "starting",
        "last_commit_age_s": None
        if writer is None or writer.last_commit_at is None
        else round(time.time() - writer.last_commit_at, 3),
        "backlog_rows": writer.pending_rows if writer else None,
        "journal_bytes": svc.journal.own_bytes,
        "journal_full": svc.journal.full,
    }
    return JSONResponse(body, status_code=200 if svc.ready else 503)


@ops.get("/metrics", include_in_schema=False)
async def metrics(request: Request, svc: Annotated[Services, Depends(services)]) -> Response:
    if svc.settings.metrics_port is not None:
        raise APIError(404, "not_found", f"/metrics is served on port {svc.settings.metrics_port}")
    key = svc.settings.metrics_key
    if key is not None:
        # TRACKD_METRICS_KEY: the scraper sends it as a bearer token (Prometheus' `authorization`).
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise APIError(401, "unauthorized", "/metrics needs the bearer key of TRACKD_METRICS_KEY")
    svc.meter.flush()
    return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
