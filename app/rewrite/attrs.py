"""An attribute value's text as a browser reads it: the WHATWG character-reference rule for attributes.

`&amp;` becomes `&`, `&#38;` and `&#x26;` too, but a named reference without `;` followed by an
ASCII alphanumeric or `=` is left as written, so `?a=1&region=eu&currency=usd` stays (Python's
`html.unescape`, and so `html.parser`'s attribute values, wrongly give `®ion=eu¤cy=usd`). A
double-encoded `&amp;amp;` decodes once, to `&amp;`, as in a browser.
"""

from __future__ import annotations

import re
from html.entities import html5

_REFERENCE = re.compile(r"&(?:#[xX]([0-9A-Fa-f]++);?|#([0-9]++);?|([A-Za-z0-9]++;?))")
_LONGEST_NAME = max(map(len, html5))
# The standard's numeric fix-ups: C1 controls read as windows-1252.
_WINDOWS_1252 = {
    0x80: "\u20ac", 0x82: "\u201a", 0x83: "\u0192", 0x84: "\u201e", 0x85: "\u2026", 0x86: "\u2020", 0x87: "\u2021",
    0x88: "\u02c6", 0x89: "\u2030", 0x8A: "\u0160", 0x8B: "\u2039", 0x8C: "\u0152", 0x8E: "\u017d", 0x91: "\u2018",
    0x92: "\u2019", 0x93: "\u201c", 0x94: "\u201d", 0x95: "\u2022", 0x96: "\u2013", 0x97: "\u2014", 0x98: "\u02dc",
    0x99: "\u2122", 0x9A: "\u0161", 0x9B: "\u203a", 0x9C: "\u0153", 0x9E: "\u017e", 0x9F: "\u0178",
}  # fmt: skip


def _numeric(digits: str, base: int) -> str:
    digits = digits.lstrip("0") or "0"
    # More than 8 digits is past U+10FFFF in either base; int() of a long run would also be slow.
    code = 0x110000 if len(digits) > 8 else int(digits, base)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return _WINDOWS_1252.get(code) or chr(code)


def decode_attribute(value: str) -> str:
    """The value of an attribute whose source text is `value` (between its quotes, or unquoted)."""
    if "\x00" in value:  # the tokenizer reads a NUL in an attribute value as U+FFFD
        value = value.replace("\x00", "\ufffd")
    if "&" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return _numeric(m.group(1), 16)
        if m.group(2) is not None:
            return _numeric(m.group(2), 10)
        run = m.group(3)
        # The longest prefix of the run that names a reference (the table holds names with and
        # without `;`, as the standard's does).
        for length in range(min(len(run), _LONGEST_NAME), 1, -1):
            decoded = html5.get(run[:length])
            if decoded is None:
                continue
            if run[length - 1] != ";":
                following = run[length] if length < len(run) else value[m.end() : m.end() + 1]
                if following == "=" or (following.isascii() and following.isalnum()):
                    return m.group(0)  # the attribute exception: left as written
            return decoded + run[length:]
        return m.group(0)

    return _REFERENCE.sub(replace, value)
