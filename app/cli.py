"""`trackd serve | sign | rewrite | decode | migrate | prune | erase | verify | keygen | sizing`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime
import difflib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from pydantic import AliasChoices, ValidationError

from app import sizing
from app.settings import Settings

if TYPE_CHECKING:
    import asyncpg

    from app.rewrite import CompiledEmail, RewriteOptions
    from app.rewrite_signer import KeyRingSigner


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
    from app.verdicts.networks import Networks, NetworksError

    try:
        Networks.load(settings.networks_file)  # each worker loads it again; a bad file stops here, in one line
    except (NetworksError, OSError) as exc:
        raise ConfigError(f"TRACKD_NETWORKS_FILE: {exc}") from None
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
    from app.rewrite_signer import click_url, open_url
    from trackd_links.tokens import SigningError
    from trackd_links.urls import InvalidURL

    settings = load_settings()
    ring = build_keyring(settings)
    base = settings.base_url
    try:
        pixel = ring.sign_open(args.campaign, args.recipient, sent_at=args.sent_at, message_id=args.message_id)
    except SigningError as exc:
        print(f"trackd sign: {exc}", file=sys.stderr)
        return 2
    print(open_url(base, pixel))
    for index, url in enumerate(args.urls):
        try:
            token = ring.sign_click(
                args.campaign, args.recipient, index, url, sent_at=args.sent_at, link_name=args.link_name,
                message_id=args.message_id, part=args.part, honeypot=args.honeypot,
            )  # fmt: skip
        except (InvalidURL, SigningError) as exc:
            print(f"trackd sign: {url!r}: {exc}", file=sys.stderr)
            return 2
        print(click_url(base, token))
    return 0


class DecodeError(Exception):
    """What `trackd decode` was given is not a token or tracked URL it can read (exit 2)."""


def _token_and_kind(given: str, kind: int | None) -> tuple[str, int | None]:
    """The token in `given` (a bare token, a tracked URL, or its path) and the kind to open it as:
    a URL's path says it (`/c/` click, `/o/....gif` open) and must agree with --kind."""
    from trackd_links.tokens import ARTICLES, KIND_CLICK, KIND_NAMES, KIND_OPEN

    given = given.strip()
    # A URL has a scheme or is a path; any other '/' is a bad token's (standard base64), and
    # diagnose() says so better than "not a URL" would.
    if "://" not in given and not given.startswith("/"):
        return given, kind
    # Only the last two segments: TRACKD_PUBLIC_URL may carry a path prefix a proxy strips.
    segments = urllib.parse.urlsplit(given).path.split("/")
    if len(segments) < 3 or segments[-2] not in ("c", "o"):
        raise DecodeError(f"{given!r}: not a tracked URL (its path must end in /c/TOKEN or /o/TOKEN.gif)")
    token = segments[-1]
    if segments[-2] == "c":
        path_kind = KIND_CLICK
    elif token.endswith(".gif"):
        path_kind, token = KIND_OPEN, token.removesuffix(".gif")
    else:
        raise DecodeError(f"{given!r}: an open pixel's path is /o/TOKEN.gif (trackd answers nothing else)")
    if kind is not None and kind != path_kind:
        raise DecodeError(f"--kind {KIND_NAMES[kind]}, but the URL's path is {ARTICLES[path_kind]}'s")
    return token, path_kind


