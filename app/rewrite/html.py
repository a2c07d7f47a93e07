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
# Inside <svg>/<math>, these make their content HTML again (integration points: WHATWG 13.2.6.5)...
_INTEGRATION = frozenset({"foreignobject", "desc", "mi", "mo", "mn", "ms", "mtext", "annotation-xml"})
# ...and a start tag of one of these leaves foreign content altogether (the "breakout" list).
_BREAKOUT = frozenset(
    {"b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em", "embed", "h1", "h2",
     "h3", "h4", "h5", "h6", "head", "hr", "i", "img", "li", "listing", "menu", "meta", "nobr", "ol", "p", "pre",
     "ruby", "s", "small", "span", "strong", "strike", "sub", "sup", "table", "tt", "u", "ul", "var"}
)  # fmt: skip
# What may stand in a <head>: any other start tag ends it (the body starts implicitly).
_HEAD_CONTENT = frozenset(
    {"base", "basefont", "bgsound", "link", "meta", "title", "style", "script", "noscript", "template", "head"}
)
_MARKER = "trackd:open"
_WANTED = LINK_ELEMENTS | _FOREIGN | _INTEGRATION | _BREAKOUT | {"head", "body", "img"}  # the tags _walk looks at
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
    head: tuple[int, int] = (-1, -1)  # the head's span: from `<head>` to where the body starts
    head_seen: bool = False  # a `<head>` after the first is no head (a browser ignores it)
    last_body_end: int = -1
    foreign: int = 0  # open `<svg>`/`<math>` elements: their `a href` is SVG's, never rewritten
    integration: int = 0  # open integration points inside them, where content is HTML again
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
            if state.foreign and not state.integration and name in _BREAKOUT:
                state.foreign = 0  # a browser pops every foreign element here
            if name in LINK_ELEMENTS:
                if state.foreign and not state.integration:
                    _foreign_link(s, inner_start, inner_end, plan)
                else:
                    _link(s, inner_start, inner_end, rules, plan, state)
            elif name == "img" and not plan.has_pixel:
                src = next((a for a in attributes(s, inner_start, inner_end) if a.name == "src"), None)
                plan.has_pixel = src is not None and rules.own_pixel(browser_preprocess(_value(s, src)))
            elif name in _FOREIGN:
                state.foreign += not _self_closing(s, inner_start, inner_end)  # `<svg/>` opens nothing
            elif name in _INTEGRATION and state.foreign:
                state.integration += not _self_closing(s, inner_start, inner_end)
            elif name == "body" and not conditional:
                state.head_seen = True  # a `<head>` after the body has started is ignored
            elif name == "head" and not conditional and not state.head_seen:
                state.head_seen = True
                state.head = (tok_start, _head_end(s, tok_end, end))
        elif kind == END:
            if name in _INTEGRATION and state.integration:
                state.integration -= 1
            elif name in _FOREIGN and state.foreign:
                state.foreign -= 1
                state.integration = 0
            elif not conditional and name == "body":
                state.last_body_end = tok_start
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


def _self_closing(s: str, start: int, end: int) -> bool:
    """`<svg ... />`: a `/` right before `>` that is not the end of an unquoted value (`width=10/`)."""
    return s[end - 1] == "/" and not any(a.value_end == end for a in attributes(s, start, end))


def _head_end(s: str, pos: int, stop: int) -> int:
    """Where the head that starts before `pos` ends: `</head>`, `<body>`, or the first start tag
    of body content (a `<div>`, a `<table>`: a browser starts the body there), so that a missing
    `</head>` does not hide the whole email. A link itself does not end it: an `<a>` written in
    the head is never rewritten (issue #15), whatever a browser would make of it. One scan, once
    per email."""
    for kind, tok_start, _, name, _, _ in tokens(s, pos, stop, None):
        ends = name not in _HEAD_CONTENT and name not in LINK_ELEMENTS
        if (kind == START and ends) or (kind == END and name == "head"):
            return tok_start
    return stop


def _foreign_link(s: str, start: int, end: int, plan: HtmlPlan) -> None:
    """A link of SVG or MathML (`<svg><a href>`): never rewritten, but reported."""
    href = next((a for a in attributes(s, start, end) if a.name == "href"), None)
    if href is not None:
        plan.skipped.append((s[href.value_start : href.value_end], "foreign"))


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
    if state.head[0] <= start < state.head[1]:
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
