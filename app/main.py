"""`create_app(settings)`: the hot path in front of FastAPI, and the lifespan that builds and tears
down everything the app owns (embedded PostgreSQL, journal, pool, writer)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator
from http import HTTPStatus
from types import FrameType
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__, dashboard, metrics_server
from app.analytics import BadQuery
from app.api import APIError, ASCIIJSONResponse, ops, v1
from app.api_rewrite import rewrite_router
from app.copyrows import RowEncoder
from app.db import create_pool, migrate, pending_migrations
from app.heartbeat import Heartbeat
from app.hotpath import HotPath
from app.journal import Journal
from app.lifecycle import LifecycleTask
from app.limits import BodySizeLimit
from app.metrics import HotPathMeter, Metrics
from app.pgserver import EmbeddedPostgres
from app.ratelimit import Buckets
from app.services import Services
from app.settings import Settings
from app.verdicts.deferred import DeferredJudge
from app.verdicts.networks import Networks, NetworksError
from app.writer import Writer
from trackd_links.tokens import KeyRing, load_or_create_dev_key
from trackd_links.urls import to_location

log = logging.getLogger("trackd")

_SCHEMA_RETRY_MAX_S = 5.0


def build_keyring(settings: Settings) -> KeyRing:
    if settings.signing_keys:
        return KeyRing.from_specs(settings.signing_keys)
    log.warning(
        "TRACKD_SIGNING_KEYS is not set: using a development key kept in %s; set real keys in production",
        settings.data_dir,
    )
    return KeyRing([load_or_create_dev_key(settings.data_dir)])


async def _prepare_schema(svc: Services) -> None:
    """Migrate if needed (and allowed), then start the writer. Retries until the database answers
    and the schema is current: until then the hot path keeps answering and events wait in the
    journal."""
    assert svc.pool is not None and svc.writer is not None
    delay = 0.2
    said = ""  # the last explanation logged: said once, not at every retry
    while True:
        try:
            async with svc.pool.acquire() as conn:
                pending = await pending_migrations(conn)
                if pending and svc.settings.migrate:
                    await migrate(conn)
            if pending and not svc.settings.migrate:
                why = (f"waiting for `trackd migrate` (as the owner role) to apply {', '.join(pending)};"
                       " TRACKD_MIGRATE=false, so this server does not migrate")  # fmt: skip
                if why != said:
                    log.warning("%s", why)
                    said = why
                await asyncio.sleep(_SCHEMA_RETRY_MAX_S)  # holding no connection meanwhile
                continue
            break
        except asyncpg.InsufficientPrivilegeError as exc:
            # Serving as the service role with migrations pending: one clear line, then wait.
            why = (f"the database role may not apply migrations ({exc}): run `trackd migrate` as the owner"
                   " role, and set TRACKD_MIGRATE=false for `trackd serve` (docs/database-roles.md)")  # fmt: skip
            if why != said:
                log.error("%s", why)
                said = why
            await asyncio.sleep(_SCHEMA_RETRY_MAX_S)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("database not ready (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(_SCHEMA_RETRY_MAX_S, delay * 2)
    svc.schema_ready = True
    svc.metrics.ready.set(1 if svc.ready else 0)
    svc.writer.start()
    # Only now: before migration 006 there is no table to beat into. A task of its own, so that
    # a heartbeat that fails or hangs never touches the writer's loop.
    assert svc.heartbeat is not None
    svc.heartbeat_task = asyncio.create_task(svc.heartbeat.run(), name="trackd-heartbeat")
    # Partitions ahead, their metrics, retention: also a task of its own (its DDL and DETACH
    # may wait on locks; the writer must not).
    assert svc.lifecycle is not None
    svc.lifecycle_task = asyncio.create_task(svc.lifecycle.run(), name="trackd-lifecycle")
    # Deferred verdicts (migration 011): every pod asks, one call at a time judges.
    assert svc.verdicts is not None
    svc.verdicts_task = asyncio.create_task(svc.verdicts.run(), name="trackd-verdicts")


async def _every_second(svc: Services) -> None:
    """Keep `trackd_ready` current (so that readiness flapping shows in Prometheus), and hand the
    hot path's counts to the metrics (so that other workers' scrapes see them too)."""
    while True:
        svc.metrics.ready.set(1 if svc.ready else 0)
        svc.meter.flush()
        await asyncio.sleep(1)


def _tune_gc() -> None:
    """Everything built so far lives as long as the process: take it out of the cyclic
    collector's view (gc.freeze), and collect the young generation less often. The hot path makes
    a few short-lived tuples per request and no cycles; with the defaults, the collector ran
    every ~700 allocations and its full passes over the long-lived heap showed up in p99.9."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _reload_networks_on_sighup(settings: Settings, rows: RowEncoder) -> None:
    """On SIGHUP, read the network lists again (TRACKD_NETWORKS_FILE edited): a file that does
    not load is logged, in one line, and the lists in use are kept. (Under `trackd serve
    --workers N`, uvicorn's supervisor answers its own SIGHUP by restarting the workers, which
    read the lists as they start; a worker sent SIGHUP itself reloads in place.)"""
    if threading.current_thread() is not threading.main_thread():
        return

    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        # Read off the event loop: a file of thousands of ranges takes a fraction of a second to
        # parse, which would hold every request for as long. The swap is one assignment.
        try:
            networks = await asyncio.to_thread(Networks.load, settings.networks_file)
        except (NetworksError, OSError) as exc:
            log.error("SIGHUP: network lists not reloaded, the ones in use are kept: %s", exc)
            return
        rows.set_networks(networks)
        log.info("SIGHUP: network lists reloaded (%d entries)", len(networks))

    def on_sighup() -> None:
        task = loop.create_task(reload(), name="trackd-reload-networks")
        running.add(task)  # a reference until it is done (the loop keeps only a weak one)
        task.add_done_callback(running.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, on_sighup)


