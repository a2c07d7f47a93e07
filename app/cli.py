"""`trackd serve | sign | migrate | keygen | sizing`."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import fcntl
import logging
import os
import secrets
import shutil
import sys
from pathlib import Path

from pydantic import AliasChoices, ValidationError

from app import sizing
from app.settings import Settings


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class ConfigError(Exception):
    """A setting trackd cannot run with: printed as one line, naming the variable."""


def _env_name(field: str) -> str:
    if field.isupper():  # pydantic reports an aliased field by the alias it was read from
        return field
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and alias.choices and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return "TRACKD_" + field.upper()


def _known_names() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        names.add("TRACKD_" + field.upper())
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(a for a in alias.choices if isinstance(a, str))
    # Read by the command line itself, not by Settings.
    names.add("TRACKD_LOG_LEVEL")
    return names


def _warn_unknown() -> None:
    known = _known_names()
    for name in sorted(os.environ):
        if name.startswith("TRACKD_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            print(f"{name} is not a trackd setting{hint}; ignored", file=sys.stderr)


def load_settings() -> Settings:
    """Settings from the environment, or ConfigError naming the first bad variable."""
    _warn_unknown()
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        name = _env_name(field)
        message = message.removeprefix(f"{name}: ")
        raise ConfigError(f"{name}: {message}") from None


def _lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on the data directory for this process's life (released by the
    kernel at exit): a second trackd on the same directory would share, and stop, its database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "trackd.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"TRACKD_DATA_DIR: {data_dir} is in use by another trackd process; give this one its own data directory"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.set_inheritable(fd, True)
    return fd


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.pgserver import EmbeddedPostgres
    from app.protocol import TrackingProtocol

    settings = load_settings()
    if settings.database_url is not None and not settings.signing_keys:
        raise ConfigError(
            "TRACKD_SIGNING_KEYS: must be set when DATABASE_URL is: without it each host signs with its own"
            " random development key, and links signed by one are refused by the others (trackd keygen makes one)"
        )
    _lock_data_dir(settings.data_dir)
    host = args.host or settings.host
    port = args.port or settings.port
    os.environ["TRACKD_HOST"], os.environ["TRACKD_PORT"] = host, str(port)
    embedded = None
    if args.workers > 1 and settings.prometheus_multiproc_dir is None:
        # Must be in the environment before the workers import prometheus_client; emptied so
        # that no previous run's counters are added to this one's.
        metrics_dir = (settings.data_dir / "prometheus").resolve()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if args.workers > 1 and settings.database_url is None:
        # Several workers share one embedded server, started (and stopped) here, not by each.
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        os.environ["DATABASE_URL"] = embedded.start()
    try:
        uvicorn.run(
            "app.main:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            loop="uvloop",
            # uvicorn's httptools protocol, answering /c/ and /o/ without an ASGI cycle.
            http=TrackingProtocol,
            # No WebSocket routes: an upgrade request is answered as plain HTTP (app.protocol).
            ws="none",
            lifespan="on",
            # Client addresses are resolved by trackd itself, from TRACKD_TRUSTED_PROXIES only.
            proxy_headers=False,
            server_header=False,
            access_log=args.access_log,
            log_level=args.log_level,
            timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s)),
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def sign(args: argparse.Namespace) -> int:
    from app.main import build_keyring
    from trackd_links.tokens import SigningError
    from trackd_links.urls import InvalidURL

    settings = load_settings()
    ring = build_keyring(settings)
    base = settings.base_url
    print(f"{base}/o/{ring.sign_open(args.campaign, args.recipient)}.gif")
    for index, url in enumerate(args.urls):
        try:
            print(f"{base}/c/{ring.sign_click(args.campaign, args.recipient, index, url)}")
        except (InvalidURL, SigningError) as exc:
            print(f"trackd sign: {url!r}: {exc}", file=sys.stderr)
            return 2
    return 0


def migrate_cmd(args: argparse.Namespace) -> int:
    import asyncpg

    from app.db import migrate
    from app.pgserver import EmbeddedPostgres

    settings = load_settings()
    embedded = None
    dsn = settings.database_url
    if dsn is None:
        _lock_data_dir(settings.data_dir)
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        was_running = embedded.is_running()
        dsn = embedded.start()
        if was_running:
            embedded = None  # not ours to stop

    async def run() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop()
    print("applied: " + (", ".join(applied) or "nothing (up to date)"))
    return 0


def keygen(args: argparse.Namespace) -> int:
    print(f"{args.kid}:{secrets.token_urlsafe(32)}")
    return 0


def sizing_cmd(args: argparse.Namespace) -> int:
    try:
        bench = sizing.load_bench(args.bench)
        plan = sizing.plan(bench, args.peak, args.headroom, args.min_replicas, args.wal_bytes_per_row)
    except sizing.SizingError as exc:
        print(f"trackd sizing: {exc}", file=sys.stderr)
        return 2
    print(sizing.report(plan), end="")
    if args.write_overlay:
        for path in sizing.write_overlay(plan, args.overlay):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trackd", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("TRACKD_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve HTTP (embedded PostgreSQL unless DATABASE_URL is set)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--access-log", action="store_true")
    p.set_defaults(func=serve)

    p = sub.add_parser("sign", help="print the pixel URL and click URLs for one recipient")
    p.add_argument("--campaign", required=True)
    p.add_argument("--recipient", required=True)
    p.add_argument("urls", nargs="*", metavar="URL")
    p.set_defaults(func=sign)

    p = sub.add_parser("migrate", help="apply database migrations and exit")
    p.set_defaults(func=migrate_cmd)

    p = sub.add_parser("keygen", help="print a new signing key for TRACKD_SIGNING_KEYS")
    p.add_argument("--kid", default="k1")
    p.set_defaults(func=keygen)

    p = sub.add_parser("sizing", help="replicas, CPU and database load for a peak rate, from the benchmark")
    p.add_argument("--bench", type=Path, default=sizing.DEFAULT_BENCH, help="make bench output (JSON)")
    p.add_argument("--peak", type=float, required=True, help="peak interactions/s to plan for")
    p.add_argument("--headroom", type=float, default=sizing.DEFAULT_HEADROOM, help="fraction of capacity to run at")
    p.add_argument("--min-replicas", type=int, default=sizing.DEFAULT_MIN_REPLICAS)
    p.add_argument("--wal-bytes-per-row", type=int, default=sizing.DEFAULT_WAL_BYTES_PER_ROW)
    p.add_argument("--write-overlay", action="store_true", help="write the numbers into the prod overlay")
    p.add_argument("--overlay", type=Path, default=sizing.DEFAULT_OVERLAY)
    p.set_defaults(func=sizing_cmd)

    args = parser.parse_args(argv)
    _logging(args.log_level)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 78  # EX_CONFIG
    return result


if __name__ == "__main__":
    sys.exit(main())
