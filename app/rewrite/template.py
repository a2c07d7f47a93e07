"""Compile an email once per campaign, render it per recipient: literal chunks joined around signed URLs.

compile_email() tokenizes both parts, decides every link (html.py, text.py, links.py) and keeps
the result as literal strings with slots between them; render() only signs and joins, so it
costs a few microseconds plus the signer's work per link.

Link indexes. `Rendered.links[i].index` is per part, 0-based, in document order over tracked
links only (conditional-comment links in source order), as the response reports it. The
`link_index` put in a token is unique within the email: an HTML link's is its index, a text
link's is (number of HTML links) + its text index, and the honeypot's follows all of them
(HTML links + text links). The token also carries the part, so stats can tell them apart.

Honeypot (option `honeypot`): an empty link, hidden from people (`display:none`, `mso-hide:all`,
no content), from screen readers (`aria-hidden`) and from keyboards (`tabindex=-1`), placed where
the bottom pixel goes, pointing (with the honeypot flag in its token) to the first tracked HTML
link's URL so a scanner sees nothing special. No tracked HTML link: no honeypot. It is not
listed in `links`. Deliverability caveat: some filters score hidden links as a spam signal; use
it where bot clicks matter more than that risk.

Fail-open: compile never raises; on any failure (or input over `max_chars`) `error` is set and
render() gives the input back untouched with that error. Render also fails open, whole, if the
signer raises or returns a URL that would need escaping (any of `&"'<>` or whitespace).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from app.rewrite.html import plan_html
from app.rewrite.links import LinkRules
from app.rewrite.options import RewriteOptions
from app.rewrite.text import plan_text

PIXEL_BEFORE = '<img src="'
PIXEL_AFTER = (
    '" width="1" height="1" alt="" border="0" style="display:block;width:1px;height:1px;border:0;margin:0;padding:0;">'
)
HONEYPOT_BEFORE = '<a href="'
HONEYPOT_AFTER = (
    '" aria-hidden="true" tabindex="-1" style="display:none!important;mso-hide:all;font-size:0;line-height:0;'
    'max-height:0;overflow:hidden;"></a>'
)
_UNSAFE = re.compile(r"""[&"'<>\s]""")


class Signer(Protocol):
    """What render needs; the app passes one built on trackd_links.tokens.KeyRing."""

    def click_url(self, *, campaign_id: str, recipient_id: str, link_index: int, url: str, link_name: str | None,
                  part: str, sent_at: int | None, message_id: str | None, honeypot: bool) -> str: ...  # fmt: skip

    def open_url(self, *, campaign_id: str, recipient_id: str, sent_at: int | None, message_id: str | None) -> str: ...


@dataclass(frozen=True, slots=True)
class RenderedLink:
    part: str  # "html" | "text"
    index: int
    name: str | None
    url: str
    raw: str
    click_url: str
    # The index its token carries, unique within the email (the per-link stats' `index`, GET
    # /v1/campaigns/{id}/links): `index` for an HTML link, after the HTML links for a text one.
    link_index: int = 0


@dataclass(frozen=True, slots=True)
class Skipped:
    part: str
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rendered:
    html: str | None
    text: str | None
    open_url: str | None
    links: list[RenderedLink]
    skipped: list[Skipped]
    error: str | None


# A frozen dataclass's __init__ sets each field through object.__setattr__: 2.7 us per link, half
# of a render's budget at 20 links. Writing the slots through their descriptors gives the same
# object (equal, immutable from outside) in 0.6 us.
_NEW = object.__new__
_SET_PART, _SET_INDEX, _SET_NAME, _SET_URL, _SET_RAW, _SET_CLICK, _SET_LINK_INDEX = (
    RenderedLink.__dict__[f].__set__ for f in ("part", "index", "name", "url", "raw", "click_url", "link_index")
)


