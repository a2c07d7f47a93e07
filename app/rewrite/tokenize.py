"""A linear-time HTML span tokenizer: where each tag, comment and declaration starts and ends.

It follows the WHATWG tokenizer for the states email rewriting needs and reports source offsets
only, never decoded text, so the caller can splice the input without re-serialising anything.
The standard library's `html.parser` is not used: on Python 3.11.7/3.12.1/3.13.0 it is quadratic
on `a<a<a<...` (CVE-2025-6069, 400 KB took 96 s).

Why it is linear: the scanner only moves forward. Data is skipped with `str.find('<')`; each
construct is matched by one anchored regex whose quantifiers are possessive (`*+`, `(?:...)*+`),
so a failed match never backtracks; and a construct that runs into the end of the region (an
unterminated tag or quote) ends the scan, as the standard's "EOF in tag" drops such a tag, so no
byte is scanned twice. (Conditional comments are scanned a second time by the caller: once as a
comment here and once for their inside, which is still linear.)

States covered: data; tag open, tag name, end tag open; before/after attribute name, attribute
name, attribute value (double-quoted, single-quoted, unquoted), self-closing start tag (`/` is a
separator); markup declaration open: comments (`<!-->`, `<!--->`, `-->` and `--!>` ends),
DOCTYPE (ends at the first `>`, as the standard's abrupt-identifier rules make it), CDATA (a bogus
comment in HTML content, which is where email markup lives); bogus comments (`<?...>`, `</1>`,
`<![if !mso]>`, anything else after `<!`).

Raw text: `style`, `xmp`, `iframe`, `noembed`, `noframes` (raw text) and `textarea`, `title`
(RCDATA) end at the first `</name` followed by whitespace, `/` or `>` in any case; `plaintext`
runs to the end. `script` follows the standard's script data states: after `<!--` it is
escaped, where `<script` makes it double-escaped and a `</script` there does not end the
element (`<script><!--<script></script><a href=...></script>` is all script). `noscript` is
markup, not raw text: the standard makes it raw text only when scripting is enabled, and mail
clients run no scripts, so they show what is inside it, links included.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from typing import NamedTuple

START = 0  # a start tag: name is its lowercased name
END = 1  # an end tag
COMMENT = 2  # `<!--...-->`: data_start/data_end bound its text
OTHER = 3  # DOCTYPE, bogus comments (including `<![if !mso]>` and `<![endif]>`), CDATA
# Last, when the region ends inside a construct (a tag, a quote, a comment, a raw-text element):
# start is that construct's `<`, whose tokens (if any) came before. Whatever is appended to the
# region would land inside it.
UNCLOSED = 4

RAW_TEXT = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes", "textarea", "title"})

_WS = "\t\n\f\r "
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# What follows a tag's name up to its `>`: separators (whitespace and `/`), attribute names, and
# values. A quote only opens a value right after `=`; an unterminated quote runs to the end of
# the region (`\Z`), so the final `>` fails and the caller sees "EOF in tag".
_VALUE = r"""(?:"[^"]*+(?:"|\Z)|'[^']*+(?:'|\Z)|[^\t\n\f\r >"'][^\t\n\f\r >]*+)"""
_ATTR = rf"""[^\t\n\f\r />][^\t\n\f\r />=]*+(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+{_VALUE}?+)?+"""
_TAG_REST = rf"""(?:[\t\n\f\r /]++|{_ATTR})*+>"""
_START_TAG = re.compile(rf"([A-Za-z][^\t\n\f\r />]*+){_TAG_REST}")
_END_TAG = re.compile(rf"/([A-Za-z][^\t\n\f\r />]*+){_TAG_REST}")
_COMMENT_END = re.compile(r"--!?>")

# One attribute, for the few tags whose attributes matter (html.py): groups are the name, and the
# value quoted with ", quoted with ', or unquoted.
_ONE_ATTR = re.compile(
    r"""[\t\n\f\r /]*+([^\t\n\f\r />][^\t\n\f\r />=]*+)"""
    r"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"([^"]*+)(?:"|\Z)|'([^']*+)(?:'|\Z)|([^\t\n\f\r >"'][^\t\n\f\r >]*+))?+)?+"""
)
_RAW_END: dict[str, re.Pattern[str]] = {
    name: re.compile(rf"</{name}(?=[\t\n\f\r />])", re.IGNORECASE) for name in RAW_TEXT
}
# What changes the script data state (WHATWG 13.2.5.4 ff.): `<!--` (and `<!-->`, `<!--->`, which
# go straight back), `-->`, `<script` and `</script` followed by whitespace, `/` or `>`.
_SCRIPT_STATE = re.compile(
    r"(<!--(?:-*+>)?+)|(-->)|(<script(?=[\t\n\f\r />]))|(</script(?=[\t\n\f\r />]))", re.IGNORECASE
)


def _script_end(s: str, pos: int, stop: int) -> int | None:
    """Where the `</script` that ends a script element starting at `pos` is, or None. One pass:
    each match moves forward, so the time is linear in the script's length."""
    escaped = double = False
    for m in _SCRIPT_STATE.finditer(s, pos, stop):
        opened, closed, start, _ = m.groups()
        if opened is not None:
            if not escaped and not double:
                escaped = not opened.endswith(">")
        elif closed is not None:
            escaped = double = False
        elif start is not None:
            if escaped and not double:
                double = True
        elif double:
            double = False  # `</script` in double-escaped: back to escaped, the element goes on
        else:
            return m.start()
    return None


