"""Which destination URLs trackd will sign, and the exact bytes it will send back as `Location`.

A tracker that mangles links is worse than none, so an ASCII URL is kept byte for byte: no
re-quoting, no normalising of `+`, `%20`, `;`, empty values or fragments. Only what cannot go
in an HTTP header is converted, the way browsers do it: a non-ASCII host becomes its IDNA form
and any other non-ASCII character (or a space) is UTF-8 percent-encoded.

The string is first read the way the WHATWG URL standard (browsers) reads it: leading and
trailing C0 controls and spaces are stripped, and ASCII tab, LF and CR are removed wherever they
are. Then every URL we would sign is checked with ada (the WHATWG parser Node uses): the browser
must accept the sender's string, and must read our `Location` as the same URL it reads the
sender's string as (same `href`). So our output differs from the WHATWG `href` only in what
browsers normalise anyway (host case, default ports, dot segments, which printable characters
are percent-encoded), never in where the link goes.

Stricter than WHATWG, by policy (`InvalidURL.reason` in `POLICY_REASONS`): only `http://` and
`https://` with two slashes, no user information, no backslashes, no other control characters,
no lone surrogates, no `%` or ``"`{}`` in hosts, hosts must be IDNA2008 (no emoji), ports are
digits, 2,048 characters at most. Browsers refuse the rest (`reason` is then one of the others).
"""

from __future__ import annotations

import re

import ada_url
import idna

from trackd_links.url_tables import NODE20_REFUSED_IN_HOST

MAX_URL_LENGTH = 2048

# Where the sender's string is one a browser follows and we still refuse it (docs/reliability.md).
POLICY_REASONS: frozenset[str] = frozenset(
    {
        "type",  # not a string
        "too_long",  # more than MAX_URL_LENGTH characters
        "scheme",  # not http or https (browsers have others)
        "authority",  # `http:x.com`, `http:/x.com`, `http:///x.com`: browsers fix the slashes, we do not guess
        "userinfo",  # `user@host`: the classic phishing spelling (good.com@evil.com)
        "backslash",  # browsers read `\` as `/` in http(s) URLs; other parsers do not
        "control",  # a control character inside the URL (browsers percent-encode it)
        "surrogate",  # a lone surrogate (browsers write U+FFFD instead)
        "percent_host",  # browsers decode %xx in hosts (evil%2Ecom is evil.com)
        "host_character",  # `"`, `` ` ``, `{`, `}` in a host: allowed by WHATWG, resolvable by no DNS
        "idna2008",  # a host UTS-46 maps but IDNA2008 refuses (emoji, symbols)
    }
)

# Refusals of what ada-url 4.0.0 accepts although Node 20 (browsers of today) refuse it or read it
# differently: bad `xn--` labels (ada does not check them), host characters from newer Unicode
# tables (trackd_links/url_tables.py), and a host idna and ada map to different names.
ADA_LENIENT_REASONS: frozenset[str] = frozenset({"punycode", "node_host", "mismatch"})

# WHATWG "C0 control or space", stripped at both ends, and "ASCII tab or newline", removed anywhere.
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = re.compile("[\t\n\r]")
# re.ASCII: without it, case folding lets "http\u017f://" (LONG S) match "https://".
_SCHEME = re.compile(r"^(https?)://", re.IGNORECASE | re.ASCII)
_SCHEME_WITHOUT_SLASHES = re.compile(r"^https?:", re.IGNORECASE | re.ASCII)
# Other C0 and C1 controls, DEL, backslashes and lone surrogates: header injection, parser
# differentials between browsers, and text that cannot be encoded. Never signed.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\\\\\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_PORT = re.compile(r"^[0-9]*$", re.ASCII)
# No '%': browsers decode it in hosts (http://evil%2Ecom/ goes to evil.com), so what we store
# would not be the host a person is sent to.
_ASCII_HOST = re.compile(r"^[A-Za-z0-9.\-_~!$&'()*+,;=]+$")
# WHATWG forbidden domain code points (printable ones): browsers refuse these hosts too.
_WHATWG_FORBIDDEN_HOST = re.compile(r"[ #/:<>?@\[\\\]^|%]")
_IPV6_LITERAL = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_NEEDS_QUOTING = re.compile(r"[^\x21-\x7e]")
_NODE20_REFUSED = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in NODE20_REFUSED_IN_HOST) + "]")


class InvalidURL(ValueError):
    """The URL is not an absolute http(s) URL trackd is willing to redirect to.

    `reason` is a short code: one of POLICY_REASONS where a browser would follow the URL and we
    refuse it by policy, anything else where browsers refuse it too.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _quote_char(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group(0).encode("utf-8"))


def browser_preprocess(url: str) -> str:
    """The WHATWG parser's first steps: strip C0 controls and spaces at both ends, drop tab/LF/CR."""
    url = url.strip(_C0_OR_SPACE)
    if _TAB_OR_NEWLINE.search(url):
        url = _TAB_OR_NEWLINE.sub("", url)
    return url


def _whatwg_href(url: str) -> str | None:
    try:
        return ada_url.parse_url(url, attributes=("href",))["href"]
    except ValueError:
        return None


