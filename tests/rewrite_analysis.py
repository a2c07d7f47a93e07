"""Independent analysis helpers for the black-box tests of app.rewrite (tests/test_rewrite_spec.py).

Written from the spec (issue #15, ../shared/research/email-rewriting.md sections 3.2, 5, 6), not from the engine:
a WHATWG attribute-value decoder, the URL standard's input cleaning, and a link finder built on the stdlib
``html.parser`` (analysis only; it is quadratic on hostile input on unpatched Pythons, so never feed it those).
"""

from __future__ import annotations

import html
import html.entities
import re
from dataclasses import dataclass
from html.parser import HTMLParser

_NUMERIC = re.compile(r"&#[xX][0-9a-fA-F]+;?|&#[0-9]+;?")
_LONGEST_ENTITY = max(len(k) for k in html.entities.html5)
_HTML5 = html.entities.html5


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
            out.append(html.unescape(m.group(0)))
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
