"""Black-box tests of the rewrite engine (app.rewrite) from the spec: issue #15, docs/rewrite.md and
../shared/research/email-rewriting.md (sections 5 and 6). Written without reading the engine's code.

The signer is a tiny fake (fixed-width URLs, so that the round trip can be checked), not a mock of the engine.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape as html_unescape
from html.entities import html5 as HTML5_ENTITIES
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.rewrite import CompiledEmail, OptionsError, Rendered, RenderedLink, RewriteOptions, compile_email

# Independent analysis helpers (from the spec, not the engine): a WHATWG attribute-value decoder, the URL
# standard's input cleaning, and a link finder on the stdlib html.parser (analysis only: it is quadratic on
# hostile input on unpatched Pythons, so it never sees those).
_NUMERIC = re.compile(r"&#[xX][0-9a-fA-F]+;?|&#[0-9]+;?")
_LONGEST_ENTITY = max(len(k) for k in HTML5_ENTITIES)
_HTML5 = HTML5_ENTITIES


def decode_attribute(raw: str) -> str:
    """Decode an attribute value as the HTML standard's attribute-value states do.

    Differs from ``html.unescape`` in one place: a named reference without ``;`` (``&region``) is left as it
    stands when the next character is ``=`` or alphanumeric.
    """
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c != "&":
            j = raw.find("&", i)
            if j < 0:
                j = n
            out.append(raw[i:j])
            i = j
            continue
        m = _NUMERIC.match(raw, i)
        if m:
            out.append(html_unescape(m.group(0)))
            i = m.end()
            continue
        rest = raw[i + 1 : i + 1 + _LONGEST_ENTITY]
        for k in range(len(rest), 0, -1):
            name = rest[:k]
            if name in _HTML5:
                after = raw[i + 1 + k : i + 2 + k]
                if not name.endswith(";") and (after == "=" or after.isalnum()):
                    out.append("&")
                    i += 1
                else:
                    out.append(_HTML5[name])
                    i += 1 + k
                break
        else:
            out.append("&")
            i += 1
    return "".join(out)


def clean_url(decoded: str) -> str:
    """The URL standard's input cleaning: strip leading/trailing C0 controls and spaces, remove tab, LF, CR."""
    stripped = decoded.strip("".join(chr(c) for c in range(0x21)))
    return stripped.replace("\t", "").replace("\n", "").replace("\r", "")


def target_of(raw: str) -> str:
    return clean_url(decode_attribute(raw))


VML_SHAPES = frozenset(
    {"v:roundrect", "v:rect", "v:oval", "v:shape", "v:image", "v:line", "v:polyline", "v:arc", "v:curve"}
)
LINK_TAGS = frozenset({"a", "area"}) | VML_SHAPES
RAW_TEXT = ("title", "textarea", "xmp", "iframe", "noembed", "noframes")

_ATTR = re.compile(
    r"""[\s/]*(?P<name>[^\s/>][^\s/>=]*)(?:\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<uq>[^\s>]*)))?""",
)
_TAG_NAME = re.compile(r"<[^\s/>]+")


def first_href(start_tag: str) -> str | None:
    """The raw value of the first ``href`` attribute of a verbatim start tag (browser attribute rules)."""
    m = _TAG_NAME.match(start_tag)
    if not m:
        return None
    pos = m.end()
    end = len(start_tag) - 1  # the closing '>'
    while pos < end:
        a = _ATTR.match(start_tag, pos, end)
        if not a or a.end() == pos:
            break
        pos = a.end()
        if a.group("name").lower() == "href":
            for g in ("dq", "sq", "uq"):
                if a.group(g) is not None:
                    return a.group(g)
            return ""
    return None


@dataclass(frozen=True, slots=True)
class FoundLink:
    tag: str
    raw: str
    in_conditional: bool


class _LinkFinder(HTMLParser):
    def __init__(self, found: list[FoundLink], in_conditional: bool = False) -> None:
        super().__init__(convert_charrefs=False)
        self.found = found
        self.in_conditional = in_conditional
        self.in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self.in_head = True
        elif tag == "body":
            self.in_head = False
        if tag in RAW_TEXT:
            self.set_cdata_mode(tag)
        if tag in LINK_TAGS and not self.in_head:
            text = self.get_starttag_text() or ""
            raw = first_href(text)
            if raw is not None:
                self.found.append(FoundLink(tag, raw, self.in_conditional))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in LINK_TAGS and not self.in_head:
            raw = first_href(self.get_starttag_text() or "")
            if raw is not None:
                self.found.append(FoundLink(tag, raw, self.in_conditional))

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False

    def handle_comment(self, data: str) -> None:
        if data.startswith("[if") and "]>" in data:
            body = data[data.index("]>") + 2 :]
            if body.endswith("<![endif]"):
                body = body[: -len("<![endif]")]
            sub = _LinkFinder(self.found, in_conditional=True)
            sub.in_head = self.in_head
            sub.feed(body)
            sub.close()


def find_links(document: str) -> list[FoundLink]:
    """Every first ``href`` of ``a``/``area``/VML shapes outside ``<head>``, comments and raw text, in order,
    including those inside conditional comments."""
    found: list[FoundLink] = []
    parser = _LinkFinder(found)
    parser.feed(document)
    parser.close()
    return found


def is_trackable(raw: str) -> bool:
    """Absolute http(s), a host, no template placeholder, no '<' (unterminated quote)."""
    url = target_of(raw)
    if not re.match(r"(?i)https?://[^/?#\s]", url):
        return False
    if "<" in url:
        return False
    return not any(p in url for p in ("{{", "}}", "{%", "%}", "*|", "|*", "%%", "<%", "%>", "[[", "]]"))


TRK = "https://t.example.com"
OWN = (f"{TRK}/c/", f"{TRK}/o/")
CORPUS = Path(__file__).parent / "data" / "email-templates"
CORPUS_HTML = sorted(CORPUS.glob("*.html"))


@dataclass
class FakeSigner:
    calls: list[dict[str, Any]] = field(default_factory=list)
    opens: list[dict[str, Any]] = field(default_factory=list)
    bad: str | None = None  # when set, returned as the click URL (to test fail-open)

    def click_url(
        self,
        *,
        campaign_id: str,
        recipient_id: str,
        link_index: int,
        url: str,
        link_name: str | None,
        part: str,
        sent_at: int | None,
        message_id: str | None,
        honeypot: bool,
    ) -> str:
        self.calls.append(
            {
                "campaign_id": campaign_id,
                "recipient_id": recipient_id,
                "link_index": link_index,
                "url": url,
                "link_name": link_name,
                "part": part,
                "sent_at": sent_at,
                "message_id": message_id,
                "honeypot": honeypot,
            }
        )
        if self.bad is not None:
            return self.bad
        if honeypot:
            return f"{TRK}/c/{recipient_id}-hp"
        return f"{TRK}/c/{recipient_id}-{part}-{link_index:05d}"

    def open_url(self, *, campaign_id: str, recipient_id: str, sent_at: int | None, message_id: str | None) -> str:
        self.opens.append({"campaign_id": campaign_id, "recipient_id": recipient_id})
        return f"{TRK}/o/{recipient_id}.gif"


def opts(**kw: Any) -> RewriteOptions:
    return RewriteOptions(**kw)


def run(
    html_part: str | None,
    text_part: str | None = None,
    /,
    *,
    own: tuple[str, ...] = OWN,
    max_chars: int = 2_000_000,
    signer: FakeSigner | None = None,
    **kw: Any,
) -> Rendered:
    """Compile and render for recipient r1; keyword arguments are RewriteOptions (pixel defaults to none here)."""
    kw.setdefault("pixel", "none")
    compiled = compile_email(html_part, text_part, RewriteOptions(**kw), own_prefixes=own, max_chars=max_chars)
    return compiled.render(signer or FakeSigner(), "camp1", "r1")


def click(part: str, index: int, rcpt: str = "r1") -> str:
    return f"{TRK}/c/{rcpt}-{part}-{index:05d}"


def urls(r: Rendered, part: str = "html") -> list[str]:
    return [link.url for link in r.links if link.part == part]


