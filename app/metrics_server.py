"""`/metrics` on a port of its own (TRACKD_METRICS_PORT), so the scrape endpoint can stay off the
public listener: a minimal HTTP/1.1 responder in the lifespan, not a second ASGI server.

It answers `GET /metrics` (with the bearer key of TRACKD_METRICS_KEY when one is set) and 404
otherwise, one request per connection, with the same head-size and time limits as the main
listener. Several workers bind it with SO_REUSEPORT; under `--workers` every process's exposition
already adds up all of them, so whichever answers gives the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac

from prometheus_client import CONTENT_TYPE_LATEST

from app.services import Services

_MAX_HEAD = 8 << 10
_TIMEOUT_S = 10.0


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: str = "") -> bytes:  # fmt: skip
    head = (f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n")  # fmt: skip
    return head.encode("latin-1") + body


def _authorised(head: bytes, key: str | None) -> bool:
    if key is None:
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            scheme, _, given = value.strip().partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), key.encode())
    return False


async def _handle(svc: Services, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _TIMEOUT_S)
        method, _, rest = head.partition(b" ")
        target = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD") or target != b"/metrics":
            answer = _response("404 Not Found", b"not found\n")
        elif not _authorised(head, svc.settings.metrics_key):
            answer = _response("401 Unauthorized", b"TRACKD_METRICS_KEY bearer key needed\n",
                               extra="www-authenticate: Bearer\r\n")  # fmt: skip
        else:
            svc.meter.flush()
            body = svc.metrics.exposition()
            answer = _response("200 OK", b"" if method == b"HEAD" else body, CONTENT_TYPE_LATEST)
        writer.write(answer)
        await asyncio.wait_for(writer.drain(), _TIMEOUT_S)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        pass  # a client that sent too much, too little or too slowly: nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start(svc: Services, host: str, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(svc, reader, writer)

    return await asyncio.start_server(handle, host, port, limit=_MAX_HEAD, reuse_port=True)
