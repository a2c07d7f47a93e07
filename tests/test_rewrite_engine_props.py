"""The rewrite engine's properties: the byte-exact round trip on generated documents, and linear time.

Round trip (the contract): replacing each click_url by its raw and removing the pixel and the
honeypot gives the input back byte for byte. Pixel "marker" is left out on purpose: it replaces
the marker comment, so that mode's output differs by exactly the marker (test_rewrite_engine.py).

Linear time: crafted inputs of 1 MB and 2 MB, compiled in-process; the 2 MB one must take at
most about 2.5 times as long (best of two runs each, interleaved, one retry, plus a little
absolute slack for timer noise on tiny times).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.rewrite import RewriteOptions, compile_email
from app.rewrite.tokenize import START, UNCLOSED, attributes, tokens
from tests import rewrite_reference as reference
from tests.rewrite_support import TagSigner, rewrite, undo

_VALUES = st.sampled_from(
    ["https://x/", "https://x/a?b=1&amp;c=2", "https://x/?r=1&region=eu", " https://x/sp ", "HTTPS://X/U", "mailto:a@b",
     "#top", "/rel", "{{u}}", "https://x/{{id}}", "//cdn/x", "", "x\"y", "a'b", "a>b", "a<b", "&", "&#x26;", "\n",
     "https://x/\u00e9", "https://user@x/"]
)  # fmt: skip
_NAMES = st.sampled_from(["a", "A", "area", "v:roundrect", "V:RECT", "link", "img", "p", "title", "script", "style",
                          "head", "body", "textarea", "table", "td", "noscript"])  # fmt: skip
_ATTR_NAMES = st.sampled_from(["href", "HREF", "title", "data-trackd", "rel", "x", "data-trackd-name", "=", '"', "/"])
_SEP = st.sampled_from([" ", "  ", "\n", "\t", "/", " / "])
_TEXT = st.text(alphabet="ab <>&;='\"/!-[]#?\n\t\u00e9x", max_size=12)


@st.composite
def _attribute(draw: st.DrawFn) -> str:
    name = draw(_ATTR_NAMES)
    value = draw(_VALUES)
    form = draw(st.sampled_from(["none", "dq", "sq", "uq"]))
    eq = draw(st.sampled_from(["=", " = ", "=\n"]))
    if form == "none":
        return name
    if form == "dq":
        return f'{name}{eq}"{value.replace(chr(34), "")}"'
    if form == "sq":
        return f"{name}{eq}'{value.replace(chr(39), '')}'"
    return f"{name}{eq}{value.replace(' ', '').replace('>', '') or 'v'}"


@st.composite
def _tag(draw: st.DrawFn) -> str:
    closing = draw(st.booleans())
    name = draw(_NAMES)
    attrs = draw(st.lists(_attribute(), max_size=3))
    end = draw(st.sampled_from([">", "/>", " >", ""]))
    body = "".join(draw(_SEP) + a for a in attrs)
    return f"</{name}{body}{end}" if closing else f"<{name}{body}{end}"


_FRAGMENT = st.one_of(
    _TEXT,
    _tag(),
    _tag(),
    st.sampled_from(["<!--", "-->", "<!-- c -->", "<!--[if mso]>", "<![endif]-->", "<![if !mso]>", "<![endif]>",
                     "<!--[if !mso]><!-->", "<!--<![endif]-->", "<!DOCTYPE html>", "<![CDATA[x]]>", "<?x?>", "</>",
                     "<!--trackd:open-->", "</body>", "</BODY>", "<", "&amp;", "--!>", "<!-->"]),
)  # fmt: skip


@st.composite
def documents(draw: st.DrawFn) -> str:
    return "".join(draw(st.lists(_FRAGMENT, max_size=30)))


_TEXT_PIECES = ["https://x/", "https://x/a.", "(https://x/b)", "<https://x/c>", " ", "\n", "word", "https://x/{{id}}",
                "HTTP://X/", "https://x/(p)", "!", ")"]  # fmt: skip
_TEXTS = st.lists(st.sampled_from(_TEXT_PIECES), max_size=10).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=documents(),
    text=st.one_of(st.none(), _TEXTS),
    pixel=st.sampled_from(["bottom", "none"]),
    text_mode=st.sampled_from(["off", "match-html", "all"]),
    honeypot=st.booleans(),
)
def test_round_trip_is_byte_exact(doc: str, text: str | None, pixel: str, text_mode: str, honeypot: bool) -> None:
    out = rewrite(doc, text, pixel=pixel, text=text_mode, honeypot=honeypot)
    assert out.error is None
    assert undo(out) == (doc, text)
    for link in out.links:
        assert link.url.lower().startswith(("http://", "https://"))


@settings(max_examples=300, deadline=None)
@given(doc=documents())
def test_tokens_move_forward_and_stay_in_bounds(doc: str) -> None:
    last = 0
    for kind, start, end, _, inner_start, inner_end in tokens(doc):
        if kind == UNCLOSED:  # last, pointing back at the construct left open
            assert end == len(doc) and doc[start] == "<"
            continue
        assert last <= start < end <= len(doc) and start < inner_start <= inner_end <= end
        assert doc[start] == "<"
        last = end


def _timed(run: Callable[[], None]) -> float:
    # The collector's full passes grow with the live objects of the other tests' leftovers: the
    # algorithm is what is measured, so it is off while timing.
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    finally:
        gc.enable()


LINEAR_CASES: dict[str, tuple[str, str]] = {
    "a<a<a<": ("html", "a<"),
    "comment opens": ("html", "<!--"),
    "a href= repeated": ("html", "<a href="),
    'unclosed " quotes': ("html", '<a href="'),
    "unclosed ' quotes": ("html", "<a title='x' href='"),
    "many attributes": ("html", " b=c"),
    "links": ("html", '<a href="https://x/">x</a>'),
    "distinct links": ("html", '<a href="https://x/?i=N">x</a>'),
    "unclosed conditional comments": ("html", "<!--[if mso]>"),
    "conditional comments with links": ("html", '<!--[if mso]><v:rect href="https://x/"><![endif]-->'),
    "downlevel-revealed opens": ("html", "<![if !mso]>"),
    "end tag opens": ("html", "</a</"),
    "raw text opens": ("html", "<title><script>"),
    "entities in a value": ("html", "&amp"),
    "</body> repeated": ("html", "</body>"),
    "text URL starts": ("text", "https://"),
    "text closing brackets": ("text", ")"),
    "text URLs": ("text", "https://x/a "),
}


def _document(kind: str, unit: str, size: int) -> str:
    count = size // len(unit)
    if unit == " b=c":
        return "<a" + unit * count + ">"
    if unit == "&amp":
        return '<a href="https://x/' + unit * count + '">'
    if unit == ")":
        return "https://x/" + unit * count
    if "?i=N" in unit:
        return "".join(unit.replace("N", str(i)) for i in range(count))
    return unit * count


@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_time_is_linear_on_crafted_input(case: str) -> None:
    kind, unit = LINEAR_CASES[case]
    options = RewriteOptions(text="all")
    runs: list[Callable[[], None]] = []
    for size in (1_000_000, 2_000_000):
        doc = _document(kind, unit, size)
        html, text = (doc, None) if kind == "html" else (None, doc)

        def run(html: str | None = html, text: str | None = text) -> None:
            compiled = compile_email(html, text, options, max_chars=3_000_000)
            assert compiled.error is None, compiled.error

        runs.append(run)
    # Interleaved, best of two, and measured again once if the ratio is off: the two cores are
    # shared with other work, and a quadratic case fails both attempts by far.
    for _attempt in range(2):
        times = [min(t) for t in zip(*[[_timed(run) for run in runs] for _ in range(2)], strict=True)]
        if times[1] <= 2.5 * times[0] + 0.02:
            break
    assert times[1] <= 2.5 * times[0] + 0.02, times
    assert times[1] < 3.0, times


def test_two_megabytes_render_untouched_outside_links() -> None:
    doc = ("<p>" + "x" * 200 + '</p><a href="https://x/?a=1&amp;b=2">x</a>') * 8000
    compiled = compile_email(doc, None, RewriteOptions(), max_chars=3_000_000)
    out = compiled.render(TagSigner(), "c", "r")
    assert out.error is None and len(out.links) == 8000
    assert undo(out) == (doc, None)


def test_bench_rewrite_runs() -> None:
    from loadtests.bench_rewrite import generate_email, run

    assert 45_000 <= len(generate_email()) <= 55_000
    figures = run(seconds=0.01)
    assert figures["tracked_links"] == 20 and figures["compile_mb_per_s_50kb"] > 0


def _engine_start_tags(doc: str) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (name, [(a.name, doc[a.value_start : a.value_end]) for a in attributes(doc, inner_start, inner_end)])
        for kind, _, _, name, inner_start, inner_end in tokens(doc)
        if kind == START
    ]


@settings(max_examples=1500, deadline=None)
@given(doc=documents())
def test_tokenizer_agrees_with_a_character_by_character_reading(doc: str) -> None:
    assert _engine_start_tags(doc) == reference.start_tags(doc)


@pytest.mark.parametrize(
    "doc",
    ["<a =href=x href = 'y'>", "<a/href=x/>", '<a href="x"href=y title=>', "<a b='>' c=\"'\" href=>", "<A\fHREF\f=\fz>",
     "<a href=a=b`c<d>", "<p <a href=x>", "<a href='x", "<a href=x", "</a href='>'><a href=y>", "<!--->--><a href=1>",
     "<!-- --!> <a href=2>", "<![CDATA[<a href=3>]]><a href=4>", "<?php <a href=5> ?><a href=6>"],
)  # fmt: skip
def test_tokenizer_agrees_on_hand_picked_cases(doc: str) -> None:
    assert _engine_start_tags(doc) == reference.start_tags(doc)


@settings(max_examples=1500, deadline=None)
@given(doc=st.text(alphabet="<>aAbp/=\"' \n\t!-?[]", max_size=60))
def test_tokenizer_agrees_on_random_markup_characters(doc: str) -> None:
    assert _engine_start_tags(doc) == reference.start_tags(doc)