def skipped_raws(r: Rendered, part: str = "html") -> list[str]:
    return [s.raw for s in r.skipped if s.part == part]


def restore(out: str, r: Rendered | list[RenderedLink], part: str) -> str:
    """Replace each click_url in the output by its raw value (positionally, each must occur once)."""
    spans: list[tuple[int, int, str]] = []
    for link in r if isinstance(r, list) else r.links:
        if link.part != part:
            continue
        assert out.count(link.click_url) == 1, (link, out.count(link.click_url))
        i = out.index(link.click_url)
        spans.append((i, i + len(link.click_url), link.raw))
    spans.sort()
    pieces: list[str] = []
    pos = 0
    for start, end, raw in spans:
        assert start >= pos, "overlapping click URLs"
        pieces.append(out[pos:start])
        pieces.append(raw)
        pos = end
    pieces.append(out[pos:])
    return "".join(pieces)


def split_insertion(restored: str, original: str) -> tuple[int, str]:
    """restored must be original with exactly one contiguous insertion: returns (position, inserted)."""
    assert len(restored) > len(original)
    p = 0
    n = min(len(restored), len(original))
    while p < n and restored[p] == original[p]:
        p += 1
    extra = len(restored) - len(original)
    assert restored[p + extra :] == original[p:], "more than one change outside the rewritten values"
    return p, restored[p : p + extra]


def assert_inserted_at(restored: str, original: str, pos: int, needle: str) -> str:
    extra = len(restored) - len(original)
    assert extra > 0, "nothing inserted"
    assert restored[:pos] == original[:pos], "bytes before the insertion point changed"
    assert restored[pos + extra :] == original[pos:], "bytes after the insertion point changed"
    inserted = restored[pos : pos + extra]
    assert needle in inserted, inserted
    return inserted


def assert_untouched(html: str, r: Rendered) -> None:
    assert r.error is None, r.error
    assert r.html == html
    assert urls(r) == []


# --------------------------------------------------------------------------------------------------------------
# Section 6 matrix and issue item 2: what is rewritten, matched as browsers tokenise HTML


@pytest.mark.parametrize(
    ("html", "expected_out", "url"),
    [
        ('<A HREF="https://x.example/">X</A>', '<A HREF="{c}">X</A>', "https://x.example/"),
        ("<a href=https://x.example/u?a=1&b=2>X</a>", "<a href={c}>X</a>", "https://x.example/u?a=1&b=2"),
        ("<a href=https://x.example/>X</a>", "<a href={c}>X</a>", "https://x.example/"),
        ('<a href = "https://x.example">X</a>', '<a href = "{c}">X</a>', "https://x.example"),
        ("<a href\n=\n'https://x.example/'\n>X</a>", "<a href\n=\n'{c}'\n>X</a>", "https://x.example/"),
        ("<a\thref =  https://x.example/q >X</a>", "<a\thref =  {c} >X</a>", "https://x.example/q"),
        ('<a href="\n https://x.example/n \n">X</a>', '<a href="{c}">X</a>', "https://x.example/n"),
        ('<a href="https://x.example/a\tb\nc\r\nd">X</a>', '<a href="{c}">X</a>', "https://x.example/abcd"),
        ('<a href="https://x.example/?a=1&amp;b=2">X</a>', '<a href="{c}">X</a>', "https://x.example/?a=1&b=2"),
        (
            '<a href="https://x.example/?a=1&region=eu&currency=usd">X</a>',
            '<a href="{c}">X</a>',
            "https://x.example/?a=1&region=eu&currency=usd",
        ),
        (
            '<a href="https://x.example/?a&copy=2&not=3&para=4&times=5&pound=6&micro=7&cent=8&sect=9">X</a>',
            '<a href="{c}">X</a>',
            "https://x.example/?a&copy=2&not=3&para=4&times=5&pound=6&micro=7&cent=8&sect=9",
        ),
        ('<a href="https://x.example/?a=1&amp;amp;b=2">X</a>', '<a href="{c}">X</a>', "https://x.example/?a=1&amp;b=2"),
        (
            '<a href="https://x.example/?a=1&#38;b=2&#x26;c=3&#X26;d">X</a>',
            '<a href="{c}">X</a>',
            "https://x.example/?a=1&b=2&c=3&d",
        ),
        ('<a href="https://x.example/?code&#x3D;test">X</a>', '<a href="{c}">X</a>', "https://x.example/?code=test"),
        ('<a href="https://x.example/&quot;q&quot;">X</a>', '<a href="{c}">X</a>', 'https://x.example/"q"'),
        ("<a href='https://x.example/?q=\"x\"'>X</a>", "<a href='{c}'>X</a>", 'https://x.example/?q="x"'),
        (
            '<a href="https://a.example/" href="https://b.example/">X</a>',
            '<a href="{c}" href="https://b.example/">X</a>',
            "https://a.example/",
        ),
        (
            '<a HREF="https://a.example/" href="https://b.example/">X</a>',
            '<a HREF="{c}" href="https://b.example/">X</a>',
            "https://a.example/",
        ),
        (
            '<a title="a > b" href="https://x.example/">X</a>',
            '<a title="a > b" href="{c}">X</a>',
            "https://x.example/",
        ),
        (
            '<a title=\'a "> b\' href="https://x.example/">X</a>',
            '<a title=\'a "> b\' href="{c}">X</a>',
            "https://x.example/",
        ),
        (
            '<a hreflang="en" data-href="https://no.example/" href="https://x.example/">X</a>',
            '<a hreflang="en" data-href="https://no.example/" href="{c}">X</a>',
            "https://x.example/",
        ),
        ('<a download href="https://x.example/f.pdf">X</a>', '<a download href="{c}">X</a>', "https://x.example/f.pdf"),
        ('<a/href="https://x.example/">X</a>', '<a/href="{c}">X</a>', "https://x.example/"),
        ('<area shape="rect" href="https://x.example/m">', '<area shape="rect" href="{c}">', "https://x.example/m"),
        ('<AREA HREF="https://x.example/m"/>', '<AREA HREF="{c}"/>', "https://x.example/m"),
        ('<a href="HTTPS://X.EXAMPLE/Path">X</a>', '<a href="{c}">X</a>', "HTTPS://X.EXAMPLE/Path"),
        ('<a href="http://x.example/">X</a>', '<a href="{c}">X</a>', "http://x.example/"),
        (
            '<a href="https://x.example/a%20b/%2F?z=2&a=1&a=0#frag">X</a>',
            '<a href="{c}">X</a>',
            "https://x.example/a%20b/%2F?z=2&a=1&a=0#frag",
        ),
        ('<a href="https://x.example/a b|c{d}">X</a>', '<a href="{c}">X</a>', "https://x.example/a b|c{d}"),
        ('<a href="https://x.example/">X</a >', '<a href="{c}">X</a >', "https://x.example/"),
    ],
)
def test_rewritten_one_link(html: str, expected_out: str, url: str) -> None:
    signer = FakeSigner()
    r = run(html, signer=signer)
    assert r.error is None
    assert r.html == expected_out.replace("{c}", click("html", 0))
    assert [(link.part, link.index, link.url) for link in r.links] == [("html", 0, url)]
    # raw is the value exactly as it stood; the signer got the decoded, cleaned target exactly
    assert r.links[0].raw in html
    assert r.links[0].url == target_of(r.links[0].raw)
    assert [c["url"] for c in signer.calls] == [url]
    assert restore(r.html, r, "html") == html


def test_decoder_in_these_tests_is_the_whatwg_one() -> None:
    # guards the test helper itself against Python's html.unescape trap
    assert decode_attribute("?a=1&region=eu&currency=usd") == "?a=1&region=eu&currency=usd"
    assert decode_attribute("&amp;amp;") == "&amp;"
    assert decode_attribute("&copy; &copy") == "\u00a9 \u00a9"


