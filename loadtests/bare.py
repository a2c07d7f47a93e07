"""The speed limit: a bare ASGI app that answers like trackd (302 for /c/, a 43-byte GIF for /o/)
and does nothing else, served with exactly the uvicorn settings `trackd serve` uses (app/cli.py:
uvloop, httptools, one worker, no access log, no server header, no proxy headers)."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from app.hotpath import PIXEL_GIF

_REDIRECT = {
    "type": "http.response.start",
    "status": 302,
    "headers": [(b"location", b"https://shop.example.com/spring-sale"), (b"cache-control", b"no-store"),
                (b"content-length", b"0")],
}  # fmt: skip
_GIF = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"image/gif"), (b"content-length", str(len(PIXEL_GIF)).encode()),
                (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"), (b"pragma", b"no-cache"),
                (b"expires", b"0")],
}  # fmt: skip
_OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_EMPTY = {"type": "http.response.body", "body": b"", "more_body": False}
_GIF_BODY = {"type": "http.response.body", "body": PIXEL_GIF, "more_body": False}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope["path"]
    if path.startswith("/o/"):
        await send(_GIF)
        await send(_GIF_BODY)
    elif path.startswith("/c/"):
        await send(_REDIRECT)
        await send(_EMPTY)
    else:  # /healthz, for the harness to know it is up
        await send(_OK)
        await send(_EMPTY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, workers=1, loop="uvloop", http="httptools", lifespan="on",
        proxy_headers=False, server_header=False, access_log=False, log_level="warning",
    )  # fmt: skip


if __name__ == "__main__":
    main()
