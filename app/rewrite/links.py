"""Whether a link's URL (already decoded and cleaned) is tracked, and if not, why: one rule for both parts.

Skip reasons (the `reason` of a skipped link): `empty`, `placeholder` (template delimiters are
left: `{{ }}`, `{% %}`, `*| |*`, `%%`, `<% %>`, `[[ ]]`, `${`), `unterminated` (a `<` in the
value: an unclosed quote ran into the next tag), `fragment` (`#...`), `protocol_relative`
(`//host`), `relative`, `scheme` (mailto:, tel:, sms:, javascript:, data:, ...), `own_link`
(already a trackd link), `list_unsubscribe`, `skip_pattern`, `invalid_url:<reason>` (an http(s)
URL trackd refuses to sign, reason as in trackd_links.urls.InvalidURL), and, decided by the
callers, `opt_out`, `in_head`, `invalid_name`, `opted_out_in_html`, `not_in_html`, `too_many_links`
(over 10,000 tracked links in one part).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trackd_links.urls import InvalidURL, to_location

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{%|%\}|\*\||\|\*|%%|<%|%>|\[\[|\]\]|\$\{")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*+:")
_HTTP = re.compile(r"https?://", re.IGNORECASE)


def _host(url: str) -> str:
    """The lowercased host of an http(s) URL (no userinfo, no port)."""
    rest = url[url.index("://") + 3 :]
    for sep in "/?#":
        cut = rest.find(sep)
        if cut >= 0:
            rest = rest[:cut]
    rest = rest.rpartition("@")[2]
    if rest.startswith("["):
        return rest[: rest.find("]") + 1].lower()
    return rest.partition(":")[0].lower()


def _origin_lowered(url: str) -> str:
    """`url` with its scheme and authority lowercased: how URL-prefix skip patterns compare."""
    cut = url.find("://")
    if cut < 0:
        return url
    end = len(url)
    for sep in "/?#":
        found = url.find(sep, cut + 3)
        if 0 <= found < end:
            end = found
    return url[:end].lower() + url[end:]


@dataclass(frozen=True, slots=True)
class LinkRules:
    own_prefixes: tuple[str, ...]
    list_unsubscribe: frozenset[str]
    skip: tuple[str, ...]

    _memo: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    # The skip patterns, prepared once (not per link: a sender could otherwise make every link
    # cost one comparison per pattern, each lowercasing the pattern again): exact hosts, host
    # suffixes (`*.host` as `.host`), and URL prefixes (scheme and authority lowercased).
    _hosts: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    _suffixes: tuple[str, ...] = field(default=(), compare=False, repr=False)
    _prefixes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "own_prefixes", tuple(p.lower() for p in self.own_prefixes if p))
        hosts: set[str] = set()
        suffixes: set[str] = set()
        prefixes: set[str] = set()
        for pattern in self.skip:
            if "://" in pattern:
                prefixes.add(_origin_lowered(pattern))
            elif pattern.startswith("*."):
                hosts.add(pattern[2:].lower())
                suffixes.add(pattern[1:].lower())
            else:
                hosts.add(pattern.lower())
        object.__setattr__(self, "_hosts", frozenset(hosts))
        object.__setattr__(self, "_suffixes", tuple(sorted(suffixes)))
        object.__setattr__(self, "_prefixes", tuple(sorted(prefixes)))

    def own_pixel(self, src: str) -> bool:
        """Whether an image is already trackd's open pixel: `<prefix>/o/` beside each own `<prefix>/c/`."""
        lowered = src.lower()
        return any(p.endswith("/c/") and lowered.startswith(p[:-3] + "/o/") for p in self.own_prefixes)

    def _skipped_by_pattern(self, url: str) -> bool:
        if self._prefixes and _origin_lowered(url).startswith(self._prefixes):
            return True
        if self._hosts or self._suffixes:
            host = _host(url)
            return host in self._hosts or (bool(self._suffixes) and host.endswith(self._suffixes))
        return False

    def reason(self, url: str) -> str | None:
        """None when `url` is tracked, else the reason it is left alone."""
        # Emails repeat their URLs (the VML button and its fallback, header and footer links);
        # to_location is the costly step, so each distinct URL is judged once.
        try:
            return self._memo[url]
        except KeyError:
            pass
        reason = self._reason(url)
        if len(self._memo) < 100_000:
            self._memo[url] = reason
        return reason

    def _reason(self, url: str) -> str | None:
        if not url:
            return "empty"
        if _PLACEHOLDER.search(url):
            return "placeholder"
        if "<" in url:
            return "unterminated"
        if url.startswith("#"):
            return "fragment"
        if url.startswith(("//", "\\\\", "/\\", "\\/")):
            return "protocol_relative"
        scheme = _SCHEME.match(url)
        if scheme is None:
            return "relative"
        if not _HTTP.match(url):
            return "scheme" if scheme.group().lower() not in ("http:", "https:") else "invalid_url:authority"
        lowered = url.lower()
        if any(lowered.startswith(prefix) for prefix in self.own_prefixes):
            return "own_link"
        if url in self.list_unsubscribe:
            return "list_unsubscribe"
        if self.skip and self._skipped_by_pattern(url):
            return "skip_pattern"
        try:
            to_location(url)
        except InvalidURL as exc:
            return f"invalid_url:{exc.reason}"
        return None
