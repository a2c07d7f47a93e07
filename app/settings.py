"""Every setting trackd reads, typed, from the environment. Nothing else reads os.environ."""

from __future__ import annotations

import ipaddress
from enum import Enum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class FsyncPolicy(str, Enum):
    never = "never"  # page cache only: survives a process crash, not a machine crash
    interval = "interval"  # fdatasync every TRACKD_JOURNAL_FSYNC_INTERVAL_MS, off the event loop
    always = "always"  # fdatasync before any response goes out: slowest, loses nothing


class IPMode(str, Enum):
    anonymize = "anonymize"  # IPv4 to /24, IPv6 to /48
    full = "full"
    drop = "drop"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_dsn(dsn: str) -> None:
    """Raise ValueError for a DSN asyncpg could never connect with (parsed the way it does)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("must be a postgresql://user:password@host:port/database URL")
    try:
        # asyncpg has no public DSN parser; this is the one its connect() uses.
        from asyncpg.connect_utils import _parse_connect_dsn_and_args  # type: ignore[attr-defined]

        _parse_connect_dsn_and_args(
            dsn=dsn, host=None, port=None, user=None, password=None, passfile=None, database=None,
            ssl=None, direct_tls=None, server_settings=None, target_session_attrs=None,
            krbsrvname=None, gsslib=None, service=None, servicefile=None,
        )  # fmt: skip
    except TypeError:
        # Another asyncpg signature: fall back to checking the port ourselves.
        try:
            parts.port  # noqa: B018
        except ValueError as exc:
            raise ValueError(f"invalid port: {exc}") from None
    except Exception as exc:
        raise ValueError(f"not a usable PostgreSQL DSN: {exc}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACKD_", extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "TRACKD_DATABASE_URL"))
    data_dir: Path = Path(".trackd")
    # Set (by `trackd serve --workers N`, or by you) when several processes serve one port:
    # prometheus_client then keeps values in files there, and /metrics adds up every process.
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "TRACKD_PROMETHEUS_MULTIPROC_DIR")
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = None

    # "kid:secret,kid:secret" - the first key signs, every key verifies.
    signing_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    fallback_url: str | None = None

    ip_mode: IPMode = IPMode.anonymize
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    user_agent_max_bytes: int = Field(default=512, ge=16, le=8192)
    # 1000 links of 2048 characters fit with room to spare; anything larger is refused (413).
    api_max_body_bytes: int = Field(default=4 << 20, ge=1024)
    # POST /v1/rewrite: the largest request body (the JSON holding html and text) it takes, checked
    # before the body is read (413). Compiling is linear in the input, but a whole email is parsed
    # on every request: this bounds the CPU one request can take (about 0.2 s at 10 MB/s).
    rewrite_max_bytes: int = Field(default=2 << 20, ge=1024)

    # The writer: how many rows one COPY may carry, how long rows may wait to be batched.
    batch_max_rows: int = Field(default=5000, ge=1)
    flush_interval_ms: int = Field(default=100, ge=1)
    # The journal: where, how large it may grow while PostgreSQL cannot take events (past this,
    # events are answered but counted as dropped; /readyz reports it), and how it is synced.
    journal_dir: Path | None = None  # default: {data_dir}/journal
    journal_max_bytes: int = Field(default=1 << 30, ge=4096)
    journal_segment_bytes: int = Field(default=16 << 20, ge=4096)
    journal_fsync: FsyncPolicy = FsyncPolicy.interval
    journal_fsync_interval_ms: int = Field(default=1000, ge=1)
    orphan_scan_interval_s: float = Field(default=5.0, gt=0)
    # Whether `trackd serve` applies pending migrations at start. Set it to false where serve logs
    # in as the service role (docs/database-roles.md) and `trackd migrate` runs as the owner: serve
    # then waits, unready, until the schema is current. Either way serve does not migrate, or take
    # the migration lock, when nothing is pending.
    migrate: bool = True
    db_pool_max: int = Field(default=4, ge=1)
    db_statement_timeout_ms: int = Field(default=10_000, ge=100)
    # DATABASE_URL points at PgBouncer in transaction pooling mode (docs/scaling.md, "Through
    # PgBouncer"): no named prepared statements, no session state, only startup parameters
    # PgBouncer accepts. Set the role's statement_timeout in PostgreSQL then (ALTER ROLE).
    db_pgbouncer: bool = False
    shutdown_timeout_s: float = Field(default=10.0, ge=0)
    # After SIGTERM: keep serving (with /readyz 503) this long before closing the listener, so
    # load balancers stop sending first. Kubernetes' preStop sleep does the same job there.
    shutdown_delay_s: float = Field(default=0.0, ge=0)

    # Hostile clients (docs/reliability.md lists each limit with its test). A request target or a
    # header block past these is answered 414 / 431 and the connection closed at once.
    max_request_target_bytes: int = Field(default=8 << 10, ge=256, le=1 << 20)
    max_header_bytes: int = Field(default=32 << 10, ge=1024, le=1 << 22)
    # A request head (request line and headers) must arrive within this, from its first byte or
    # from the connection's start; otherwise the connection is closed.
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # Requests a connection may have queued behind the one being answered, and the bytes of
    # unsent responses, before trackd stops reading from it until the client catches up.
    max_pipelined_requests: int = Field(default=16, ge=1, le=10_000)
    # Also the transport's high-water mark (writing pauses past it, resumes below a quarter), so
    # reading stops exactly when writing does. Worst case, every connection holds this much:
    # 10,000 connections x 32 KiB = 320 MiB.
    max_write_buffer_bytes: int = Field(default=32 << 10, ge=4096)
    # Open HTTP connections one process accepts; past it new ones are closed at once (counted,
    # logged once). Clamped below the process's file-descriptor limit.
    max_connections: int = Field(default=10_000, ge=1)
    # Events one token (one link of one recipient) and one client address may journal: a burst,
    # then a steady rate per second. Past them requests are still answered, but the event is
    # counted in trackd_events_dropped_total{reason="rate_token"|"rate_client"}, not journaled.
    token_event_burst: int = Field(default=20, ge=1)
    token_events_per_s: float = Field(default=0.2, gt=0)
    client_event_burst: int = Field(default=2_000, ge=1)
    client_events_per_s: float = Field(default=200.0, gt=0)
    # The lifecycle of stored events (app/lifecycle.py; docs/runbook.md, "Retention"). Daily
    # partitions of `events` are made this many days ahead, at start and every
    # lifecycle_interval_s, so that the first event of a day never waits for DDL.
    partitions_ahead_days: int = Field(default=7, ge=0, le=366)
    # Raw events: daily partitions wholly older than this many days are dropped by `trackd
    # prune` (and hourly by `trackd serve` when its role owns `events`). 0: kept forever.
    # Rollups are kept whatever this says.
    retention_days: int = Field(default=0, ge=0)
    # interactions_per_second rows older than this many days are deleted by the same prune. 0: kept forever.
    per_second_retention_days: int = Field(default=14, ge=0)
    lifecycle_interval_s: float = Field(default=3600.0, gt=0)
    # Engagement truth (docs/engagement.md): extra address lists for the verdicts, in the format of
    # the bundled app/verdicts/networks.csv (docs/networks-file.md); read at start and on SIGHUP.
    networks_file: Path | None = None
    # Deferred verdicts (app/verdicts/deferred.py, migration 011; docs/analytics.md): every pod asks
    # PostgreSQL this often to judge the events committed since the last judgement, at most
    # verdict_batch_rows at a time (again at once while a batch comes back full).
    verdict_interval_s: float = Field(default=1.0, gt=0, le=3600)
    verdict_batch_rows: int = Field(default=20_000, ge=100, le=1_000_000)
    # The rules' windows: clicks of one recipient chained by gaps of at most burst_seconds are a
    # burst; one link (or pixel) from address_burst_count addresses within address_window_s is an
    # address burst; the rest of a burst's or honeypot hit's scan is what came from its address
    # within scan_window_s; a probable vendor network is a machine only within probable_window_s
    # of the send.
    burst_seconds: float = Field(default=1.0, gt=0, le=60)
    address_window_s: float = Field(default=30.0, gt=0, le=3600)
    address_burst_count: int = Field(default=3, ge=2, le=1000)
    scan_window_s: float = Field(default=60.0, ge=0, le=3600)
    probable_window_s: float = Field(default=600.0, ge=0, le=7 * 86_400)
    # /metrics: on the main port (default), on a port of its own, and/or behind a bearer key.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_key: str | None = None
    # /docs and /openapi.json (the API's schema) can be switched off for public deployments.
    docs_enabled: bool = True

    @field_validator("database_url", "public_url", "fallback_url", "metrics_key", "metrics_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("signing_keys", "api_keys", "trusted_proxies", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # raises ValueError with a clear message
        return value

    @field_validator("fallback_url")
    @classmethod
    def _fallback(cls, value: str | None) -> str | None:
        if value:
            from trackd_links.urls import InvalidURL, to_location

            try:
                to_location(value)
            except InvalidURL as exc:
                raise ValueError(f"TRACKD_FALLBACK_URL: {exc}") from None
        return value or None

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"must be an absolute http(s) URL with a host (got {value!r})")
        return value or None

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value:
            check_dsn(value)
        return value or None

    @field_validator("signing_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        from trackd_links.tokens import SigningKey

        for spec in value:
            try:
                SigningKey.parse(spec)
            except Exception as exc:
                kid = spec.partition(":")[0]
                raise ValueError(f"key {kid!r}: {exc} (expected kid:secret,...)") from None
        return value

    @field_validator("rewrite_max_bytes")
    @classmethod
    def _rewrite_cap(cls, value: int, info: ValidationInfo) -> int:
        # Every body passes TRACKD_API_MAX_BODY_BYTES first: a larger rewrite cap would never apply.
        api_max = info.data.get("api_max_body_bytes")
        if isinstance(api_max, int) and value > api_max:
            raise ValueError(f"{value} is more than TRACKD_API_MAX_BODY_BYTES ({api_max}), which caps every body")
        return value

    @property
    def journal_root(self) -> Path:
        return self.journal_dir or self.data_dir / "journal"

    @property
    def segment_bytes(self) -> int:
        # Several segments fit under the cap, so committed ones can be deleted while others fill.
        return max(4096, min(self.journal_segment_bytes, self.journal_max_bytes // 8))

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