# VML shapes (research 5.2), in and out of conditional comments
@pytest.mark.parametrize("shape", ["v:roundrect", "v:rect", "v:oval", "v:shape", "v:image", "V:RoundRect"])
def test_vml_in_conditional_comment_and_fallback_share_url(shape: str) -> None:
    u = "https://x.example/u?a=1&amp;b=2"
    html = (
        f'<body><!--[if mso]><{shape} xmlns:v="urn:schemas-microsoft-com:vml" href="{u}" style="height:40px">'
        f'<w:anchorlock/><center>Go</center></{shape}><![endif]--><a href="{u}">Go</a></body>'
    )
    r = run(html)
    assert r.error is None
    assert [(link.index, link.url) for link in r.links] == [(0, "https://x.example/u?a=1&b=2")] * 1 + [
        (1, "https://x.example/u?a=1&b=2")
    ]
    assert r.html == html.replace(u, click("html", 0), 1).replace(u, click("html", 1), 1)


@pytest.mark.parametrize(
    "opener", ["<!--[if mso]>", "<!--[if gte mso 9]>", "<!--[if (gte mso 9)|(IE)]>", "<!--[if !mso]><!-- -->"]
)
def test_a_inside_conditional_comment_rewritten(opener: str) -> None:
    html = f'<body>{opener}<a href="https://x.example/c">C</a><![endif]--></body>'
    r = run(html)
    assert urls(r) == ["https://x.example/c"]
    assert r.html == html.replace("https://x.example/c", click("html", 0))


def test_vml_outside_comment_rewritten() -> None:
    html = '<v:roundrect href="https://x.example/v">x</v:roundrect>'
    assert urls(run(html)) == ["https://x.example/v"]


@pytest.mark.parametrize(
    "html",
    [
        '<![if !mso]><a href="https://x.example/d">D</a><![endif]>',
        '<!--[if !mso]><!--><a href="https://x.example/d">D</a><!--<![endif]-->',
        '<!--><a href="https://x.example/d">D</a>',  # abrupt empty comment: the <a> is real
        '<!---><a href="https://x.example/d">D</a>',
        '<!-- x --!><a href="https://x.example/d">D</a>',  # --!> closes a comment
        '<!----><a href="https://x.example/d">D</a>',
    ],
)
def test_downlevel_revealed_and_odd_comment_ends(html: str) -> None:
    r = run(html)
    assert urls(r) == ["https://x.example/d"]
    assert r.html == html.replace("https://x.example/d", click("html", 0))


# --------------------------------------------------------------------------------------------------------------
# Issue item 2 "Never"


@pytest.mark.parametrize(
    "html",
    [
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=A&amp;display=swap">',
        '<LINK HREF="https://x.example/s.css" rel=stylesheet>',
        '<base href="https://x.example/">',
        '<img src="https://x.example/i.png" href="https://x.example/i">',
        '<form action="https://x.example/f"><button formaction="https://x.example/g">b</button></form>',
        '<script src="https://x.example/s.js"></script>',
        '<script>var s = "<a href=\\"https://x.example/s\\">";</script>',
        "<script><!--[if mso]><a href='https://x.example/s'>x</a><![endif]--></script>",
        '<style>a[href="https://x.example/"]{} <a href="https://x.example/st"></style>',
        '<title><a href="https://x.example/t">t</a></title>',
        '<textarea><a href="https://x.example/t">t</a></textarea>',
        '<xmp><a href="https://x.example/t">t</a></xmp>',
        '<noframes><a href="https://x.example/t">t</a></noframes>',
        '<!-- <a href="https://x.example/c">commented</a> -->',
        "<!-- <link href='https://fonts.googleapis.com/css?family=Roboto'> -->",
        '<!-- note: [if mso] <a href="https://x.example/c"> -->',
        '<html><head><a href="https://x.example/h">h</a></head><body></body></html>',
        '<head><meta http-equiv="refresh" content="0;url=https://x.example/m"></head>',
        '<button href="https://x.example/b">Inky</button><menu><item href="https://x.example/i">i</item></menu>',
        '<svg><a xlink:href="https://x.example/svg">s</a></svg>',
        '<abbr href="https://x.example/">a</abbr><address href="https://x.example/">a</address>',
        '</a href="https://x.example/end">',
        '<?php <a href="https://x.example/pi"> ?>',
        '<!x <a href="https://x.example/bogus">>',
        '<a<b href="https://x.example/ab">x</a<b>',
        '<div style="background:url(https://x.example/bg.png)">https://x.example/text</div>',
        '<v:fill src="https://x.example/bg.png" /><v:image src="https://x.example/i.png" />',
        '<iframe><a href="https://x.example/t">t</a></iframe>',
        '<noembed><a href="https://x.example/t">t</a></noembed>',
        '<plaintext><a href="https://x.example/t">t</a>',
        '<!--[if mso]><!-- <a href="https://x.example/c"> --><![endif]-->',
    ],
)
def test_never_rewritten(html: str) -> None:
    assert_untouched(html, run(html))


def test_script_double_escaped_content_is_still_script() -> None:
    # HTML tokenizer: "<!--<script>" in script data enters the double-escaped state, where "</script>" does not end
    # the script; the <a> below is script text, and only the last </script> closes the element
    html = '<script><!--<script></script><a href="https://x.example/s"></script><a href="https://x.example/ok">'
    r = run(html)
    assert urls(r) == ["https://x.example/ok"]


@pytest.mark.parametrize(
    ("html", "url"),
    [
        ('<a href="&#104;ttps://x.example/ent">x</a>', "https://x.example/ent"),
        ('<a href="https://x.example/a&#10;b&#9;c">x</a>', "https://x.example/abc"),
        ('<a href=https://x.example/a"b>x</a>', 'https://x.example/a"b'),
        ('<a x"y href="https://x.example/">x</a>', "https://x.example/"),
        ("<a href='https://x.example/'title=x>x</a>", "https://x.example/"),
        ('<select><a href="https://x.example/sel">x</a></select>', "https://x.example/sel"),
    ],
)
def test_more_browser_tokenisation(html: str, url: str) -> None:
    r = run(html)
    assert urls(r) == [url]
    assert restore(r.html or "", r, "html") == html


@pytest.mark.parametrize(
    "html",
    [
        '<a href="" href="https://x.example/">x</a>',  # the first href wins, even when empty
        '<a =href="https://x.example/">x</a>',  # attribute name "=href"
        "<a href= >x</a><a href>y</a>",
    ],
)
def test_first_href_rule_edge_cases(html: str) -> None:
    assert_untouched(html, run(html))


def test_svg_and_mathml_href_not_rewritten() -> None:
    # research 5.2: never SVG/MathML href
    html = '<svg><a href="https://x.example/svg">s</a></svg><math><mi href="https://x.example/m">m</mi></math>'
    assert_untouched(html, run(html))


def test_comment_inside_conditional_comment_ends_it() -> None:
    # the first --> ends the conditional comment: the <a> after it is ordinary markup (rewritten once)
    html = '<!--[if mso]><!-- inner --><a href="https://x.example/c">c</a><![endif]-->'
    r = run(html)
    assert urls(r) == ["https://x.example/c"]
    assert r.html == html.replace("https://x.example/c", click("html", 0))


def test_placeholder_in_vml_href_reported() -> None:
    html = '<!--[if mso]><v:roundrect href="{{cta_url}}"></v:roundrect><![endif]--><a href="{{cta_url}}">x</a>'
    r = run(html)
    assert_untouched(html, r)
    assert skipped_raws(r) == ["{{cta_url}}", "{{cta_url}}"]


def test_very_long_url_never_an_error() -> None:
    html = '<a href="https://x.example/?q=' + "a" * 10_000 + '">x</a>'
    r = run(html)
    assert r.error is None
    assert len(r.links) + len(r.skipped) == 1
    assert restore(r.html or "", r, "html") == html


def test_link_after_raw_text_and_comments_still_found() -> None:
    html = (
        '<head><title>a<a href="https://x.example/no"></title><style>p{}</style></head>'
        '<body><!-- <a href="https://x.example/no"> --><script>"<a href=https://x.example/no>"</script>'
        '<a href="https://x.example/yes">y</a></body>'
    )
    assert urls(run(html)) == ["https://x.example/yes"]


# --------------------------------------------------------------------------------------------------------------
# Issue item 3: which links


