"""Which URLs of a plain-text part change, found as mail clients show them.

A URL starts with `http://` or `https://` (any case) and runs up to whitespace, `<`, `>` or `"`
(so `<https://...>` and `( https://... )` work); trailing `.,;:!?'` and unbalanced `)`, `]`, `}`
are left outside it (`https://x/Foo_(bar)` keeps its balanced parenthesis). Modes: `off` (the
part is untouched), `match-html` (only URLs equal to a URL tracked in the HTML part), `all`
(every URL the link rules accept). A URL opted out in the HTML part stays untracked here.
Every byte outside the replaced URLs is the input's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.rewrite.html import MAX_LINKS
from app.rewrite.links import LinkRules

_URL = re.compile(r"""(?i:https?://)[^\s<>"]++""")
_TRAILING = frozenset(".,;:!?'")
_PAIRS = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True, slots=True)
class TextLink:
    start: int
    end: int
    index: int
    url: str


def _trimmed_end(s: str, start: int, end: int) -> int:
    """Where the URL in s[start:end] ends once trailing punctuation and unbalanced closers are cut."""
    counts = {c: s.count(c, start, end) for c in "()[]{}"}
    while end > start:
        last = s[end - 1]
        if last in _TRAILING:
            end -= 1
        elif last in _PAIRS and counts[last] > counts[_PAIRS[last]]:
            counts[last] -= 1
            end -= 1
        else:
            break
    return end


def plan_text(
    s: str, mode: str, rules: LinkRules, tracked_in_html: frozenset[str], opted_out: frozenset[str]
) -> tuple[list[TextLink], list[tuple[str, str]]]:
    """The links to track and the skipped URLs (raw, reason) of a text part."""
    links: list[TextLink] = []
    skipped: list[tuple[str, str]] = []
    if mode == "off":
        return links, skipped
    for m in _URL.finditer(s):
        end = _trimmed_end(s, m.start(), m.end())
        url = s[m.start() : end]
        if len(links) >= MAX_LINKS:
            reason: str | None = "too_many_links"
        elif url in opted_out:
            reason = "opted_out_in_html"
        else:
            reason = rules.reason(url)
            if reason is None and mode == "match-html" and url not in tracked_in_html:
                reason = "not_in_html"
        if reason is not None:
            skipped.append((url, reason))
            continue
        links.append(TextLink(m.start(), end, len(links), url))
    return links, skipped