def _rendered_link(
    part: str, index: int, name: str | None, url: str, raw: str, click_url: str, link_index: int
) -> RenderedLink:
    link: RenderedLink = _NEW(RenderedLink)
    _SET_LINK_INDEX(link, link_index)
    _SET_PART(link, part)
    _SET_INDEX(link, index)
    _SET_NAME(link, name)
    _SET_URL(link, url)
    _SET_RAW(link, raw)
    _SET_CLICK(link, click_url)
    return link


class _Slot:
    """A place in the output where a signed URL goes: a link, the pixel (open) or the honeypot."""

    __slots__ = ("honeypot", "index", "is_open", "name", "part", "raw", "token_index", "url")

    def __init__(self, part: str, index: int, token_index: int, url: str, name: str | None, raw: str,
                 *, is_open: bool = False, honeypot: bool = False) -> None:  # fmt: skip
        self.part, self.index, self.token_index, self.url, self.name, self.raw = (
            part,
            index,
            token_index,
            url,
            name,
            raw,
        )
        self.is_open, self.honeypot = is_open, honeypot


_OPEN = _Slot("html", -1, -1, "", None, "", is_open=True)
_Edit = tuple[int, int, list["str | _Slot"]]


def _chunks(s: str, edits: list[_Edit]) -> tuple[list[str], list[_Slot]]:
    """Literal strings around the slots: lits[0] slot[0] lits[1] ... slot[n-1] lits[n]."""
    lits: list[str] = []
    slots: list[_Slot] = []
    pending: list[str] = []
    cursor = 0
    for start, end, pieces in sorted(edits, key=lambda e: (e[0], e[1])):
        if start < cursor:
            raise AssertionError("overlapping edits")
        pending.append(s[cursor:start])
        for piece in pieces:
            if isinstance(piece, str):
                pending.append(piece)
            else:
                lits.append("".join(pending))
                pending = []
                slots.append(piece)
        cursor = end
    pending.append(s[cursor:])
    lits.append("".join(pending))
    return lits, slots


class CompiledEmail:
    __slots__ = ("_html", "_html_lits", "_html_slots", "_skipped", "_text", "_text_lits", "_text_slots", "error")

    def __init__(self, html: str | None, text: str | None) -> None:
        self._html, self._text = html, text
        self.error: str | None = None
        self._html_lits: list[str] | None = None
        self._html_slots: list[_Slot] = []
        self._text_lits: list[str] | None = None
        self._text_slots: list[_Slot] = []
        self._skipped: list[Skipped] = []

    def _untouched(self, error: str) -> Rendered:
        return Rendered(self._html, self._text, None, [], [], error)

    def render(self, signer: Signer, campaign_id: str, recipient_id: str, *, sent_at: int | None = None,
               message_id: str | None = None) -> Rendered:  # fmt: skip
        """This recipient's email: cheap (joins precomputed literal chunks and signed URLs)."""
        if self.error is not None:
            return self._untouched(self.error)
        try:
            open_url = signer.open_url(campaign_id=campaign_id, recipient_id=recipient_id, sent_at=sent_at,
                                       message_id=message_id)  # fmt: skip
            if not open_url or _UNSAFE.search(open_url):
                raise ValueError("the signer's open URL would need escaping in HTML")
            links: list[RenderedLink] = []
            outs: list[str | None] = []
            click_url = signer.click_url
            for lits, slots in ((self._html_lits, self._html_slots), (self._text_lits, self._text_slots)):
                if lits is None:
                    outs.append(None)
                    continue
                urls: list[str] = []
                for slot in slots:
                    if slot.is_open:
                        urls.append(open_url)
                        continue
                    url = click_url(
                        campaign_id=campaign_id, recipient_id=recipient_id, link_index=slot.token_index, url=slot.url,
                        link_name=slot.name, part=slot.part, sent_at=sent_at, message_id=message_id,
                        honeypot=slot.honeypot,
                    )  # fmt: skip
                    urls.append(url)
                    if not slot.honeypot:
                        links.append(
                            _rendered_link(slot.part, slot.index, slot.name, slot.url, slot.raw, url, slot.token_index)
                        )
                # One check over all of them (cheaper than one per URL): an empty URL, or one that
                # would need escaping, would break the markup or the round trip.
                if not all(urls) or _UNSAFE.search("".join(urls)):
                    raise ValueError("the signer returned a URL that is empty or would need escaping in HTML")
                parts: list[str] = [""] * (2 * len(urls) + 1)
                parts[0::2] = lits
                parts[1::2] = urls
                outs.append("".join(parts))
        except Exception as exc:  # fail-open: never a half-rewritten email
            return self._untouched(f"render failed: {type(exc).__name__}: {exc}")
        return Rendered(outs[0], outs[1], open_url, links, list(self._skipped), None)