@pytest.mark.parametrize(
    "href",
    [
        "mailto:a@x.example?subject=hi&amp;body=x",
        "MAILTO:a@x.example",
        "tel:+441234567",
        "sms:+441234567",
        "#top",
        "#",
        "",
        " ",
        "javascript:void(0)",
        "data:text/html,hi",
        "//cdn.x.example/a",
        "/relative/path",
        "relative.html",
        "?q=1",
        "ftp://x.example/f",
        "myapp://open",
        "https://",
        "http:///nohost",
    ],
)
def test_non_http_links_left_alone_never_an_error(href: str) -> None:
    html = f'<p><a href="{href}">x</a> <a href="https://x.example/ok">ok</a></p>'
    r = run(html)
    assert r.error is None
    assert urls(r) == ["https://x.example/ok"]
    assert r.html == html.replace("https://x.example/ok", click("html", 0))


def test_bare_href_without_value_is_not_an_error() -> None:
    html = '<a href>x</a><a href=>y</a><a href="https://x.example/ok">ok</a>'
    r = run(html)
    assert r.error is None
    assert urls(r) == ["https://x.example/ok"]


PLACEHOLDERS = [
    "{{url}}",
    "{{ action_url }}",
    "{{{c2a_link}}}",
    "*|UNSUB|*",
    "*|ARCHIVE|*",
    "%%unsubscribe%%",
    "{% url 'x' %}",
    "<%asm_global_unsubscribe_raw_url%>",
    "[[PERMALINK]]",
    "https://x.example/{{id}}",
    "https://x.example/u?e=*|EMAIL|*",
    "https://x.example/%%id%%/p",
    "https://x.example/?a={% id %}",
    "https://x.example/<%= id %>",
    "https://x.example/[[ID]]",
]


@pytest.mark.parametrize("href", PLACEHOLDERS)
def test_placeholders_left_alone_and_reported(href: str) -> None:
    quote = "'" if '"' in href else '"'
    html = f"<a href={quote}{href}{quote}>x</a>"
    r = run(html)
    assert_untouched(html, r)
    assert href in skipped_raws(r), r.skipped
    assert all(s.reason for s in r.skipped)


@pytest.mark.parametrize("href", ["mailto:a@x.example", "#top", "//cdn.x.example/a", "/rel", "tel:+1"])
def test_every_non_tracked_link_is_reported_with_a_reason(href: str) -> None:
    # issue item 6: "the response lists every link ... and every skipped one with its reason"
    r = run(f'<a href="{href}">x</a>')
    assert [(s.part, s.raw) for s in r.skipped] == [("html", href)]
    assert r.skipped[0].reason


def test_own_links_not_wrapped_twice() -> None:
    html = f'<a href="{TRK}/c/abcDEF_-123">x</a><a href="https://x.example/">y</a>'
    r = run(html)
    assert urls(r) == ["https://x.example/"]
    assert r.html == html.replace("https://x.example/", click("html", 0))
    assert f"{TRK}/c/abcDEF_-123" in skipped_raws(r)


def test_rewriting_twice_is_idempotent() -> None:
    html = '<a href="https://x.example/1">1</a><a href="https://x.example/2">2</a></body>'
    once = run(html)
    assert once.html is not None
    twice = run(once.html)
    assert twice.error is None
    assert twice.html == once.html
    assert urls(twice) == []


@pytest.mark.parametrize(
    ("href", "unsub"),
    [
        ("https://x.example/unsub?u=1", "https://x.example/unsub?u=1"),
        ("https://x.example/unsub?u=1&amp;l=2", "https://x.example/unsub?u=1&l=2"),
        (" https://x.example/unsub\n", "https://x.example/unsub"),
    ],
)
def test_list_unsubscribe_never_tracked(href: str, unsub: str) -> None:
    html = f'<a href="{href}">unsubscribe</a><a href="https://x.example/other">o</a>'
    text = f"Unsubscribe: {unsub}\nOther: https://x.example/other\n"
    r = run(html, text, text="all", list_unsubscribe=(unsub,))
    assert r.error is None
    assert urls(r) == ["https://x.example/other"]
    assert r.html == html.replace("https://x.example/other", click("html", 0))
    # (text indexes are checked in test_indexes_names_and_signer_arguments; here only which URLs are tracked)
    assert urls(r, "text") == ["https://x.example/other"]
    assert restore(r.text or "", r, "text") == text
    assert unsub not in "".join(link.url for link in r.links)


OPT_OUT_ATTRIBUTES = [
    'data-trackd="off"',
    'clicktracking="off"',
    "clicktracking=off",
    "data-pm-no-track",
    'data-pm-no-track=""',
    "mc:disable-tracking",
    "ses:no-track",
    'data-msys-clicktrack="0"',
    "data-mautic-disable-tracking",
    'data-mautic-disable-tracking="true"',
    'rel="notrack"',
    'rel="noopener notrack"',
    "REL='NoTrack noopener'",
]


@pytest.mark.parametrize("marker", OPT_OUT_ATTRIBUTES)
@pytest.mark.parametrize("text_mode", ["match-html", "all"])
def test_opt_out_markers_honoured_in_html_and_text(marker: str, text_mode: str) -> None:
    u = "https://x.example/private?a=1&amp;b=2"
    html = f'<a {marker} href="{u}">p</a> <a href="https://x.example/public">q</a>'
    text = "Private: https://x.example/private?a=1&b=2\nPublic: https://x.example/public\n"
    r = run(html, text, text=text_mode)
    assert r.error is None
    assert urls(r) == ["https://x.example/public"]
    assert r.html == html.replace("https://x.example/public", click("html", 0))
    # a URL opted out in the HTML stays untracked in the text part
    assert urls(r, "text") == ["https://x.example/public"]
    assert restore(r.text or "", r, "text") == text
    assert "https://x.example/private?a=1&b=2\n" in (r.text or "")


@pytest.mark.parametrize("marker", ["mautic:disable-tracking", "data-trackd-notrack"])
def test_research_extra_opt_out_markers(marker: str) -> None:
    # research 5.3 lists these two beyond the list
    html = f'<a {marker} href="https://x.example/p">p</a>'
    assert_untouched(html, run(html))


@pytest.mark.parametrize(
    "attr", ['data-trackd="on"', 'clicktracking="on"', 'data-msys-clicktrack="1"', 'rel="noopener noreferrer"']
)
def test_non_opt_out_values_are_tracked(attr: str) -> None:
    assert urls(run(f'<a {attr} href="https://x.example/p">p</a>')) == ["https://x.example/p"]


def test_opt_out_on_one_element_only() -> None:
    html = '<a data-trackd="off" href="https://x.example/a">a</a><a href="https://x.example/b">b</a>'
    r = run(html)
    assert [(link.index, link.url) for link in r.links] == [(0, "https://x.example/b")]


# --------------------------------------------------------------------------------------------------------------
# Issue item 6: link identity


def test_indexes_names_and_signer_arguments() -> None:
    html = (
        '<a data-trackd-name="hero-cta" href="https://x.example/1">1</a>'
        '<a href="mailto:a@x.example">m</a>'
        '<!--[if mso]><v:roundrect href="https://x.example/2"></v:roundrect><![endif]-->'
        '<a href="https://x.example/2">2</a><area href="https://x.example/3">'
    )
    text = "Go https://x.example/2 or https://x.example/1"
    signer = FakeSigner()
    compiled = compile_email(html, text, RewriteOptions(pixel="none", text="match-html"), own_prefixes=OWN)
    r = compiled.render(signer, "camp9", "rcpt7", sent_at=1_700_000_000, message_id="<m@x>")
    assert r.error is None
    got = [(link.part, link.index, link.name, link.url) for link in r.links]
    assert got == [
        ("html", 0, "hero-cta", "https://x.example/1"),
        ("html", 1, None, "https://x.example/2"),
        ("html", 2, None, "https://x.example/2"),
        ("html", 3, None, "https://x.example/3"),
        ("text", 0, None, "https://x.example/2"),
        ("text", 1, None, "https://x.example/1"),
    ] or sorted(got) == sorted(
        [
            ("html", 0, "hero-cta", "https://x.example/1"),
            ("html", 1, None, "https://x.example/2"),
            ("html", 2, None, "https://x.example/2"),
            ("html", 3, None, "https://x.example/3"),
            ("text", 0, None, "https://x.example/2"),
            ("text", 1, None, "https://x.example/1"),
        ]
    )
    for c in signer.calls:
        assert c["campaign_id"] == "camp9"
        assert c["recipient_id"] == "rcpt7"
        assert c["sent_at"] == 1_700_000_000
        assert c["message_id"] == "<m@x>"
        assert c["honeypot"] is False
    # The token carries an index unique within the email (per-link stats must not merge the
    # HTML's link 0 with the text's link 0): the response gives it as link_index, beside the
    # per-part `index` of the contract; text links come after the HTML ones.
    assert {(c["part"], c["link_index"], c["url"], c["link_name"]) for c in signer.calls} == {
        (link.part, link.link_index, link.url, link.name) for link in r.links
    }
    html_links = sum(1 for link in r.links if link.part == "html")
    for link in r.links:
        assert link.link_index == (link.index if link.part == "html" else html_links + link.index)
    for link in r.links:
        assert link.click_url == click(link.part, link.link_index, "rcpt7")