def _field_text(value: object) -> str:
    """A field's value on its `name: value` line. Ids and names are any UTF-8: one that could be
    misread (a line break, outer spaces, empty, "-", a leading quote) is printed JSON-quoted;
    "-" alone means the token has no such field."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, str) and (
        not text or text == "-" or text.startswith('"') or text != text.strip() or not text.isprintable()
    ):
        return json.dumps(text)
    return text


def decode(args: argparse.Namespace) -> int:
    from app.main import build_keyring
    from trackd_links.tokens import KIND_CLICK, KIND_NAMES, KIND_OPEN, diagnose

    wanted = {"click": KIND_CLICK, "open": KIND_OPEN, None: None}[args.kind]
    try:
        token, kind = _token_and_kind(args.token, wanted)
    except DecodeError as exc:
        print(f"trackd decode: {exc}", file=sys.stderr)
        return 2
    ring = build_keyring(load_settings())
    for candidate in (kind,) if kind is not None else (KIND_CLICK, KIND_OPEN):
        claims = ring.open(token, candidate)
        if claims is not None:
            break
    else:
        reason = diagnose(ring, token, kind) or "does not open (and no step of docs/tokens.md fails: a bug)"
        print(f"trackd decode: {reason}", file=sys.stderr)
        return 1
    sent = datetime.datetime.fromtimestamp(claims.sent_at, datetime.UTC)
    fields: dict[str, object] = {
        "version": claims.version,
        "kind": KIND_NAMES[claims.kind],
        "kid": claims.kid,
        "sent_at": sent.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sent_at_unix": claims.sent_at,
        "link_index": claims.link_index,
        "campaign_id": claims.campaign_id,
        "recipient_id": claims.recipient_id,
        "url": claims.url,
        "link_name": claims.link_name,
        "message_id": claims.message_id,
        "part": claims.part,
        "honeypot": claims.honeypot,
    }
    if args.json:
        print(json.dumps(fields, ensure_ascii=False))
    else:
        for name, value in fields.items():
            print(f"{name}: {_field_text(value)}")
    return 0


class RewriteUsage(Exception):
    """What `trackd rewrite` was given cannot be rewritten (one line on stderr, exit 2)."""


# Options of the engine and the flags that set them: errors name the flag the user typed.
_OPTION_FLAGS = {"pixel": "--pixel", "text": "--text-mode", "honeypot": "--honeypot",
                 "list_unsubscribe": "--list-unsubscribe", "skip": "--skip"}  # fmt: skip
_SAFE_NAME = re.compile(r"[A-Za-z0-9@+_-][A-Za-z0-9@+._-]{0,99}")


def _read_part(path: str | None, *, stdin_taken: list[bool]) -> str | None:
    """A part's text. Read as bytes and decoded as UTF-8 with surrogateescape: bytes of any other
    ASCII-compatible charset survive the round trip exactly (written back the same way)."""
    if path is None:
        return None
    if path == "-":
        if stdin_taken[0]:
            raise RewriteUsage("--html and --text cannot both be - (stdin)")
        stdin_taken[0] = True
        return sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    try:
        return Path(path).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise RewriteUsage(f"{path}: {exc.strerror or exc}") from None


def _write_part(path: Path | None, text: str) -> None:
    data = text.encode("utf-8", "surrogateescape")
    if path is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise RewriteUsage(f"{path}: {exc.strerror or exc}") from None


def _rewrite_options(args: argparse.Namespace) -> RewriteOptions:
    from app.rewrite import OptionsError, RewriteOptions

    raw: dict[str, object] = {}  # only what was given: the engine's defaults are the documented ones
    if args.pixel is not None:
        raw["pixel"] = args.pixel
    if args.text_mode is not None:
        raw["text"] = args.text_mode
    if args.honeypot:
        raw["honeypot"] = True
    if args.list_unsubscribe:
        raw["list_unsubscribe"] = list(args.list_unsubscribe)
    if args.skip:
        raw["skip"] = list(args.skip)
    try:
        return RewriteOptions.parse(raw)
    except OptionsError as exc:
        raise RewriteUsage(f"{_OPTION_FLAGS.get(exc.field, exc.field)}: {exc.message}") from None


class _Recipient(NamedTuple):
    line: int
    recipient_id: str
    message_id: str | None
    sent_at: int


def _recipients(path: Path, default_sent_at: int) -> list[_Recipient]:
    """Every row of the CSV, checked before anything is written (a bad row 900 must not leave
    899 files behind): columns recipient_id, and optionally message_id and sent_at."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise RewriteUsage(f"{path}: {exc.strerror or exc}") from None
    rows: list[_Recipient] = []
    seen: set[str] = set()
    with handle:
        try:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "recipient_id" not in columns:
                raise RewriteUsage(f"{path}: no recipient_id column (columns: {', '.join(columns) or 'none'})")
            for row in reader:
                where = f"{path} line {reader.line_num}"
                rid = (row.get("recipient_id") or "").strip()
                if not rid:
                    raise RewriteUsage(f"{where}: recipient_id is empty")
                if rid in seen:
                    raise RewriteUsage(f"{where}: recipient_id {rid!r} is there twice")
                seen.add(rid)
                message_id = (row.get("message_id") or "").strip() or None
                sent = (row.get("sent_at") or "").strip()
                if not sent:
                    sent_at = default_sent_at
                elif sent.isascii() and sent.isdigit() and int(sent) < 2**32:  # not '²', not Arabic-Indic
                    sent_at = int(sent)
                else:
                    raise RewriteUsage(f"{where}: sent_at {sent!r} is not unix seconds")
                rows.append(_Recipient(reader.line_num, rid, message_id, sent_at))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise RewriteUsage(f"{path}: not a UTF-8 CSV file: {exc}") from None
    if not rows:
        raise RewriteUsage(f"{path}: no recipients")
    return rows


