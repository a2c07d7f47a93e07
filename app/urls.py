"""Which destination URLs trackd will sign, and the exact bytes it will send back as `Location`.

A tracker that mangles links is worse than none, so an ASCII URL is kept byte for byte: no
re-quoting, no normalising of `+`, `%20`, `;`, empty values or fragments. Only what cannot go
in an HTTP header is converted, the way browsers do it: a non-ASCII host becomes its IDNA form
and any other non-ASCII character (or a space) is UTF-8 percent-encoded.
"""

from __future__ import annotations

import re

import idna

MAX_URL_LENGTH = 2048

# re.ASCII: without it, case folding lets "http\u017f://" (LONG S) match "https://".
_SCHEME = re.compile(r"^(https?)://", re.IGNORECASE | re.ASCII)
# C0 and C1 controls, DEL, backslashes and lone surrogates: header injection, parser
# differentials between browsers, and text that cannot be encoded. Never signed.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\\\\\ud800-\udfff]")
_PORT = re.compile(r"^[0-9]{1,5}$")
# No '%': browsers decode it in hosts (http://evil%2Ecom/ goes to evil.com), so what we store
# would not be the host a person is sent to.
_ASCII_HOST = re.compile(r"^[A-Za-z0-9.\-_~!$&'()*+,;=]+$")
_NEEDS_QUOTING = re.compile(r"[^\x21-\x7e]")


class InvalidURL(ValueError):
    """The URL is not an absolute http(s) URL trackd is willing to redirect to."""


def _quote_char(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group(0).encode("utf-8"))


def _host_to_ascii(host: str) -> str:
    if host.startswith("["):
        if not host.endswith("]") or not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", host):
            raise InvalidURL("malformed IPv6 host")
        return host
    if not host:
        raise InvalidURL("missing host")
    if host.isascii():
        if not _ASCII_HOST.match(host):
            raise InvalidURL("invalid character in host")
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidURL(f"host is not a valid internationalised domain name: {exc}") from None


def to_location(url: object) -> str:
    """Return the ASCII URI that a `Location` header will carry for `url`, or raise InvalidURL."""
    if not isinstance(url, str):
        raise InvalidURL("must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN.search(url):
        raise InvalidURL("contains a control character or backslash")
    scheme = _SCHEME.match(url)
    if scheme is None:
        raise InvalidURL("must be an absolute http:// or https:// URL")
    rest = url[scheme.end() :]
    cut = len(rest)
    for sep in "/?#":
        at = rest.find(sep)
        if at != -1 and at < cut:
            cut = at
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        raise InvalidURL("user information (user@host) is not allowed")
    host, port = authority, None
    if authority.startswith("["):
        close = authority.find("]")
        if close != -1 and authority[close + 1 : close + 2] == ":":
            host, port = authority[: close + 1], authority[close + 2 :]
    elif ":" in authority:
        host, port = authority.rsplit(":", 1)
    if port is not None and port != "" and (not _PORT.match(port) or int(port) > 65535):
        raise InvalidURL("invalid port")
    ascii_host = _host_to_ascii(host)
    if ascii_host != host:
        authority = ascii_host + ("" if port is None else ":" + port)
    if _NEEDS_QUOTING.search(tail):
        tail = _NEEDS_QUOTING.sub(_quote_char, tail)
    location = url[: scheme.end()] + authority + tail
    if len(location) > 4 * MAX_URL_LENGTH:
        raise InvalidURL("too long once converted to its URI form")
    if not location.isascii() or _NEEDS_QUOTING.search(location):
        # The contract is a header-safe ASCII URI; anything else is refused, never passed on.
        raise InvalidURL("cannot be converted to an ASCII URI")
    return location
