"""The bytes app.protocol writes itself, made once at import from the ASGI path's own headers
(app.hotpath), so that both paths answer byte for byte alike."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from app.hotpath import PIXEL_GIF, not_found, pixel_headers, redirect_headers


def header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def refusal(status: int, text: bytes, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole plain-text response that closes the connection (a request refused for a limit)."""
    return b"".join((
        STATUS_LINE[status], header_lines(default_headers),
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: ", str(len(text)).encode(),
        b"\r\nconnection: close\r\n\r\n", text,
    ))  # fmt: skip


PIXEL = PIXEL_GIF
PIXEL_HEAD = STATUS_LINE[200], header_lines(pixel_headers())
NOT_FOUND_HEAD = STATUS_LINE[404], header_lines(not_found()[0])
NOT_FOUND_TEXT = not_found()[1]
REDIRECT_LINE = STATUS_LINE[302]
REDIRECT_TAIL = b"\r\n" + header_lines(redirect_headers())  # after the Location's value
CLOSE = b"connection: close\r\n"