def test_compile_once_render_per_recipient() -> None:
    html = '<a href="https://x.example/1">1</a><p>Hi</p></body>'
    compiled: CompiledEmail = compile_email(html, None, RewriteOptions(), own_prefixes=OWN)
    assert compiled.error is None
    signer = FakeSigner()
    a = compiled.render(signer, "c", "alice")
    b = compiled.render(signer, "c", "bob")
    assert a.html is not None and b.html is not None
    assert click("html", 0, "alice") in a.html and click("html", 0, "bob") in b.html
    assert a.open_url == f"{TRK}/o/alice.gif" and b.open_url == f"{TRK}/o/bob.gif"
    assert a.html.replace("alice", "bob") == b.html


# --------------------------------------------------------------------------------------------------------------
# Issue item 7: the pixel


def render_pixel(html: str, pixel: str = "bottom", **kw: Any) -> Rendered:
    return run(html, pixel=pixel, **kw)


def expected_open() -> str:
    return f"{TRK}/o/r1.gif"


@pytest.mark.parametrize(
    ("html", "before"),
    [
        ("<html><body><p>x</p></body></html>", "</body></html>"),
        ("<html><BODY><p>x</p></BODY></html>", "</BODY></html>"),
        ("<body>x<!-- </body> --></body>", "</body>"),
        ("<body>x</body><!-- </body> -->", "</body><!-- </body> -->"),
        ("<body>x</body><!--[if mso]></body><![endif]-->", "</body><!--[if mso]>"),
        ("<body>x<script>var s='</body>';</script></body>", "</body>"),
        ("<body>x<textarea></body></textarea></body>\n", "</body>\n"),
        ("<body>x</body></body></html>", "</body></html>"),
        ("<body>x</body >", "</body >"),
        ('<body>x</body x=">">', '</body x=">">'),
        ("<body>x</body></html>\n<!-- footer -->\n", "</body></html>\n<!--"),
    ],
)
def test_pixel_before_last_real_body_end(html: str, before: str) -> None:
    pos = html.rindex(before)
    r = render_pixel(html)
    assert r.error is None and r.html is not None
    assert r.open_url == expected_open()
    assert r.html.count(expected_open()) == 1
    assert_inserted_at(r.html, html, pos, expected_open())


@pytest.mark.parametrize(
    "html",
    [
        "<p>no body end</p>",
        "<body><p>x",
        "<p>x</p><!-- </body> -->",
        "",
        "<p title='</body>'>x</p>",
        "<script>'</body>'</script>",
    ],
)
def test_pixel_appended_without_body_end(html: str) -> None:
    r = render_pixel(html)
    assert r.error is None and r.html is not None
    assert r.html.count(expected_open()) == 1
    assert_inserted_at(r.html, html, len(html), expected_open())


@pytest.mark.parametrize(
    "html",
    [
        "<title><!--trackd:open--></title><body>x</body>",
        "<body><script><!--trackd:open--></script></body>",
        "<!--[if mso]><!--trackd:open--><![endif]--><body>x</body>",
    ],
)
def test_marker_inside_raw_text_or_conditional_comment_not_replaced(html: str) -> None:
    r = render_pixel(html, pixel="marker")
    assert r.error is None and r.html is not None
    assert r.html.count(expected_open()) <= 1
    if expected_open() in r.html:
        pos, _ = split_insertion(r.html, html)
        # not inside the <title>/<script> nor inside the conditional comment
        assert pos >= html.rindex("-->") + 3 or pos >= html.index("</title>") + 8


def test_pixel_markup_is_a_hidden_1x1_https_image() -> None:
    r = render_pixel("<body></body>")
    assert r.html is not None
    inserted = assert_inserted_at(r.html, "<body></body>", len("<body>"), expected_open())
    assert "<img" in inserted.lower()
    assert f'src="{expected_open()}"' in inserted
    assert 'width="1"' in inserted and 'height="1"' in inserted
    assert "<!--" not in inserted


def test_pixel_marker_replaced() -> None:
    html = "<body><p>x</p><!--trackd:open--><p>y</p></body>"
    r = render_pixel(html, pixel="marker")
    assert r.error is None and r.html is not None
    assert r.html.count(expected_open()) == 1
    pos = html.index("<!--trackd:open-->")
    without = html.replace("<!--trackd:open-->", "")
    assert "<!--trackd:open-->" not in r.html
    assert_inserted_at(r.html, without, pos, expected_open())


def test_pixel_marker_at_most_one_pixel() -> None:
    html = "<body><!--trackd:open--><p>x</p><!--trackd:open--></body>"
    r = render_pixel(html, pixel="marker")
    assert r.error is None and r.html is not None
    assert r.html.count(expected_open()) == 1


def test_pixel_marker_mode_never_uses_body_end_twice() -> None:
    html = "<body><!--trackd:open--></body>"
    r = render_pixel(html, pixel="marker")
    assert r.html is not None and r.html.count(expected_open()) == 1


def test_pixel_none() -> None:
    html = "<body><p>x</p></body>"
    r = render_pixel(html, pixel="none")
    assert r.html == html
    assert not r.html or expected_open() not in r.html


def test_default_options_insert_pixel_at_bottom() -> None:
    html = "<body><p>x</p></body>"
    compiled = compile_email(html, None, RewriteOptions(), own_prefixes=OWN)
    r = compiled.render(FakeSigner(), "c", "r1")
    assert r.html is not None
    assert_inserted_at(r.html, html, html.index("</body>"), expected_open())


def test_no_second_pixel_when_a_trackd_pixel_is_present() -> None:
    # research 5.5: never "a pixel when a trackd pixel is already present"
    html = f'<body><img src="{TRK}/o/abc.gif" width="1" height="1"></body>'
    r = render_pixel(html)
    assert r.html is not None
    assert r.html.count(f"{TRK}/o/") == 1


def test_pixel_not_in_text_part() -> None:
    r = run("<body></body>", "Hello https://x.example/", pixel="bottom", text="all")
    assert r.text is not None and "/o/" not in r.text


def test_honeypot_hidden_and_round_trips() -> None:
    html = '<html><body><a href="https://x.example/1">1</a></body></html>'
    signer = FakeSigner()
    r = run(html, honeypot=True, signer=signer)
    assert r.error is None and r.html is not None
    hp_calls = [c for c in signer.calls if c["honeypot"]]
    assert len(hp_calls) == 1
    hp = f"{TRK}/c/r1-hp"
    assert r.html.count(hp) == 1
    real = [link for link in r.links if link.click_url != hp]
    restored = restore(r.html, real, "html")
    _, inserted = split_insertion(restored, html)
    assert hp in inserted
    low = inserted.lower().replace(" ", "")
    assert 'aria-hidden="true"' in low
    assert "display:none" in low
    assert "<!--" not in inserted


def test_honeypot_off_by_default() -> None:
    signer = FakeSigner()
    run('<body><a href="https://x.example/">x</a></body>', signer=signer)
    assert not any(c["honeypot"] for c in signer.calls)


# --------------------------------------------------------------------------------------------------------------
# Issue item 8: the text part


