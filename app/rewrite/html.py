"""Which spans of an HTML part change: the links to track, and where the pixel and honeypot go.

Rewritten: the first `href` of `a`, `area` and Outlook VML shapes (`v:roundrect`, `v:rect`,
`v:oval`, `v:shape`, `v:image`, `v:line`, `v:polyline`, `v:arc`, `v:curve`), also inside
conditional comments (`<!--[if mso]>...<![endif]-->`, whose inside is tokenized again).
Downlevel-revealed markup (`<![if !mso]>...<![endif]>`, `<!--[if !mso]><!-->...<!--<![endif]-->`)
is ordinary markup to a tokenizer and is scanned as such. Never touched: `link`, `base`, `img`,
forms, anything else's attributes, raw-text elements (tokenize.py), ordinary comments, SVG and
MathML links (inside `<svg>`/`<math>`), and link elements inside `<head>` (from a `<head>` start
tag to `</head>` or a `<body>` start tag: a choice; browsers would move such an `<a>` into the
body, but it was written as head matter).

Only the value span changes (between the quotes, or the unquoted value), with the quote kept;
click URLs need no escaping (template.py checks it). The URL signed is the value decoded by the
attribute rule (attrs.py), then cleaned as the URL standard does (outer C0/space stripped, tab
and newlines removed), never re-encoded.

Opt-out markers on the element: `data-trackd="off"`, `data-trackd-notrack`, `clicktracking="off"`,
`data-pm-no-track`, `mc:disable-tracking`, `ses:no-track`, `data-msys-clicktrack="0"`,
`data-mautic-disable-tracking`, `mautic:disable-tracking`, and `rel` containing `notrack`.
Names: `data-trackd-name` (or `data-msys-linkname`), at most 64 bytes of UTF-8.

Pixel: before the last `</body>` end tag outside comments and raw text (any case); appended when
there is none (before an unclosed comment, tag or raw-text element the document ends in,
which would swallow it); or in place of the first `<!--trackd:open-->` (pixel "marker"; no marker: no
pixel); never inside a conditional comment; at most one, and none when the email already has
trackd's pixel (an `<img>` whose src starts with an own prefix's `/o/` beside its `/c/`). The
honeypot goes where the bottom pixel would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.rewrite.attrs import decode_attribute
from app.rewrite.links import LinkRules
from app.rewrite.tokenize import COMMENT, END, START, UNCLOSED, Attribute, attributes, tokens
from trackd_links.tokens import MAX_LINK_NAME_BYTES
from trackd_links.urls import browser_preprocess

LINK_ELEMENTS = frozenset(
    {"a", "area", "v:roundrect", "v:rect", "v:oval", "v:shape", "v:image", "v:line", "v:polyline", "v:arc", "v:curve"}
)
_PRESENCE_OPT_OUTS = frozenset(
    {"data-trackd-notrack", "data-pm-no-track", "mc:disable-tracking", "ses:no-track", "data-mautic-disable-tracking",
     "mautic:disable-tracking"}
)  # fmt: skip
_VALUE_OPT_OUTS = {"data-trackd": "off", "clicktracking": "off", "data-msys-clicktrack": "0"}
_NAME_ATTRIBUTES = ("data-trackd-name", "data-msys-linkname")
_FOREIGN = frozenset({"svg", "math"})
_MARKER = "trackd:open"
_WANTED = LINK_ELEMENTS | _FOREIGN | {"head", "body", "img"}  # the tags _walk looks at
# No URL trackd signs (2,048 characters, trackd_links.urls) is written in more than this, even
# with every character an entity and whitespace around it.
_LONGEST_RAW = 65_536
MAX_LINKS = 10_000  # per part: bounds a render's cost, and keeps every token's link index under 65536
_ASCII_WS = "\t\n\f\r "


@dataclass(frozen=True, slots=True)
class HtmlLink:
    start: int  # the value span replaced by the click URL
    end: int
    index: int  # per part, in document order
    name: str | None
    url: str  # decoded and cleaned: what is signed
    raw: str  # the value exactly as written


@dataclass(slots=True)
class HtmlPlan:
    links: list[HtmlLink] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (raw, reason)
    opted_out: set[str] = field(default_factory=set)  # cleaned URLs of opted-out links (kept out of text)
    bottom: int = -1  # where the bottom pixel (and honeypot) goes
    marker: tuple[int, int] | None = None  # the first `<!--trackd:open-->`
    has_pixel: bool = False  # trackd's open pixel is already there (an email rewritten twice)


@dataclass(slots=True)
class _State:
    in_head: bool = False
    last_body_end: int = -1
    foreign: int = 0  # open `<svg>`/`<math>` elements: their `a href` is SVG's, never rewritten
    unclosed: int = -1  # where a construct left open at the end of the document starts


def _opted_out(s: str, attrs: dict[str, Attribute]) -> bool:
    for name, attr in attrs.items():
        if name in _PRESENCE_OPT_OUTS:
            return True
        wanted = _VALUE_OPT_OUTS.get(name)
        if wanted is not None and _value(s, attr).strip(_ASCII_WS).lower() == wanted:
            return True
    rel = attrs.get("rel")
    return rel is not None and "notrack" in _value(s, rel).lower().split()


def _value(s: str, attr: Attribute) -> str:
    return decode_attribute(s[attr.value_start : attr.value_end])


def _name(s: str, attrs: dict[str, Attribute]) -> tuple[str | None, bool]:
    """The link's name and whether it is usable (a token carries 1 to 64 bytes of UTF-8, no NUL)."""
    for key in _NAME_ATTRIBUTES:
        attr = attrs.get(key)
        if attr is None:
            continue
        name = _value(s, attr)
        try:
            ok = 0 < len(name.encode("utf-8")) <= MAX_LINK_NAME_BYTES and "\x00" not in name
        except UnicodeEncodeError:
            ok = False
        return name, ok
    return None, True