def _file_stem(recipient_id: str, used: set[str]) -> str:
    """A file name for a recipient: the id itself when it is a plain, safe name, else a hash of it
    (ids are any UTF-8: '/', '..', NUL). Casefolded for the check, for case-insensitive disks."""
    stem = recipient_id if _SAFE_NAME.fullmatch(recipient_id) else ""
    if not stem or stem.casefold() in used:
        stem = "id-" + hashlib.sha256(recipient_id.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    # A hashed name can still equal another recipient's plain id (one literally `id-<hash>`):
    # never two recipients in one file.
    base, n = stem, 1
    while stem.casefold() in used:
        n += 1
        stem = f"{base}-{n}"
    used.add(stem.casefold())
    return stem


def rewrite(args: argparse.Namespace) -> int:
    try:
        return _rewrite(args)
    except RewriteUsage as exc:
        print(f"trackd rewrite: {exc}", file=sys.stderr)
        return 2


def _rewrite(args: argparse.Namespace) -> int:
    from app.api_rewrite import rendered_json
    from app.main import build_keyring
    from app.rewrite import compile_email
    from app.rewrite_signer import KeyRingSigner, resolve_sent_at
    from trackd_links.tokens import SigningError

    batch = args.recipients is not None
    if batch == (args.recipient is not None):
        raise RewriteUsage("give --recipient (one email to stdout) or --recipients CSV with --out-dir (batch)")
    if batch and args.out_dir is None:
        raise RewriteUsage("--recipients needs --out-dir (one file per recipient goes there)")
    if batch and (args.out_html or args.out_text or args.json or args.message_id):
        raise RewriteUsage("--out-html, --out-text, --json and --message-id are for one --recipient;"
                           " with --recipients, message ids are a CSV column")  # fmt: skip
    if not batch and args.out_dir is not None:
        raise RewriteUsage("--out-dir is for --recipients (batch)")
    options = _rewrite_options(args)
    stdin_taken = [False]
    html_path = "-" if args.html is None and args.text is None else args.html
    html = _read_part(html_path, stdin_taken=stdin_taken)
    text = _read_part(args.text, stdin_taken=stdin_taken)
    if not batch and not args.json and html is not None and text is not None and not (args.out_html or args.out_text):
        raise RewriteUsage("both parts would go to stdout: give --out-html and/or --out-text, or --json")

    settings = load_settings()
    signer = KeyRingSigner.from_settings(settings, build_keyring(settings))
    default_sent_at = resolve_sent_at(args.sent_at)
    if batch:
        recipients = _recipients(args.recipients, default_sent_at)
    else:
        recipients = [_Recipient(0, args.recipient, args.message_id, default_sent_at)]
    for r in recipients:  # ids the signer refuses, found before anything is written
        try:
            signer.open_url(campaign_id=args.campaign, recipient_id=r.recipient_id, sent_at=r.sent_at,
                            message_id=r.message_id)  # fmt: skip
        except SigningError as exc:
            where = f"{args.recipients} line {r.line}: " if batch else ""
            raise RewriteUsage(f"{where}{exc}") from None

    # Compiled once: the per-recipient work is joining precomputed chunks with signed URLs.
    compiled = compile_email(html, text, options, own_prefixes=signer.own_prefixes,
                             max_chars=settings.rewrite_max_bytes)  # fmt: skip
    if batch:
        _write_batch(args, compiled, signer, recipients, html is not None, text is not None)
    else:
        r = recipients[0]
        out = compiled.render(signer, args.campaign, r.recipient_id, sent_at=r.sent_at, message_id=r.message_id)
        if args.json:
            print(json.dumps(rendered_json(out), ensure_ascii=True))
        else:
            if out.html is not None:
                _write_part(args.out_html, out.html)
            if out.text is not None:
                _write_part(args.out_text, out.text)
    if compiled.error is not None:
        # Fail-open, as the API: the output is the input, untouched; the exit status says so.
        print(f"trackd rewrite: not rewritten (the output is the input, untouched): {compiled.error}", file=sys.stderr)
        return 3
    return 0


def _write_batch(args: argparse.Namespace, compiled: CompiledEmail, signer: KeyRingSigner,
                 recipients: list[_Recipient], has_html: bool, has_text: bool) -> None:  # fmt: skip
    """One file per recipient and part in --out-dir, and manifest.jsonl: a line per recipient
    with its files and what POST /v1/rewrite would answer besides the parts (links, skipped)."""
    from app.api_rewrite import rendered_json

    out_dir: Path = args.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = (out_dir / "manifest.jsonl").open("w", encoding="ascii")
    except OSError as exc:
        raise RewriteUsage(f"{out_dir}: {exc.strerror or exc}") from None
    used: set[str] = {"manifest"}
    with manifest:
        for r in recipients:
            out = compiled.render(signer, args.campaign, r.recipient_id, sent_at=r.sent_at, message_id=r.message_id)
            stem = _file_stem(r.recipient_id, used)
            entry = rendered_json(out)
            files: dict[str, str | None] = {"html_file": None, "text_file": None}
            for part, suffix, wanted in (("html", ".html", has_html), ("text", ".txt", has_text)):
                value = entry.pop(part)
                if wanted and isinstance(value, str):
                    _write_part(out_dir / (stem + suffix), value)
                    files[f"{part}_file"] = stem + suffix
            line = {"recipient_id": r.recipient_id, "message_id": r.message_id, "sent_at": r.sent_at, **files, **entry}
            manifest.write(json.dumps(line, ensure_ascii=True) + "\n")
    print(f"wrote {len(recipients)} recipients to {out_dir} (manifest.jsonl lists each one's files and links)",
          file=sys.stderr)  # fmt: skip


def migrate_cmd(args: argparse.Namespace) -> int:
    from app.db import connect, migrate
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
        conn = await connect(settings, dsn)  # direct, or through PgBouncer (db_pgbouncer)
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


def _database_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """PostgreSQL refusing or unreachable: one line and exit 2 (verify's 1 means drift)."""

    def run(args: argparse.Namespace) -> int:
        import asyncpg

        try:
            return command(args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            print(f"trackd {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2

    return run


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """DATABASE_URL, or the embedded PostgreSQL of TRACKD_DATA_DIR: the one a running `trackd
    serve` (make run) started, or started here for this command and stopped after it."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    from app.pgserver import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir / "pg")
    if embedded.is_running():
        yield embedded.dsn  # not ours to stop
        return
    _lock_data_dir(settings.data_dir)
    dsn = embedded.start()
    try:
        yield dsn
    finally:
        embedded.stop()


def prune_cmd(args: argparse.Namespace) -> int:
    from app.lifecycle import connect_direct, prune

    settings = load_settings()
    if settings.db_pgbouncer:
        raise ConfigError(
            "TRACKD_DB_PGBOUNCER: trackd prune holds a session lock and runs DETACH PARTITION CONCURRENTLY,"
            " which need a direct connection: point DATABASE_URL at PostgreSQL itself, not PgBouncer"
        )

    async def run(dsn: str) -> list[str]:
        conn = await connect_direct(dsn)
        try:
            return (await prune(conn, settings)).lines(settings)
        finally:
            await conn.close()

    with _database(settings) as dsn:
        print("\n".join(asyncio.run(run(dsn))))
    return 0


T = TypeVar("T")


def _on_one_connection(settings: Settings, work: Callable[[asyncpg.Connection[asyncpg.Record]], Awaitable[T]]) -> T:
    """`work` on a connection of its own to the database the command talks to (DATABASE_URL, or
    the embedded one), closed afterwards."""
    from app.db import connect

    async def run(dsn: str) -> T:
        conn = await connect(settings, dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with _database(settings) as dsn:
        return asyncio.run(run(dsn))


def erase_cmd(args: argparse.Namespace) -> int:
    from app.lifecycle import erase_recipient

    erased = _on_one_connection(load_settings(), lambda conn: erase_recipient(conn, args.recipient))
    print(f"erased {erased} events of recipient {json.dumps(args.recipient, ensure_ascii=False)}")
    return 0


def explain_cmd(args: argparse.Namespace) -> int:
    from app.verdicts.explain import explain
    from app.verdicts.networks import Networks, NetworksError

    try:
        event_id = uuid.UUID(args.event_id)
    except ValueError:
        print(f"trackd explain: {args.event_id!r} is not an event id (a UUID, as GET /v1/events gives)",
              file=sys.stderr)  # fmt: skip
        return 2
    settings = load_settings()
    try:
        networks = Networks.load(settings.networks_file)
    except (NetworksError, OSError) as exc:
        raise ConfigError(f"TRACKD_NETWORKS_FILE: {exc}") from None
    lines = _on_one_connection(settings, lambda conn: explain(conn, event_id, networks))
    if lines is None:
        print(f"trackd explain: no event {event_id}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def verify_cmd(args: argparse.Namespace) -> int:
    from app.lifecycle import verify, verify_lines, write_verify_metrics

    result = _on_one_connection(load_settings(), lambda conn: verify(conn, args.campaign, repair=args.repair))
    print("\n".join(verify_lines(result, args.campaign)))
    if args.metrics_file is not None:
        write_verify_metrics(args.metrics_file, result)
    return 0 if result.exact else 1


def _existing_kids(spec: str) -> list[str]:
    """The key ids of a TRACKD_SIGNING_KEYS value, read without keeping any secret."""
    return [part.partition(":")[0].strip() for part in spec.split(",") if part.strip()]


def keygen(args: argparse.Namespace) -> int:
    """The new `kid:secret` alone on stdout, so that `$(trackd keygen)` is the key; how to rotate
    on stderr, naming the kids already in TRACKD_SIGNING_KEYS but never printing their secrets
    (the advice is a shell line that expands the variable instead)."""
    from trackd_links.tokens import SigningKey

    existing = _existing_kids(os.environ.get("TRACKD_SIGNING_KEYS", ""))
    if args.kid in existing:
        print(f"trackd keygen: kid {args.kid!r} is already in TRACKD_SIGNING_KEYS ({', '.join(existing)});"
              " kids must be unique: pass another --kid", file=sys.stderr)  # fmt: skip
        return 2
    key = f"{args.kid}:{secrets.token_urlsafe(32)}"
    try:
        SigningKey.parse(key)  # a kid the ring would refuse makes a key nobody can use
    except ValueError as exc:
        print(f"trackd keygen: {exc}", file=sys.stderr)
        return 2
    print(key)
    if existing:
        order = ", ".join([args.kid, *existing])
        value = f'TRACKD_SIGNING_KEYS="{args.kid}:<the new secret above>,$TRACKD_SIGNING_KEYS"'
        lines = [
            f"# Rotation: the new key goes FIRST (it mints), the existing ones ({', '.join(existing)}) stay after it",
            "# (they still open the links they minted). The resulting value, kids in this order:",
            f"#   {order}",
            f"#   {value}",
        ]
    else:
        lines = [
            "# TRACKD_SIGNING_KEYS is not set here. To rotate an existing ring, put the new key first:",
            f'#   TRACKD_SIGNING_KEYS="{args.kid}:<the new secret above>,<the existing kid:secret pairs>"',
        ]
    lines += [
        "# Keep every old key for as long as the emails carrying its links matter: links in sent emails",
        "# are clicked for years, and dropping a key makes each of its links a bad token (404, or",
        "# TRACKD_FALLBACK_URL). With several replicas, first add the new key LAST everywhere (it only",
        "# opens), then move it first: no replica then mints a link another cannot open yet.",
        '# In one step:  TRACKD_SIGNING_KEYS="$(trackd keygen --kid NEW 2>/dev/null),$TRACKD_SIGNING_KEYS"',
    ]
    print("\n".join(lines), file=sys.stderr)
    return 0


def sizing_cmd(args: argparse.Namespace) -> int:
    try:
        bench = sizing.load_bench(args.bench)
        plan = sizing.plan(
            bench,
            args.peak,
            args.headroom,
            args.min_replicas,
            args.wal_bytes_per_row,
            zones=args.zones,
            api_rps=args.api_rps,
            api_cpu_us_per_request=args.api_cpu_us,
            bytes_per_event=args.bytes_per_event,
            db_pool_max=args.db_pool_max,
            pgbouncer_pool=args.pgbouncer_pool,
            pg_max_connections=args.pg_max_connections,
        )
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
    p.add_argument("--link-name", help="the links' name (e.g. hero-cta), kept with each click")
    p.add_argument("--message-id", help="the sender's message id, kept with each open and click")
    p.add_argument("--part", choices=("api", "html", "text"), default="api", help="where the links are (default api)")
    p.add_argument("--honeypot", action="store_true", help="links no person sees: their clicks count as machines")
    p.add_argument("--sent-at", type=int, help="send time, unix seconds (default now)")
    p.add_argument("urls", nargs="*", metavar="URL")
    p.set_defaults(func=sign)

    p = sub.add_parser(
        "rewrite", help="track the links of an email and add its open pixel, for one recipient or a CSV of them",
        description="Rewrite one email (--html FILE and/or --text FILE; '-' or neither: HTML from stdin), signing"
        " locally with TRACKD_SIGNING_KEYS for TRACKD_PUBLIC_URL as `trackd sign` does. One --recipient: the"
        " rewritten part on stdout (or --out-html/--out-text, or --json for what POST /v1/rewrite answers)."
        " --recipients CSV (columns recipient_id, optional message_id, sent_at) and --out-dir: one file per"
        " recipient and part there, plus manifest.jsonl. The email is compiled once. Exit 2: bad input;"
        " 3: the engine failed open (the output is the input, untouched).",
    )  # fmt: skip
    p.add_argument("--campaign", required=True)
    p.add_argument("--recipient", help="one recipient: output on stdout or --out-html/--out-text")
    p.add_argument("--recipients", type=Path, metavar="CSV", help="batch: recipient_id[,message_id][,sent_at]")
    p.add_argument("--html", metavar="FILE", help="the HTML part ('-': stdin)")
    p.add_argument("--text", metavar="FILE", help="the plain-text part ('-': stdin)")
    p.add_argument("--out-html", type=Path, metavar="FILE")
    p.add_argument("--out-text", type=Path, metavar="FILE")
    p.add_argument("--out-dir", type=Path, metavar="DIR", help="batch: where the files go")
    p.add_argument("--json", action="store_true", help="print the result as POST /v1/rewrite answers it")
    p.add_argument("--message-id", help="the sender's message id (one recipient; batch: a CSV column)")
    p.add_argument("--sent-at", type=int, help="send time, unix seconds (default now; batch: rows without one)")
    p.add_argument("--pixel", help="bottom (default), marker (replaces <!--trackd:open-->) or none")
    p.add_argument("--text-mode", help="which text-part URLs to track: off, match-html (default) or all")
    p.add_argument("--honeypot", action="store_true", help="add a link only machines follow")
    p.add_argument("--list-unsubscribe", action="append", metavar="URL", help="a URL never to track (repeatable)")
    p.add_argument("--skip", action="append", metavar="PATTERN", help="URLs never to track (repeatable)")
    p.set_defaults(func=rewrite)

    p = sub.add_parser(
        "decode", help="print what a token says, or why it does not open",
        description="Open a token with the keys of this environment (TRACKD_SIGNING_KEYS, else the dev key in"
        " TRACKD_DATA_DIR) and print its fields, one 'name: value' a line ('-': no such field). If it does not"
        " open, print why on stderr and exit 1.",
    )  # fmt: skip
    p.add_argument("token", metavar="TOKEN", help="a token, or a tracked URL (/c/TOKEN, /o/TOKEN.gif)")
    p.add_argument("--kind", choices=("click", "open"), help="default: the URL's path, or either kind")
    p.add_argument("--json", action="store_true", help="print the fields as one JSON object")
    p.set_defaults(func=decode)

    p = sub.add_parser("migrate", help="apply database migrations and exit")
    p.set_defaults(func=migrate_cmd)

    p = sub.add_parser(
        "prune", help="retention: drop raw partitions past TRACKD_RETENTION_DAYS, old per-second rows",
        description="Drop the daily partitions of events wholly older than TRACKD_RETENTION_DAYS (detach"
        " concurrently, then drop; never today's or a future one), delete interactions_per_second rows older than"
        " TRACKD_PER_SECOND_RETENTION_DAYS, and print what went. Rollups are kept. Run as the owner role, with a"
        " direct DATABASE_URL (not PgBouncer); one at a time (a second one does nothing).",
    )  # fmt: skip
    p.set_defaults(func=_database_errors(prune_cmd))

    p = sub.add_parser("erase", help="erase a recipient's events everywhere, and their part in every rollup")
    p.add_argument("--recipient", required=True, help="the recipient_id")
    p.set_defaults(func=_database_errors(erase_cmd))

    p = sub.add_parser(
        "explain", help="an event's evidence and the rules that judged it (docs/engagement.md)",
        description="Print what an event kept of its request (method, user agent, address, headers seen, time"
        " since the send), its verdict, each rule that fired in words, and for a deferred verdict the recipient's"
        " events around it. Exits 1 when there is no such event.",
    )  # fmt: skip
    p.add_argument("event_id", help="the event's id (events.id, as GET /v1/events gives it)")
    p.set_defaults(func=_database_errors(explain_cmd))

    p = sub.add_parser(
        "verify", help="recompute the rollups from events and report any drift (exit 1)",
        description="Compare every rollup number with its recomputation from events (a full scan: run it off-peak)."
        " Prints each drifting number (rollup, campaign, key, expected, actual; the first 50, then a count) and"
        " exits 1 on any drift, 0 when exact.",
    )  # fmt: skip
    p.add_argument("--campaign", help="one campaign only")
    p.add_argument(
        "--repair",
        action="store_true",
        help="rebuild each drifting campaign's rollups from its events (owner role), then verify again",
    )
    p.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write trackd_rollup_drift there in Prometheus text format (node-exporter textfile)",
    )
    p.set_defaults(func=_database_errors(verify_cmd))

    p = sub.add_parser(
        "keygen", help="print a new signing key for TRACKD_SIGNING_KEYS",
        description="Print a new signing key, 'kid:secret', alone on stdout (so $(trackd keygen) is the key), and"
        " on stderr how to rotate to it: the new key first, the existing keys (named from TRACKD_SIGNING_KEYS,"
        " secrets never printed) kept after it for as long as the emails carrying their links matter.",
    )  # fmt: skip
    p.add_argument("--kid", default="k1", help="the key's id, unique in the ring (e.g. 2026-11)")
    p.set_defaults(func=keygen)

    p = sub.add_parser("sizing", help="replicas, CPU and database load for a peak rate, from the benchmark")
    p.add_argument("--bench", type=Path, default=sizing.DEFAULT_BENCH, help="make bench output (JSON)")
    p.add_argument("--peak", type=float, required=True, help="peak interactions/s to plan for")
    p.add_argument("--headroom", type=float, default=sizing.DEFAULT_HEADROOM, help="fraction of capacity to run at")
    p.add_argument("--zones", type=int, default=sizing.DEFAULT_ZONES, help="zones the pods spread over (default 3)")
    p.add_argument("--min-replicas", type=int, help="a floor under the zone-loss minimum")
    p.add_argument("--api-rps", type=float, default=0.0, help="signing/rewrite API requests/s at peak")
    p.add_argument("--api-cpu-us", type=float, default=sizing.DEFAULT_API_CPU_US_PER_REQUEST,
                   help="server CPU per API request, microseconds (default: an estimate, docs/scaling.md)")  # fmt: skip
    p.add_argument("--wal-bytes-per-row", type=int, default=sizing.DEFAULT_WAL_BYTES_PER_ROW)
    p.add_argument("--bytes-per-event", type=int, default=sizing.DEFAULT_BYTES_PER_EVENT, help="disk per event")
    p.add_argument("--db-pool-max", type=int, default=sizing.DEFAULT_DB_POOL_MAX, help="TRACKD_DB_POOL_MAX")
    p.add_argument("--pgbouncer-pool", type=int, help="PgBouncer server connections to PostgreSQL, if it is used")
    p.add_argument("--pg-max-connections", type=int, default=sizing.DEFAULT_PG_MAX_CONNECTIONS)
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