@pytest.mark.parametrize(
    ("text", "expected", "found"),
    [
        (
            "See https://x.example/path/. (https://x.example/y) <https://x.example/z>",
            "See {0}. ({1}) <{2}>",
            ["https://x.example/path/", "https://x.example/y", "https://x.example/z"],
        ),
        ("Go to https://x.example/a, https://x.example/b; now", "Go to {0}, {1}; now", None),
        ("https://x.example/a: https://x.example/b! https://x.example/c?", "{0}: {1}! {2}?", None),
        ("Link ( https://x.example/p ) here", "Link ( {0} ) here", ["https://x.example/p"]),
        ("wiki https://x.example/Foo_(bar) end", "wiki {0} end", ["https://x.example/Foo_(bar)"]),
        ("(see https://x.example/Foo_(bar))", "(see {0})", ["https://x.example/Foo_(bar)"]),
        ("[https://x.example/b]", "[{0}]", ["https://x.example/b"]),
        ('"https://x.example/q" said', '"{0}" said', ["https://x.example/q"]),
        ("a<https://x.example/q>b", "a<{0}>b", ["https://x.example/q"]),
        ("line https://x.example/a\nnext", "line {0}\nnext", ["https://x.example/a"]),
        ("crlf https://x.example/a\r\nnext", "crlf {0}\r\nnext", ["https://x.example/a"]),
        ("tab\thttps://x.example/a\tx", "tab\t{0}\tx", ["https://x.example/a"]),
        ("HTTP://X.EXAMPLE/U?a=1&b=2 end", "{0} end", ["HTTP://X.EXAMPLE/U?a=1&b=2"]),
        ("q https://x.example/?a=1&amp;b=2 end", "q {0} end", ["https://x.example/?a=1&amp;b=2"]),
        ("end of sentence https://x.example.", "end of sentence {0}.", ["https://x.example"]),
        ("dots https://x.example/a...", "dots {0}...", ["https://x.example/a"]),
        ("x https://x.example/a) y", "x {0}) y", ["https://x.example/a"]),
        ("x https://x.example/a] y", "x {0}] y", ["https://x.example/a"]),
        ("x https://x.example/a} y", "x {0}}} y", ["https://x.example/a"]),
        ("x https://x.example/q?(a)=1 y", "x {0} y", ["https://x.example/q?(a)=1"]),
        ("see https://x.example/a> b", "see {0}> b", ["https://x.example/a"]),
        (
            "two https://x.example/a<https://x.example/b>",
            "two {0}<{1}>",
            ["https://x.example/a", "https://x.example/b"],
        ),
    ],
)
def test_text_part_url_boundaries(text: str, expected: str, found: list[str] | None) -> None:
    r = run(None, text, text="all")
    assert r.error is None
    assert r.html is None
    n = expected.count("{")
    assert r.text == expected.format(*(click("text", i) for i in range(n)))
    if found is not None:
        assert urls(r, "text") == found
    assert [link.index for link in r.links] == list(range(n))
    assert restore(r.text or "", r, "text") == text


@pytest.mark.parametrize(
    "text",
    [
        "mailto:a@x.example tel:+1 ftp://x.example/ www.x.example x.example/path",
        "https:// alone, http://",
        "Reset ( {{ action_url }} ) {{action_url}} *|UNSUB|* %%unsub%%",
        "",
    ],
)
def test_text_part_without_trackable_urls(text: str) -> None:
    r = run(None, text, text="all")
    assert r.error is None
    assert r.text == text
    assert urls(r, "text") == []


def test_text_placeholder_urls_left_alone_and_reported() -> None:
    text = "Go https://x.example/{{id}}/p now"
    r = run(None, text, text="all")
    assert r.text == text
    assert any("{{id}}" in s.raw and s.part == "text" for s in r.skipped), r.skipped


def test_text_match_html_only_tracks_urls_tracked_in_html() -> None:
    html = '<a href="https://x.example/both?a=1&amp;b=2">b</a><a href="mailto:x@x.example">m</a>'
    text = "Both: https://x.example/both?a=1&b=2\nOnly text: https://x.example/only\n"
    r = run(html, text, text="match-html")
    assert urls(r, "text") == ["https://x.example/both?a=1&b=2"]
    assert restore(r.text or "", r, "text") == text
    assert "Only text: https://x.example/only\n" in (r.text or "")


def test_text_off_leaves_text_untouched() -> None:
    html = '<a href="https://x.example/a">a</a>'
    text = "https://x.example/a"
    r = run(html, text, text="off")
    assert r.text == text
    assert urls(r, "text") == []
    assert urls(r) == ["https://x.example/a"]


def test_text_all_tracks_every_url_and_keeps_bytes() -> None:
    text = "Caf\u00e9 \u2603 \u65e5\u672c https://x.example/\u00fcber?x=1 and https://x.example/b\n\u00a9 2024"
    r = run("<p>x</p>", text, text="all")
    assert r.error is None
    assert urls(r, "text") == ["https://x.example/\u00fcber?x=1", "https://x.example/b"]
    assert restore(r.text or "", r, "text") == text


def test_text_only_input() -> None:
    r = run(None, "https://x.example/a", text="all", pixel="bottom")
    assert r.error is None
    assert r.html is None
    assert r.text == click("text", 0)


def test_html_only_input_text_none() -> None:
    r = run('<a href="https://x.example/">x</a>', None, text="all")
    assert r.text is None


# --------------------------------------------------------------------------------------------------------------
# Issue item 5: nothing else changes, in any charset; section 6 "unterminated"


def test_unterminated_quote_skipped_and_reported() -> None:
    html = '<a href="https://x.example/a>broken</a><a href="https://x.example/b">b</a>'
    r = run(html)
    assert_untouched(html, r)
    assert any(s.raw.startswith("https://x.example/a>broken") for s in r.skipped), r.skipped


@pytest.mark.parametrize(
    "raw_bytes",
    [
        '<p>Caf\u00e9 \u00a9</p><a href="https://x.example/?a=1&amp;b=2">x</a></body>'.encode("iso-8859-1"),
        '<p>\u65e5\u672c\u8a9e</p><a href="https://x.example/?q=1">x</a></body>'.encode("shift_jis"),
        b'<p>\xff\xfe\x80 invalid utf-8</p><a href="https://x.example/q">x</a></body>',
    ],
)
def test_any_charset_via_surrogateescape(raw_bytes: bytes) -> None:
    html = raw_bytes.decode("utf-8", "surrogateescape")
    r = run(html, pixel="bottom")
    assert r.error is None, r.error
    assert r.html is not None and len(r.links) == 1
    restored = restore(r.html, r, "html")
    pos = html.rindex("</body>")
    assert_inserted_at(restored, html, pos, expected_open())
    out_bytes = restored.encode("utf-8", "surrogateescape")
    assert out_bytes[: len(raw_bytes) - len(b"</body>")] == raw_bytes[: -len(b"</body>")]


def test_undecodable_byte_inside_a_url_is_never_an_error() -> None:
    # a latin-1 byte inside the href, decoded with surrogateescape: tracked or reported, never an error, bytes kept
    html = b'<a href="https://x.example/caf\xe9">x</a></body>'.decode("utf-8", "surrogateescape")
    r = run(html)
    assert r.error is None
    assert len(r.links) + len(r.skipped) == 1
    assert all(s.reason for s in r.skipped)
    assert restore(r.html or "", r, "html") == html


def test_crlf_and_nul_bytes_kept() -> None:
    html = '<p>a\r\nb\x00c</p>\r\n<a href="https://x.example/">x</a>\r\n'
    r = run(html)
    assert r.error is None and r.html is not None
    assert restore(r.html, r, "html") == html


# --------------------------------------------------------------------------------------------------------------
# Issue item 9: safe on hostile input, fail-open


