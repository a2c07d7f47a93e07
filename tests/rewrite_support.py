"""Helpers for the rewrite engine's tests: a tiny signer whose URLs say what they stand for, and undo()."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from app.rewrite import Rendered, RewriteOptions, compile_email
from app.rewrite.template import HONEYPOT_AFTER, HONEYPOT_BEFORE, PIXEL_AFTER, PIXEL_BEFORE

TRK = "https://trk.test"


@dataclass
class TagSigner:
    """Click URLs `https://trk.test/c/<part>-<token index>-<honeypot>`: unique per link and easy to read."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def click_url(self, **kw: Any) -> str:
        self.calls.append(kw)
        return f"{TRK}/c/{kw['part']}-{kw['link_index']}{'-hp' if kw['honeypot'] else ''}"

    def open_url(self, **kw: Any) -> str:
        return f"{TRK}/o/{kw['recipient_id']}.gif"


def rewrite(html: str | None, plain: str | None = None, **options: Any) -> Rendered:
    own = options.pop("own_prefixes", (f"{TRK}/c/",))
    compiled = compile_email(html, plain, RewriteOptions.parse(options), own_prefixes=own)
    return compiled.render(TagSigner(), "camp", "rcpt")


def pixel(open_url: str) -> str:
    return PIXEL_BEFORE + open_url + PIXEL_AFTER


_CLICK = re.compile(re.escape(TRK) + r"/c/(?:html|text)-[0-9]+(?:-hp)?")


def _restore(part: str | None, raws: dict[str, str]) -> str | None:
    """Each click URL back to its raw, in one pass (a 2 MB email has thousands of links)."""
    if part is None:
        assert not raws
        return None
    seen: list[str] = []

    def back(m: re.Match[str]) -> str:
        if m.group() not in raws:
            return m.group()  # the honeypot, removed by the caller
        seen.append(m.group())
        return raws[m.group()]

    restored = _CLICK.sub(back, part)
    assert sorted(seen) == sorted(raws), "each click URL appears exactly once"
    return restored


def undo(rendered: Rendered) -> tuple[str | None, str | None]:
    """The contract's round trip: each click_url back to its raw, pixel and honeypot removed."""
    html = _restore(rendered.html, {link.click_url: link.raw for link in rendered.links if link.part == "html"})
    text = _restore(rendered.text, {link.click_url: link.raw for link in rendered.links if link.part == "text"})
    if html is not None and rendered.open_url:
        html = html.replace(pixel(rendered.open_url), "", 1)
        start = html.find(HONEYPOT_BEFORE + f"{TRK}/c/html-")
        if start >= 0 and "-hp" + HONEYPOT_AFTER in html:
            end = html.index("-hp" + HONEYPOT_AFTER, start) + len("-hp" + HONEYPOT_AFTER)
            html = html[:start] + html[end:]
    return html, text
