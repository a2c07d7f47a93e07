"""A slow, character-by-character reading of the WHATWG tokenizer states the engine needs, written
independently of app/rewrite/tokenize.py's regexes: the differential tests compare the two."""

from __future__ import annotations

import re

from app.rewrite.tokenize import RAW_TEXT

_WS = "\t\n\f\r "
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _lower(name: str) -> str:
    return "".join(c.lower() if c in _LETTERS else c for c in name)


def _tag(s: str, i: int) -> tuple[int, str, list[tuple[str, str]]] | None:
    """Tag name state onwards, from the name's first letter at i; None on EOF in the tag."""
    n = len(s)
    j = i
    while j < n and s[j] not in _WS + "/>":
        j += 1
    name = _lower(s[i:j])
    attrs: list[tuple[str, str]] = []
    seen: set[str] = set()
    while j < n:
        c = s[j]
        if c in _WS or c == "/":  # before attribute name; self-closing start tag reconsumes non-`>`
            j += 1
            continue
        if c == ">":
            return j + 1, name, attrs
        k = j + 1  # attribute name state: the first character may be `=`
        while k < n and s[k] not in _WS + "/>=":
            k += 1
        attr = _lower(s[j:k])
        j = k
        while j < n and s[j] in _WS:  # after attribute name
            j += 1
        value = ""
        if j < n and s[j] == "=":
            j += 1
            while j < n and s[j] in _WS:  # before attribute value
                j += 1
            if j < n and s[j] in "\"'":
                close = s.find(s[j], j + 1)
                if close < 0:
                    return None
                value, j = s[j + 1 : close], close + 1
            elif j < n and s[j] != ">":
                k = j
                while k < n and s[k] not in _WS + ">":
                    k += 1
                value, j = s[j:k], k
        if attr not in seen:
            seen.add(attr)
            attrs.append((attr, value))
    return None


def start_tags(s: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every start tag's name and attributes (first wins), as a browser's tokenizer sees them."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    n = len(s)
    i = 0
    while i < n:
        if s[i] != "<" or i + 1 >= n:
            i += 1
            continue
        c = s[i + 1]
        if c in _LETTERS:
            tag = _tag(s, i + 1)
            if tag is None:
                break
            i, name, attrs = tag
            out.append((name, attrs))
            if name == "plaintext":
                break
            if name in RAW_TEXT:
                end = re.compile(f"</{name}[{_WS}/>]", re.IGNORECASE).search(s, i)
                if end is None:
                    break
                i = end.start()
        elif c == "/":
            if i + 2 >= n:
                break
            if s[i + 2] == ">":
                i += 3
            elif s[i + 2] in _LETTERS:
                tag = _tag(s, i + 2)
                if tag is None:
                    break
                i = tag[0]
            else:
                close = s.find(">", i + 2)
                i = n if close < 0 else close + 1
        elif s.startswith("<!--", i):
            d = i + 4
            if s.startswith(">", d):
                i = d + 1
            elif s.startswith("->", d):
                i = d + 2
            else:
                ends = [e for e in (s.find("-->", d), s.find("--!>", d)) if e >= 0]
                if not ends:
                    break
                first = min(ends)
                i = first + (3 if s.startswith("-->", first) else 4)
        elif c in "!?":
            close = s.find(">", i + 2)
            i = n if close < 0 else close + 1
        else:
            i += 1
    return out