def _announce_shutdown_on_sigterm(svc: Services, delay_s: float) -> None:
    """On SIGTERM, turn /readyz to 503 at once, keep serving for `delay_s`, then hand the signal
    to uvicorn (which stops accepting, finishes in-flight requests and runs our shutdown)."""
    if threading.current_thread() is not threading.main_thread():
        return
    server_handler = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler):
        return
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        svc.shutting_down = True
        # Not .set() here: a signal handler may run while the main thread holds the metric's
        # lock (not reentrant); the loop does it right after.
        loop.call_soon_threadsafe(svc.metrics.ready.set, 0)
        if delay_s > 0:
            loop.call_soon_threadsafe(loop.call_later, delay_s, server_handler, signum, frame)
        else:
            server_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def create_app(settings: Settings | None = None) -> HotPath:
    settings = settings or Settings()
    metrics = Metrics(settings.prometheus_multiproc_dir)
    meter = HotPathMeter(metrics)
    keyring = build_keyring(settings)
    if not settings.api_keys:
        log.warning("TRACKD_API_KEYS is not set: the /v1 API refuses every request")

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        embedded: EmbeddedPostgres | None = None
        dsn = settings.database_url
        if dsn is None:
            embedded = EmbeddedPostgres(settings.data_dir / "pg")
            dsn = await asyncio.to_thread(embedded.start)
            log.info("embedded PostgreSQL at %s (data in %s)", dsn, embedded.pgdata)
        journal = Journal(
            settings.journal_root,
            max_bytes=settings.journal_max_bytes,
            segment_bytes=settings.segment_bytes,
            fsync=settings.journal_fsync,
            fsync_interval_s=settings.journal_fsync_interval_ms / 1000,
        )
        journal.open()
        svc = Services(
            settings=settings,
            keyring=keyring,
            metrics=metrics,
            meter=meter,
            journal=journal,
            api_keys=tuple(k.encode("utf-8") for k in settings.api_keys),
        )
        svc.pool = await create_pool(settings, dsn)
        svc.writer = Writer(settings, journal, svc.pool, metrics)
        svc.heartbeat = Heartbeat(svc.pool, svc.writer)
        svc.lifecycle = LifecycleTask(settings, svc.pool, dsn, metrics)
        svc.verdicts = DeferredJudge(settings, svc.pool, metrics)
        api.state.services = svc
        hot.journal = journal
        schema_task = asyncio.create_task(_prepare_schema(svc), name="trackd-schema")
        every_second = asyncio.create_task(_every_second(svc), name="trackd-every-second")
        metrics_listener = None
        if settings.metrics_port is not None:
            metrics_listener = await metrics_server.start(svc, settings.host, settings.metrics_port)
        _announce_shutdown_on_sigterm(svc, settings.shutdown_delay_s)
        _reload_networks_on_sighup(settings, hot.rows)
        _tune_gc()
        try:
            yield
        finally:
            svc.shutting_down = True
            metrics.ready.set(0)
            if metrics_listener is not None:
                metrics_listener.close()
            for task in (schema_task, every_second):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for side_task in (svc.heartbeat_task, svc.lifecycle_task, svc.verdicts_task):
                if side_task is not None:
                    side_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await side_task
            if svc.schema_ready:
                await svc.writer.stop(settings.shutdown_timeout_s)
                await svc.heartbeat.forget()
            await journal.close()
            if svc.writer.pending_rows:
                log.error("stopped with %d events not yet in PostgreSQL: they stay in %s for the next start",
                          svc.writer.pending_rows, settings.journal_root)  # fmt: skip
            with contextlib.suppress(Exception):
                await asyncio.wait_for(svc.pool.close(), 5)
            meter.flush()
            metrics.process_exiting()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    api = FastAPI(
        title="trackd",
        version=__version__,
        lifespan=lifespan,
        # TRACKD_DOCS_ENABLED=false: no /docs and no /openapi.json (the API's schema) in public.
        docs_url="/docs" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        redoc_url=None,
    )
    api.include_router(v1)
    api.include_router(rewrite_router)
    api.include_router(ops)
    api.include_router(dashboard.router)
    api.mount("/dashboard/assets", dashboard.assets(), name="dashboard-assets")

    @api.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @api.exception_handler(BadQuery)
    async def _bad_query(_: Request, exc: BadQuery) -> JSONResponse:
        # app.analytics validates query parameters without importing the API (which imports it).
        return APIError(exc.status, exc.code, str(exc)).response()

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 404/405/413 in the same JSON shape as every other API error.
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return ASCIIJSONResponse(
            {"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return ASCIIJSONResponse(
            {"error": "invalid_request", "message": "the request body is not valid", "detail": errors},
            status_code=422,
        )

    api.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    Instrumentator(
        should_group_status_codes=False,
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
        registry=metrics.registry,
    ).instrument(api, metric_namespace="trackd", metric_subsystem="api")

    # The address tags must agree across pods: keyed by what every pod shares, the signing key.
    rows = RowEncoder(settings, Networks.load(settings.networks_file), tag_key=keyring.keys[0].secret)
    hot = HotPath(
        api,
        keyring,
        metrics,
        meter,
        rows,
        user_agent_max_bytes=settings.user_agent_max_bytes,
        capture_forwarded_for=bool(settings.trusted_proxies),
        fallback_url=to_location(settings.fallback_url) if settings.fallback_url else None,
        token_rate=Buckets(settings.token_event_burst, settings.token_events_per_s),
        client_rate=Buckets(settings.client_event_burst, settings.client_events_per_s),
    )
    return hot


def app_factory() -> HotPath:
    """For `uvicorn --factory app.main:app_factory`: settings from the environment."""
    return create_app(Settings())