def compile_email(html: str | None, text: str | None, options: RewriteOptions, *,
                  own_prefixes: tuple[str, ...] = (), max_chars: int = 2_000_000) -> CompiledEmail:  # fmt: skip
    """Compile once per campaign; never raises (see CompiledEmail.error)."""
    compiled = CompiledEmail(html, text)
    try:
        if not (html is None or isinstance(html, str)) or not (text is None or isinstance(text, str)):
            compiled.error = "html and text must be strings"
        elif len(html or "") + len(text or "") > max_chars:
            compiled.error = f"too_large: the email is over {max_chars} characters"
        else:
            _compile(compiled, html, text, options, own_prefixes)
    except Exception as exc:  # fail-open: whatever the input does to us, the sender gets it back
        compiled.error = f"internal: {type(exc).__name__}"
    if compiled.error is not None:
        compiled._html_lits = compiled._text_lits = None
        compiled._html_slots, compiled._text_slots, compiled._skipped = [], [], []
    return compiled


def _compile(compiled: CompiledEmail, html: str | None, text: str | None, options: RewriteOptions,
             own_prefixes: tuple[str, ...]) -> None:  # fmt: skip
    rules = LinkRules(own_prefixes, options.unsubscribe_urls(), options.skip)
    skipped: list[Skipped] = []
    tracked: frozenset[str] = frozenset()
    opted_out: frozenset[str] = frozenset()
    n_html = 0
    html_edits: list[_Edit] = []
    first_url: str | None = None
    bottom = -1
    pixel: tuple[int, int] | None = None
    if html is not None:
        plan = plan_html(html, rules)
        n_html = len(plan.links)
        for link in plan.links:
            slot = _Slot("html", link.index, link.index, link.url, link.name, link.raw)
            html_edits.append((link.start, link.end, [slot]))
        skipped += [Skipped("html", raw, reason) for raw, reason in plan.skipped]
        tracked = frozenset(link.url for link in plan.links)
        opted_out = frozenset(plan.opted_out)
        first_url = plan.links[0].url if plan.links else None
        bottom = plan.bottom
        if plan.has_pixel:
            pass  # never a second pixel
        elif options.pixel == "bottom":
            pixel = (bottom, bottom)
        elif options.pixel == "marker" and plan.marker is not None:
            pixel = plan.marker
    n_text = 0
    if text is not None:
        text_links, text_skipped = plan_text(text, options.text, rules, tracked, opted_out)
        n_text = len(text_links)
        text_edits: list[_Edit] = [
            (t.start, t.end, [_Slot("text", t.index, n_html + t.index, t.url, None, t.url)]) for t in text_links
        ]
        skipped += [Skipped("text", raw, reason) for raw, reason in text_skipped]
        compiled._text_lits, compiled._text_slots = _chunks(text, text_edits)
    if html is not None:
        if options.honeypot and first_url is not None:
            honeypot = _Slot("html", -1, min(n_html + n_text, 0xFFFF), first_url, None, "", honeypot=True)
            html_edits.append((bottom, bottom, [HONEYPOT_BEFORE, honeypot, HONEYPOT_AFTER]))
        if pixel is not None:  # after the honeypot when both go at the bottom: the sort is stable
            html_edits.append((pixel[0], pixel[1], [PIXEL_BEFORE, _OPEN, PIXEL_AFTER]))
        compiled._html_lits, compiled._html_slots = _chunks(html, html_edits)
    compiled._skipped = skipped