def plan_html(s: str, rules: LinkRules) -> HtmlPlan:
    plan = HtmlPlan()
    state = _State()
    _walk(s, 0, len(s), False, rules, plan, state)
    if state.last_body_end >= 0:
        plan.bottom = state.last_body_end
    else:  # appended; before an unclosed comment, tag or raw text, where it would be swallowed
        plan.bottom = state.unclosed if state.unclosed >= 0 else len(s)
    return plan


def _walk(s: str, start: int, end: int, conditional: bool, rules: LinkRules, plan: HtmlPlan, state: _State) -> None:
    for kind, tok_start, tok_end, name, inner_start, inner_end in tokens(s, start, end, _WANTED):
        if kind == START:
            if name in LINK_ELEMENTS:
                if not state.foreign:
                    _link(s, inner_start, inner_end, rules, plan, state)
            elif name == "img" and not plan.has_pixel:
                src = next((a for a in attributes(s, inner_start, inner_end) if a.name == "src"), None)
                plan.has_pixel = src is not None and rules.own_pixel(browser_preprocess(_value(s, src)))
            elif name in _FOREIGN:
                state.foreign += s[inner_end - 1] != "/"  # `<svg/>` opens nothing
            elif not conditional:
                if name == "head":
                    state.in_head = True
                elif name == "body":
                    state.in_head = False
        elif kind == END:
            if name in _FOREIGN and state.foreign:
                state.foreign -= 1
            elif not conditional:
                if name == "body":
                    state.last_body_end = tok_start
                elif name == "head":
                    state.in_head = False
        elif kind == COMMENT:
            data_start, data_end = inner_start, inner_end
            # Not inside another conditional comment: comments do not nest, and a chain of unclosed
            # `<!--[if` would otherwise rescan the rest of the document once per link (quadratic).
            if not conditional and s[data_start : data_start + 3].lower() == "[if":
                gt = s.find(">", data_start, data_end)
                if gt >= 0:
                    _walk(s, gt + 1, data_end, True, rules, plan, state)
            elif not conditional and plan.marker is None and s[data_start:data_end].strip() == _MARKER:
                plan.marker = (tok_start, tok_end)
        elif kind == UNCLOSED and not conditional:
            state.unclosed = tok_start


def _link(s: str, start: int, end: int, rules: LinkRules, plan: HtmlPlan, state: _State) -> None:
    attrs = {a.name: a for a in attributes(s, start, end)}
    href = attrs.get("href")
    if href is None:
        return  # `<a name=...>` and the like: not a link
    raw = s[href.value_start : href.value_end]
    if len(raw) > _LONGEST_RAW:
        plan.skipped.append((raw, "invalid_url:too_long"))  # before decoding a megabyte of entities
        return
    url = browser_preprocess(decode_attribute(raw))
    if state.in_head:
        plan.skipped.append((raw, "in_head"))
        return
    if _opted_out(s, attrs):
        plan.opted_out.add(url)
        plan.skipped.append((raw, "opt_out"))
        return
    reason = rules.reason(url) if len(plan.links) < MAX_LINKS else "too_many_links"
    if reason is not None:
        plan.skipped.append((raw, reason))
        return
    name, name_ok = _name(s, attrs)
    if not name_ok:
        plan.skipped.append((raw, "invalid_name"))
        return
    plan.links.append(HtmlLink(href.value_start, href.value_end, len(plan.links), name, url, raw))
