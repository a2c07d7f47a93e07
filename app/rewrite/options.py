"""The options of one rewrite, checked once: what `POST /v1/rewrite`, the CLI and the Python API accept.

Defaults: `pixel="bottom"`, `text="match-html"`, `honeypot=False`, no `list_unsubscribe`, no `skip`.

`skip` patterns (no regexes: a sender's pattern must not be able to make a rewrite slow):
- `example.com`: links whose host is exactly `example.com` (ASCII case-insensitive);
- `*.example.com`: `example.com` and every host under it;
- a pattern containing `://`, e.g. `https://example.com/account/`: links that start with it (the
  scheme and host compared case-insensitively, the rest exactly).

`list_unsubscribe` holds the URLs of the `List-Unsubscribe` header (surrounding `<>` are
dropped); a link equal to one of them (after the same URL cleaning as links) is never tracked,
because RFC 8058 one-click unsubscribe must not go through a redirect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from trackd_links.urls import browser_preprocess

PIXEL_MODES = ("bottom", "marker", "none")
TEXT_MODES = ("off", "match-html", "all")
MAX_PATTERNS = 1000
MAX_PATTERN_CHARS = 2048

_HOST_PATTERN = re.compile(r"(?:\*\.)?[^\s/?#@*:\\\[\]]+")  # fullmatch
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


class OptionsError(ValueError):
    """An invalid option: `field` names it (e.g. "skip[2]"), `message` says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _strings(field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise OptionsError(field, "must be a list of strings")
    if len(value) > MAX_PATTERNS:
        raise OptionsError(field, f"at most {MAX_PATTERNS} entries")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise OptionsError(f"{field}[{i}]", "must be a non-empty string")
        if len(item) > MAX_PATTERN_CHARS:
            raise OptionsError(f"{field}[{i}]", f"at most {MAX_PATTERN_CHARS} characters")
    return tuple(value)


def _check_skip(patterns: tuple[str, ...]) -> None:
    for i, pattern in enumerate(patterns):
        if _WHITESPACE_OR_CONTROL.search(pattern):
            raise OptionsError(f"skip[{i}]", "must not contain whitespace or control characters")
        if "://" not in pattern and not _HOST_PATTERN.fullmatch(pattern):
            raise OptionsError(f"skip[{i}]", "must be a host, *.host, or a URL prefix containing ://")


@dataclass(frozen=True, slots=True)
class RewriteOptions:
    pixel: Literal["bottom", "marker", "none"] = "bottom"
    text: Literal["off", "match-html", "all"] = "match-html"
    honeypot: bool = False
    list_unsubscribe: tuple[str, ...] = ()  # URLs never to track (exact, after the same URL cleaning as links)
    skip: tuple[str, ...] = ()  # patterns of URLs never to track (syntax in this module's docstring)

    def __post_init__(self) -> None:
        if self.pixel not in PIXEL_MODES:
            raise OptionsError("pixel", f"must be one of {', '.join(PIXEL_MODES)}")
        if self.text not in TEXT_MODES:
            raise OptionsError("text", f"must be one of {', '.join(TEXT_MODES)}")
        if not isinstance(self.honeypot, bool):
            raise OptionsError("honeypot", "must be true or false")
        object.__setattr__(self, "list_unsubscribe", _strings("list_unsubscribe", self.list_unsubscribe))
        object.__setattr__(self, "skip", _strings("skip", self.skip))
        _check_skip(self.skip)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> RewriteOptions:
        """Options from JSON-like data; raises OptionsError on anything invalid (an API 422)."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise OptionsError("options", "must be an object")
        for key in raw:
            if key not in cls.__dataclass_fields__:
                raise OptionsError(str(key), "unknown option")
        values = dict(raw)
        for key in ("list_unsubscribe", "skip"):
            if key in values:
                values[key] = _strings(key, values[key])
        for key in ("pixel", "text"):
            if key in values and not isinstance(values[key], str):
                raise OptionsError(key, "must be a string")
        return cls(**values)

    def unsubscribe_urls(self) -> frozenset[str]:
        """The List-Unsubscribe URLs as links are compared: `<>` dropped, then cleaned."""
        out = set()
        for url in self.list_unsubscribe:
            url = url.strip()
            if url.startswith("<") and url.endswith(">"):
                url = url[1:-1]
            out.add(browser_preprocess(url))
        return frozenset(out)