# A token is a plain tuple (a NamedTuple's constructor costs a third of the scan):
# (kind, start, end, name, inner_start, inner_end) where start is the offset of `<`, end is just
# after the construct, name is the lowercased tag name ("" for others), and inner_start/inner_end
# are, for tags, just after the name and the offset of the final `>`; for comments, the bounds
# of the comment's text.
Token = tuple[int, int, int, str, int, int]


class Attribute(NamedTuple):
    name: str  # lowercased (ASCII)
    value_start: int  # value span (between the quotes when quoted); empty span when no value
    value_end: int
    quote: str  # '"', "'", "" (unquoted), or "none" when the attribute has no value


_LOWERED: dict[str, str] = {}


def _lower(name: str) -> str:
    """A tag or attribute name as the standard lowercases it (ASCII letters only: str.lower
    would fold e.g. KELVIN SIGN into "k"); the few names an email uses are cached."""
    lowered = _LOWERED.get(name)
    if lowered is None:
        lowered = name.lower() if name.isascii() else "".join(c.lower() if c.isascii() else c for c in name)
        if len(_LOWERED) < 4096:
            _LOWERED[name] = lowered
    return lowered


def tokens(s: str, start: int = 0, end: int | None = None, wanted: frozenset[str] | None = None) -> Iterator[Token]:
    """The tags, comments and declarations of s[start:end], in order (text is what lies between).

    With `wanted`, only tags of those names are yielded (comments and declarations always are):
    most of an email's tags matter to no one, and not yielding them halves the cost of a scan.
    """
    stop = len(s) if end is None else end
    find = s.find
    lowered = _LOWERED.get
    pos = start
    while True:
        lt = find("<", pos, stop)
        if lt < 0 or lt + 1 >= stop:
            return
        c = s[lt + 1]
        if c in _ASCII_LETTERS:
            m = _START_TAG.match(s, lt + 1, stop)
            if m is None:
                yield (UNCLOSED, lt, stop, "", lt, stop)
                return  # EOF in tag: the standard drops the tag, and nothing follows it
            pos = m.end()
            raw = m.group(1)
            name = lowered(raw) or _lower(raw)
            if wanted is None or name in wanted:
                yield (START, lt, pos, name, m.end(1), pos - 1)
            if name in RAW_TEXT:
                if name == "script":
                    end = _script_end(s, pos, stop)
                else:
                    close = _RAW_END[name].search(s, pos, stop)
                    end = None if close is None else close.start()
                if end is None:
                    yield (UNCLOSED, lt, stop, name, pos, stop)
                    return  # raw text to the end of the region
                pos = end
            elif name == "plaintext":
                yield (UNCLOSED, lt, stop, name, pos, stop)
                return
        elif c == "/":
            if lt + 2 >= stop:
                return  # `</` at EOF is text
            m = _END_TAG.match(s, lt + 1, stop)
            if m is not None:
                raw = m.group(1)
                name = lowered(raw) or _lower(raw)
                if wanted is None or name in wanted:
                    yield (END, lt, m.end(), name, m.end(1), m.end() - 1)
                pos = m.end()
            elif s[lt + 2] == ">":
                pos = lt + 3  # `</>` is dropped
            elif s[lt + 2] in _ASCII_LETTERS:
                yield (UNCLOSED, lt, stop, "", lt, stop)
                return  # EOF in an end tag
            else:
                pos = yield from _bogus(s, lt, lt + 2, stop)
        elif c == "!":
            if s.startswith("<!--", lt, stop):
                pos = yield from _comment(s, lt, stop)
            else:
                pos = yield from _bogus(s, lt, lt + 2, stop)
        elif c == "?":
            pos = yield from _bogus(s, lt, lt + 1, stop)
        else:
            pos = lt + 1  # a `<` that opens nothing is text
        if pos >= stop:
            return


def _bogus(s: str, lt: int, data: int, stop: int) -> Generator[Token, None, int]:
    """DOCTYPE, CDATA and bogus comments: all end at the first `>` (or the end of the region)."""
    gt = s.find(">", data, stop)
    end = stop if gt < 0 else gt + 1
    yield (OTHER, lt, end, "", data, end if gt < 0 else gt)
    if gt < 0:
        yield (UNCLOSED, lt, stop, "", lt, stop)
    return end


def _comment(s: str, lt: int, stop: int) -> Generator[Token, None, int]:
    data = lt + 4
    if s.startswith(">", data, stop):  # `<!-->`
        yield (COMMENT, lt, data + 1, "", data, data)
        return data + 1
    if s.startswith("->", data, stop):  # `<!--->`
        yield (COMMENT, lt, data + 2, "", data, data)
        return data + 2
    m = _COMMENT_END.search(s, data, stop)
    if m is None:
        yield (COMMENT, lt, stop, "", data, stop)
        yield (UNCLOSED, lt, stop, "", lt, stop)
        return stop
    yield (COMMENT, lt, m.end(), "", data, m.start())
    return m.end()


def attributes(s: str, start: int, end: int) -> list[Attribute]:
    """A tag's attributes between its name (`start`) and its `>` (`end`), first wins on duplicates."""
    seen: set[str] = set()
    out: list[Attribute] = []
    pos = start
    while pos < end:
        m = _ONE_ATTR.match(s, pos, end)
        if m is None:
            break  # only separators were left
        pos = m.end()
        name = _lower(m.group(1))
        if name in seen:
            continue  # the standard drops a duplicate attribute: the first one is the element's
        seen.add(name)
        for group, quote in ((2, '"'), (3, "'"), (4, "")):
            if m.start(group) >= 0:
                out.append(Attribute(name, m.start(group), m.end(group), quote))
                break
        else:
            out.append(Attribute(name, m.end(1), m.end(1), "none"))
    return out