def _check_a_labels(host: str) -> None:
    """Every `xn--` label must be valid punycode of a valid UTS-46 label (ada 4.0.0 does not check)."""
    lowered = host.lower()
    if "xn--" not in lowered:
        return
    for label in lowered.split("."):
        if not label.startswith("xn--"):
            continue
        try:
            decoded = label[4:].encode("ascii").decode("punycode")
        except UnicodeError:
            raise InvalidURL(f"host label {label!r} is not valid punycode", "punycode") from None
        # UTS-46: an A-label must decode to non-ASCII text that encodes back to itself (so it is
        # already mapped and normalised); browsers refuse the label otherwise.
        if decoded.isascii() or _NODE20_REFUSED.search(decoded) or _reencoded(decoded) != label:
            raise InvalidURL(f"host label {label!r} is not a valid IDNA label", "punycode")
        try:
            idna.decode(label)
        except UnicodeError:
            raise InvalidURL(f"host label {label!r} is not IDNA2008 (emoji or symbol)", "idna2008") from None


def _reencoded(decoded: str) -> str | None:
    try:
        return ada_url.idna_to_ascii(decoded).decode("ascii")
    except (ValueError, UnicodeError):
        return None


def _host_to_ascii(host: str) -> str:
    if host.startswith("["):
        # The address itself is checked by the WHATWG parser (ada) with the rest of the URL.
        if not _IPV6_LITERAL.match(host):
            raise InvalidURL("malformed IPv6 host", "ipv6")
        return host
    if not host:
        raise InvalidURL("missing host", "empty_host")
    if host.isascii():
        if not _ASCII_HOST.match(host):
            if "%" in host:
                raise InvalidURL("'%' in host", "percent_host")
            if _WHATWG_FORBIDDEN_HOST.search(host):
                raise InvalidURL("invalid character in host", "host")
            raise InvalidURL("character in host that no domain name has", "host_character")
        _check_a_labels(host)
        return host
    if _NODE20_REFUSED.search(host):
        raise InvalidURL("host holds a character browsers refuse (invisible or too new)", "node_host")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError is a UnicodeError
        raise InvalidURL(f"host is not a valid internationalised domain name: {exc}", "idna2008") from None
    _check_a_labels(ascii_host)
    return ascii_host


def _split(url: str, after_scheme: int) -> tuple[str, str, str | None, str]:
    """(host, authority, port, tail) of an http(s) URL whose `scheme://` ends at `after_scheme`."""
    rest = url[after_scheme:]
    cut = len(rest)
    for sep in "/?#":
        at = rest.find(sep)
        if at != -1 and at < cut:
            cut = at
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        raise InvalidURL("user information (user@host) is not allowed", "userinfo")
    host, port = authority, None
    if authority.startswith("["):
        close = authority.find("]")
        if close != -1 and authority[close + 1 : close + 2] == ":":
            host, port = authority[: close + 1], authority[close + 2 :]
    elif ":" in authority:
        host, port = authority.rsplit(":", 1)
    if port is not None and (not _PORT.match(port) or (port and int(port) > 65535)):
        raise InvalidURL("invalid port", "port")
    return host, authority, port, tail


def _refuse_forbidden(url: str) -> None:
    found = _FORBIDDEN.search(url)
    if found is None:
        return
    char = found.group(0)
    if char == "\\":
        raise InvalidURL("contains a backslash", "backslash")
    if _CONTROL.match(char):
        raise InvalidURL("contains a control character", "control")
    raise InvalidURL("contains a lone surrogate", "surrogate")


def to_location(url: object) -> str:
    """Return the ASCII URI that a `Location` header will carry for `url`, or raise InvalidURL."""
    if not isinstance(url, str):
        raise InvalidURL("must be a string", "type")
    if len(url) > 2 * MAX_URL_LENGTH:  # before any work: bounds the cost of what follows
        raise InvalidURL(f"longer than {MAX_URL_LENGTH} characters", "too_long")
    url = browser_preprocess(url)
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"longer than {MAX_URL_LENGTH} characters", "too_long")
    _refuse_forbidden(url)
    scheme = _SCHEME.match(url)
    if scheme is None:
        if _SCHEME_WITHOUT_SLASHES.match(url):
            raise InvalidURL("must start with http:// or https:// (two slashes, then the host)", "authority")
        raise InvalidURL("must be an absolute http:// or https:// URL", "scheme")
    host, authority, port, tail = _split(url, scheme.end())
    if not authority and tail.startswith("/"):
        # `https:///x` and `https:\\\\x`: browsers skip the extra slashes; senders mean something else.
        raise InvalidURL("more than two slashes after the scheme", "authority")
    ascii_host = _host_to_ascii(host)
    if ascii_host != host:
        authority = ascii_host + ("" if port is None else ":" + port)
    if _NEEDS_QUOTING.search(tail):
        tail = _NEEDS_QUOTING.sub(_quote_char, tail)
    location = url[: scheme.end()] + authority + tail
    if len(location) > 4 * MAX_URL_LENGTH:
        raise InvalidURL("too long once converted to its URI form", "too_long")
    if not location.isascii() or _NEEDS_QUOTING.search(location):
        # The contract is a header-safe ASCII URI; anything else is refused, never passed on.
        raise InvalidURL("cannot be converted to an ASCII URI", "not_ascii")
    # The browser's reading decides: it must accept the sender's URL, and read our Location as
    # the same URL (this catches hosts the WHATWG parser refuses or maps differently from idna).
    expected = _whatwg_href(url)
    if expected is None:
        raise InvalidURL("browsers refuse this URL (WHATWG URL parser)", "whatwg")
    if _whatwg_href(location) != expected:
        raise InvalidURL("browsers would read the converted URL differently", "mismatch")
    return location