def test_over_size_input_fails_open_untouched() -> None:
    html = '<a href="https://x.example/">x</a></body>' * 100
    text = "https://x.example/ " * 10
    compiled = compile_email(html, text, RewriteOptions(text="all"), own_prefixes=OWN, max_chars=len(html) // 2)
    assert compiled.error
    r = compiled.render(FakeSigner(), "c", "r1")
    assert r.error
    assert r.html == html
    assert r.text == text
    assert r.links == []


def test_input_at_the_cap_is_rewritten() -> None:
    html = '<a href="https://x.example/">x</a>'
    compiled = compile_email(html, None, RewriteOptions(pixel="none"), own_prefixes=OWN, max_chars=len(html))
    assert compiled.error is None
    assert urls(compiled.render(FakeSigner(), "c", "r1")) == ["https://x.example/"]


def test_over_size_text_alone_fails_open() -> None:
    text = "https://x.example/ " * 100
    compiled = compile_email(None, text, RewriteOptions(text="all"), own_prefixes=OWN, max_chars=100)
    r = compiled.render(FakeSigner(), "c", "r1")
    assert r.error
    assert r.text == text and r.html is None and r.links == []


@pytest.mark.parametrize("bad", [f'{TRK}/c/a"b', f"{TRK}/c/a&b", f"{TRK}/c/a b", f"{TRK}/c/<x>", f"{TRK}/c/a'b"])
def test_unsafe_click_url_fails_open(bad: str) -> None:
    html = '<a href="https://x.example/">x</a></body>'
    text = "https://x.example/"
    compiled = compile_email(html, text, RewriteOptions(text="all"), own_prefixes=OWN)
    r = compiled.render(FakeSigner(bad=bad), "c", "r1")
    assert r.error
    assert r.html == html
    assert r.text == text


class _FailingSigner(FakeSigner):
    def click_url(self, **kw: Any) -> str:
        if kw["link_index"] == 1:
            raise RuntimeError("key store down")
        return super().click_url(**kw)


class _BadOpenSigner(FakeSigner):
    def open_url(self, *, campaign_id: str, recipient_id: str, sent_at: int | None, message_id: str | None) -> str:
        return f'{TRK}/o/"x'


@pytest.mark.parametrize("signer", [_FailingSigner(), _BadOpenSigner()], ids=["signer-raises", "unsafe-open-url"])
def test_signer_failure_fails_open_never_half_rewritten(signer: FakeSigner) -> None:
    html = '<a href="https://x.example/1">1</a><a href="https://x.example/2">2</a></body>'
    text = "https://x.example/1"
    compiled = compile_email(html, text, RewriteOptions(text="all"), own_prefixes=OWN)
    r = compiled.render(signer, "c", "r1")
    assert r.error
    assert r.html == html and r.text == text
    assert r.links == []


def test_compile_never_raises_on_odd_input() -> None:
    for html in ["<", "<!--", "<!--[if mso]>", "<a href='", '<a href="', "&", "<![", "<?", "</", "\x00", "\udcff"]:
        compiled = compile_email(html, html, RewriteOptions(text="all"), own_prefixes=OWN)
        r = compiled.render(FakeSigner(), "c", "r1")
        if r.error:
            assert r.html == html and r.text == html
        else:
            assert r.html is not None


HOSTILE: dict[str, Callable[[int], tuple[str | None, str | None]]] = {
    "a<": lambda n: ('<a href="https://x.example/">l</a>' + "a<" * (n // 2), None),
    "<a href=": lambda n: ("<a href=" * (n // 8), None),
    "<a  many attrs": lambda n: ("<a " + "x " * (n // 2) + 'href="https://x.example/">', None),
    "many links": lambda n: ('<a href="https://x.example/">x</a>' * (n // 34), None),
    "<!--[if mso]>": lambda n: ("<!--[if mso]>" * (n // 13), None),
    "conditional VML": lambda n: (
        "<!--[if mso]>" + '<v:roundrect href="https://x.example/">' * (n // 39) + "<![endif]-->",
        None,
    ),
    "<!--": lambda n: ("<!--" * (n // 4), None),
    "<![if": lambda n: ("<![if !mso]>" * (n // 12), None),
    "</body>": lambda n: ("</body>" * (n // 7), None),
    "&amp; in href": lambda n: ('<a href="https://x.example/?' + "&amp;" * (n // 5) + '">', None),
    "& in href": lambda n: ('<a href="https://x.example/?' + "&a" * (n // 2) + '">', None),
    "unterminated quote": lambda n: ('<a href="https://x.example/' + "a" * n, None),
    "<<<": lambda n: ("<" * n, None),
    "<script>": lambda n: ("<script>" * (n // 8), None),
    "text https://": lambda n: (None, "https://" * (n // 8)),
    "text ((((": lambda n: (None, "https://x.example/" + "(" * n),
    "text ()()": lambda n: (None, "https://x.example/" + "()" * (n // 2)),
    "text many urls": lambda n: (None, "https://x.example/a " * (n // 20)),
}


def _once(html: str | None, text: str | None) -> float:
    t0 = time.perf_counter()
    compiled = compile_email(html, text, RewriteOptions(text="all", pixel="bottom"), own_prefixes=OWN)
    compiled.render(FakeSigner(), "c", "r1")
    return time.perf_counter() - t0


def _timed_pair(make: Callable[[int], tuple[str | None, str | None]]) -> tuple[float, float]:
    """The best of five for 100 KB and for 400 KB, taken in turns: on a shared machine a burst of
    someone else's load then falls on both sizes alike, not on one (a full CI run once saw 12.7x
    with the two timed one after the other, against 3-5x quiet)."""
    small, large = make(100_000), make(400_000)
    t1 = t2 = float("inf")
    for _ in range(5):
        t1 = min(t1, _once(*small))
        t2 = min(t2, _once(*large))
        if t2 > 2.0:  # fails the absolute bound whatever follows: no need to wait for four more
            break
    return t1, t2


@pytest.mark.parametrize("name", list(HOSTILE))
def test_linear_time_on_hostile_input(name: str) -> None:
    t1, t2 = _timed_pair(HOSTILE[name])
    assert t2 < 2.0, f"{name}: 400 KB took {t2:.2f}s"
    # 4x the size takes about 4x the time; quadratic would be 16x (the bound leaves room for a busy shared machine).
    # Checked only above the timer noise; a quadratic scan is caught by the absolute bound anyway (96 s on 3.11.7).
    if t2 > 0.25:
        assert t2 / max(t1, 1e-3) < 12.0, f"{name}: 100 KB {t1:.3f}s, 400 KB {t2:.3f}s"


# --------------------------------------------------------------------------------------------------------------
# Options (issue item 1: bad options are a 422 -> OptionsError)


def test_default_options() -> None:
    o = RewriteOptions()
    assert (o.pixel, o.text, o.honeypot, o.list_unsubscribe, o.skip) == ("bottom", "match-html", False, (), ())
    assert RewriteOptions.parse(None) == o
    assert RewriteOptions.parse({}) == o


def test_parse_valid_options() -> None:
    o = RewriteOptions.parse(
        {"pixel": "marker", "text": "all", "honeypot": True, "list_unsubscribe": ["https://x.example/u"]}
    )
    assert o.pixel == "marker" and o.text == "all" and o.honeypot is True
    assert o.list_unsubscribe == ("https://x.example/u",)


@pytest.mark.parametrize(
    ("raw", "field_name"),
    [
        ({"pixel": "top"}, "pixel"),
        ({"pixel": None}, "pixel"),
        ({"text": "yes"}, "text"),
        ({"text": 1}, "text"),
        ({"honeypot": "true"}, "honeypot"),
        ({"honeypot": 1}, "honeypot"),
        ({"list_unsubscribe": "https://x.example/u"}, "list_unsubscribe"),
        ({"list_unsubscribe": [1]}, "list_unsubscribe"),
        ({"skip": "x"}, "skip"),
        ({"skip": [None]}, "skip"),
        ({"pixels": "bottom"}, "pixels"),
    ],
)
def test_parse_invalid_options(raw: dict[str, Any], field_name: str) -> None:
    with pytest.raises(OptionsError) as info:
        RewriteOptions.parse(raw)
    err = info.value
    field = getattr(err, "field", None) or (str(err.args[0]) if err.args else "")
    assert field.startswith(field_name), err.args


def test_parse_rejects_non_mapping() -> None:
    with pytest.raises(OptionsError):
        RewriteOptions.parse(["pixel"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------
# The corpus of real templates (tests/data/email-templates, SOURCES.md)


def test_corpus_present() -> None:
    assert len(CORPUS_HTML) >= 15
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for path in sorted(CORPUS.iterdir()):
        if path.suffix in (".html", ".txt"):
            assert path.name in sources, f"{path.name} not recorded in SOURCES.md"


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "surrogateescape")


def _text_for(path: Path) -> str | None:
    t = path.with_suffix(".txt")
    return _read(t) if t.exists() else None


@pytest.mark.parametrize("path", CORPUS_HTML, ids=lambda p: p.name)
def test_corpus_round_trip(path: Path) -> None:
    html = _read(path)
    text = _text_for(path)
    r = run(html, text, text="all", pixel="bottom")
    assert r.error is None, r.error
    assert r.html is not None
    restored = restore(r.html, r, "html")
    low = html.lower()
    pos = low.rindex("</body>") if "</body>" in low else len(html)
    # the pixel is before the last </body> (none of the corpus files has one in a comment after the real one)
    assert_inserted_at(restored, html, pos, expected_open())
    if text is not None:
        assert restore(r.text or "", r, "text") == text
    # every url is the WHATWG-decoded, cleaned raw value; the signer would get it exactly
    for link in r.links:
        if link.part == "html":
            assert link.url == target_of(link.raw), link


@pytest.mark.parametrize("path", CORPUS_HTML, ids=lambda p: p.name)
def test_corpus_round_trip_without_pixel_is_identity(path: Path) -> None:
    html = _read(path)
    r = run(html, pixel="none", text="off")
    assert r.error is None
    assert restore(r.html or "", r, "html") == html


@pytest.mark.parametrize("path", CORPUS_HTML, ids=lambda p: p.name)
def test_corpus_every_link_rewritten_or_reported(path: Path) -> None:
    html = _read(path)
    r = run(html, pixel="none")
    found = find_links(html)
    reported = Counter([link.raw for link in r.links if link.part == "html"] + skipped_raws(r))
    expected = Counter(f.raw for f in found)
    missing = expected - reported
    extra = reported - expected
    assert not missing, f"links neither rewritten nor reported: {list(missing)[:10]}"
    assert not extra, f"reported but not links a browser follows: {list(extra)[:10]}"
    # what the analysis calls trackable is exactly what was rewritten
    tracked = Counter(link.raw for link in r.links if link.part == "html")
    assert tracked == Counter(f.raw for f in found if is_trackable(f.raw))
    assert all(s.reason for s in r.skipped)


# --------------------------------------------------------------------------------------------------------------
# Property: on any markup soup, no error, identity round trip, every url is the WHATWG-decoded cleaned raw value

_PIECES = [
    "<a href=",
    "<A HREF = ",
    "<area href='",
    '<v:roundrect href="',
    '"',
    "'",
    ">",
    "<",
    "</a>",
    "</body>",
    "<body>",
    "<!--",
    "-->",
    "<!--[if mso]>",
    "<![endif]-->",
    "<![if !mso]>",
    "<![endif]>",
    "<script>",
    "</script>",
    "<title>",
    "</title>",
    "<style>",
    "</style>",
    "https://x.example/",
    "http://y.example/p?a=1",
    "&amp;",
    "&region=eu",
    "&#38;",
    "&",
    "{{x}}",
    "*|UNSUB|*",
    "mailto:a@b",
    "#top",
    " ",
    "\n",
    "\t",
    "=",
    "data-trackd=off ",
    "text",
    "\u00e9",
    "<!--trackd:open-->",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_PIECES), max_size=40).map("".join),
    st.sampled_from(["bottom", "marker", "none"]),
)
def test_property_round_trip_on_markup_soup(html: str, pixel: str) -> None:
    r = run(html, html, pixel=pixel, text="all")
    assert r.error is None, r.error
    assert r.html is not None and r.text is not None
    restored = restore(r.html, r, "html")
    opened = r.open_url
    if opened and opened in restored:
        assert restored.count(opened) == 1
    else:
        assert restored == html
    assert restore(r.text, r, "text") == html
    for link in r.links:
        assert link.raw in html
        assert "<" not in link.url
        if link.part == "html":
            assert link.url == target_of(link.raw), link
        assert is_trackable(link.raw) or link.part == "text", link


def test_links_inside_noscript_are_links() -> None:
    # Mail clients run no scripts, and with scripting off a browser parses <noscript> as markup:
    # the link inside is shown and followed, so it is tracked.
    r = run('<noscript><a href="https://x.example/n">n</a></noscript><a href="https://x.example/ok">ok</a>')
    assert urls(r) == ["https://x.example/n", "https://x.example/ok"]


@pytest.mark.parametrize(
    ("html", "tracked"),
    [
        # escaped, then `-->` back to script data: the next </script> ends it
        ('<script><!-- x --></script><a href="https://x.example/a">', ["https://x.example/a"]),
        # `<!-->` goes straight back to script data
        ('<script><!--></script><a href="https://x.example/a">', ["https://x.example/a"]),
        # escaped (no double escape): </script> ends it
        ('<script><!-- <b></script><a href="https://x.example/a">', ["https://x.example/a"]),
        # double-escaped, then back to escaped by </script>, then ended by the next one
        ('<SCRIPT><!--<Script>x</script>y</SCRIPT ><a href="https://x.example/a">', ["https://x.example/a"]),
        # double-escaped to the end: nothing after it is markup
        ('<script><!--<script></script><a href="https://x.example/s">', []),
    ],
)
def test_script_data_states(html: str, tracked: list[str]) -> None:
    assert urls(run(html)) == tracked


@pytest.mark.parametrize("html", ["<body>x</body", "<body>x<!-- unclosed", "<body>x<a href='"])
def test_pixel_goes_before_a_construct_left_open_at_the_end(html: str) -> None:
    # Appended after an unfinished end tag, comment or attribute, the pixel would become part of
    # it (a browser would never fetch it): it goes just before that construct instead.
    r = render_pixel(html)
    assert r.error is None and r.html is not None
    assert r.html.count(expected_open()) == 1
    at = max(html.rfind("</body"), html.rfind("<!--"), html.rfind("<a "))
    assert_inserted_at(r.html, html, at, expected_open())


@pytest.mark.parametrize(
    ("html", "tracked", "foreign"),
    [
        # a breakout tag leaves SVG: the link after it is an HTML link
        ('<svg><p><a href="https://x.example/p">p</a>', ["https://x.example/p"], []),
        # inside an integration point content is HTML again
        ('<svg><foreignObject><a href="https://x.example/f">f</a></foreignObject></svg>', ["https://x.example/f"], []),
        ('<math><mi><a href="https://x.example/m">m</a></mi></math>', ["https://x.example/m"], []),
        # an SVG link is not rewritten, but reported
        (
            '<svg><a href="https://x.example/s">s</a></svg><a href="https://x.example/ok">',
            ["https://x.example/ok"],
            ["https://x.example/s"],
        ),
        # `width=10/` is an unquoted value, not a self-closing svg: still SVG
        ('<svg width=10/><a href="https://x.example/s">s</a></svg>', [], ["https://x.example/s"]),
    ],
)
def test_foreign_content(html: str, tracked: list[str], foreign: list[str]) -> None:
    r = run(html)
    assert urls(r) == tracked
    assert [s.raw for s in r.skipped if s.reason == "foreign"] == foreign


@pytest.mark.parametrize(
    ("html", "tracked"),
    [
        # a <div> cannot stand in a head: the body starts there
        ('<head><title>t</title><div><a href="https://x.example/a">a</a>', ["https://x.example/a"]),
        # a <head> inside the body is ignored
        ('<body><head><a href="https://x.example/b">b</a>', ["https://x.example/b"]),
        # an <a> written in the head stays untracked (the issue: never `<a>` in `<head>`)
        ('<head><meta charset="utf-8"><a href="https://x.example/h">h</a>', []),
        ('<head><a href="https://x.example/h">h</a><div><a href="https://x.example/d">d</a>', ["https://x.example/d"]),
    ],
)
def test_where_the_head_ends(html: str, tracked: list[str]) -> None:
    assert urls(run(html)) == tracked


def test_a_nul_in_an_href_is_what_a_browser_reads() -> None:
    r = run('<a href="https://x.example/a\x00">a</a>')
    assert [link.url for link in r.links] == ["https://x.example/a\ufffd"]  # its Location: %EF%BF%BD
