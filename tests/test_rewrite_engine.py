"""The rewrite engine (issue #15), run for real: the research's section 6 matrix and the issue's lists.

Every test also checks the contract's round trip (undo() gives the input back byte for byte).
"""

from __future__ import annotations

import pytest

from app.rewrite import OptionsError, Rendered, RewriteOptions, compile_email
from app.rewrite.attrs import decode_attribute
from app.rewrite.template import HONEYPOT_AFTER, HONEYPOT_BEFORE
from app.rewrite_signer import KeyRingSigner
from tests.rewrite_support import TRK, TagSigner, pixel, rewrite, undo
from trackd_links import KIND_CLICK, KeyRing
from trackd_links.urls import to_location


def check(html: str | None, plain: str | None = None, **options: object) -> Rendered:
    out = rewrite(html, plain, **options)
    assert out.error is None
    assert undo(out) == (html, plain)
    return out


def html_urls(out: Rendered) -> list[str]:
    return [link.url for link in out.links if link.part == "html"]


def reasons(out: Rendered) -> list[tuple[str, str]]:
    return [(s.raw, s.reason) for s in out.skipped]


NO_PIXEL = {"pixel": "none"}

# -- section 6 matrix ------------------------------------------------------------------------


def test_uppercase_tag_and_attribute() -> None:
    out = check('<A HREF="https://x/">x</A>', **NO_PIXEL)
    assert out.html == f'<A HREF="{TRK}/c/html-0">x</A>'


def test_unquoted_value_stays_unquoted() -> None:
    out = check("<a href=https://x/u?a=1&b=2>x</a>", **NO_PIXEL)
    assert out.html == f"<a href={TRK}/c/html-0>x</a>"
    assert html_urls(out) == ["https://x/u?a=1&b=2"]


def test_spaces_around_equals() -> None:
    out = check('<a href = "https://x">x</a>', **NO_PIXEL)
    assert out.html == f'<a href = "{TRK}/c/html-0">x</a>'


def test_whitespace_in_value_cleaned_and_span_replaced() -> None:
    out = check('<a href="\n https://x/n \t\n">x</a>', **NO_PIXEL)
    assert html_urls(out) == ["https://x/n"]
    assert out.html == f'<a href="{TRK}/c/html-0">x</a>'
    assert out.links[0].raw == "\n https://x/n \t\n"


def test_newline_inside_url_is_removed() -> None:
    out = check('<a href="https://x/a\nb\tc">x</a>', **NO_PIXEL)
    assert html_urls(out) == ["https://x/abc"]


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("https://x/?a=1&amp;b=2", "https://x/?a=1&b=2"),
        ("https://x/?a=1&region=eu&currency=usd", "https://x/?a=1&region=eu&currency=usd"),
        ("https://x/?a=1&amp;amp;b=2", "https://x/?a=1&amp;b=2"),
        ("https://x/?code&#x3D;test", "https://x/?code=test"),
        ("https://x/?a=1&#038;b=2", "https://x/?a=1&b=2"),
        ("https://x/?a=1&#38;b=2&#x26;c=3", "https://x/?a=1&b=2&c=3"),
        ("https://x/?copy=1&copy=2&not=3&para=4", "https://x/?copy=1&copy=2&not=3&para=4"),
        ("https://x/?a&AMP;b", "https://x/?a&b"),
    ],
)
def test_target_is_the_attribute_rule_decoding(raw: str, url: str) -> None:
    out = check(f'<a href="{raw}">x</a>', **NO_PIXEL)
    assert html_urls(out) == [url]
    assert out.links[0].raw == raw


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("&amp;", "&"), ("&amp", "&"), ("&ampx", "&ampx"), ("&amp=", "&amp="), ("&copy;", "\u00a9"),
        ("&copy ", "\u00a9 "), ("&notin;", "\u2209"), ("&notit;", "&notit;"), ("&noti", "&noti"),
        ("&#128;", "\u20ac"), ("&#0;", "\ufffd"), ("&#xD800;", "\ufffd"), ("&#x110000;", "\ufffd"),
        ("&#" + "9" * 50 + ";", "\ufffd"), ("&#x0000000041;", "A"), ("&#;", "&#;"), ("&#x;", "&#x;"),
        ("&", "&"), ("&;", "&;"), ("&region", "&region"), ("&lt;b&gt;", "<b>"), ("&quot;", '"'),
    ],
)  # fmt: skip
def test_attribute_decoder(value: str, decoded: str) -> None:
    assert decode_attribute(value) == decoded


def test_single_quotes_holding_double_quotes() -> None:
    out = check("<a href='https://x/?q=\"x\"'>x</a>", **NO_PIXEL)
    assert out.html == f"<a href='{TRK}/c/html-0'>x</a>"
    assert html_urls(out) == ['https://x/?q="x"']


def test_duplicate_href_first_wins() -> None:
    out = check('<a href="https://x/A" href="https://x/B">x</a>', **NO_PIXEL)
    assert out.html == f'<a href="{TRK}/c/html-0" href="https://x/B">x</a>'
    assert html_urls(out) == ["https://x/A"]


def test_gt_inside_an_earlier_attribute() -> None:
    out = check('<a title="a > b" data-x=\'>\' href="https://x/">x</a>', **NO_PIXEL)
    assert html_urls(out) == ["https://x/"]


def test_vml_in_conditional_comment_and_fallback() -> None:
    doc = (
        '<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://x/U" arcsize="10%">'
        '<w:anchorlock/><center>Go</center></v:roundrect><![endif]--><a href="https://x/U">Go</a>'
    )
    out = check(doc, **NO_PIXEL)
    assert [(link.index, link.url) for link in out.links] == [(0, "https://x/U"), (1, "https://x/U")]
    assert f'<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="{TRK}/c/html-0"' in (out.html or "")


@pytest.mark.parametrize("shape", ["v:roundrect", "v:rect", "v:oval", "v:shape", "V:RECT", "v:image", "v:arc"])
def test_each_vml_shape(shape: str) -> None:
    out = check(f'<!--[if gte mso 9]><{shape} href="https://x/"></{shape}><![endif]-->', **NO_PIXEL)
    assert html_urls(out) == ["https://x/"]


@pytest.mark.parametrize(
    "doc",
    [
        '<![if !mso]><a href="https://x/">x</a><![endif]>',
        '<!--[if !mso]><!--><a href="https://x/">x</a><!--<![endif]-->',
        '<!--[if !mso]><!-- --><a href="https://x/">x</a><!--<![endif]-->',
    ],
)
def test_downlevel_revealed(doc: str) -> None:
    assert html_urls(check(doc, **NO_PIXEL)) == ["https://x/"]


@pytest.mark.parametrize(
    "doc",
    [
        '<link rel="stylesheet" href="https://fonts.example/css">',
        '<base href="https://x/">',
        '<img src="https://x/i.png" href="https://x/">',
        '<form action="https://x/f"><button href="https://x/b">b</button><input formaction="https://x/i"></form>',
        '<script src="https://x/s.js"></script>',
        '<script>document.write("<a href=\\"https://x/\\">")</script>',
        '<style>a{background:url(https://x/)} </style><style>"<a href="https://x/">"</style>',
        '<!-- <a href="https://x/">old</a> -->',
        '<!----><!-- <a href="https://x/y"> --!><!---><!-- -- <a href="https://x/"> -->',
        '<title><a href="https://x/">t</a></title>',
        '<textarea><a href="https://x/"></textarea>',
        '<iframe><a href="https://x/"></iframe><xmp><a href="https://x/"></xmp><noembed><a href="https://x/"></noembed>',
        '<noframes><a href="https://x/"></noframes>',
        '<svg><a xlink:href="https://x/">s</a><a href="https://x/">s</a></svg>',
        '<math><a href="https://x/">m</a></math>',
        '<menu><item href="https://x/">i</item></menu>',
        '<p data-href="https://x/" x-href="https://x/">p</p>',
        '<?xml href="https://x/"?><!DOCTYPE html href="https://x/"><![CDATA[<a href="https://x/">]]>',
    ],
)
def test_never_rewritten(doc: str) -> None:
    out = check(doc, **NO_PIXEL)
    assert out.links == []
    assert out.html == doc


def test_raw_text_ends_at_its_end_tag_in_any_case() -> None:
    doc = '<TITLE>x</Title ><a href="https://x/1">a</a><SCRIPT>x</script/><a href="https://x/2">b</a>'
    assert html_urls(check(doc, **NO_PIXEL)) == ["https://x/1", "https://x/2"]


def test_raw_text_not_closed_by_a_longer_name() -> None:
    doc = '<script>x</scripts><a href="https://x/1"></script><a href="https://x/2">'
    assert html_urls(check(doc, **NO_PIXEL)) == ["https://x/2"]


def test_links_after_svg_are_rewritten() -> None:
    doc = '<svg/><a href="https://x/1">1</a><svg><g><a href="https://x/no"/></g></SVG><a href="https://x/2">2</a>'
    assert html_urls(check(doc, **NO_PIXEL)) == ["https://x/1", "https://x/2"]


def test_area() -> None:
    assert html_urls(check('<map><area shape="rect" href="https://x/a"></map>', **NO_PIXEL)) == ["https://x/a"]


@pytest.mark.parametrize(
    "raw",
    ["{{url}}", "*|UNSUB|*", "%%view_url%%", "{% url %}", "<%asm_unsubscribe_raw_url%>", "[[PERMALINK]]",
     "https://x/{{id}}", "https://x/?e=*|EMAIL|*", "https://x/${id}", "{{{c2a_link}}}"],
)  # fmt: skip
def test_placeholders_left_and_reported(raw: str) -> None:
    doc = f'<a href="{raw}">x</a>'
    out = check(doc, **NO_PIXEL)
    assert out.html == doc
    assert reasons(out) == [(raw, "placeholder")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("mailto:a@b.example", "scheme"), ("tel:+123", "scheme"), ("sms:123", "scheme"), ("#top", "fragment"),
        ("", "empty"), ("  ", "empty"), ("javascript:alert(1)", "scheme"), ("data:text/html,x", "scheme"),
        ("//cdn.example/x", "protocol_relative"), ("/relative/path", "relative"), ("page.html", "relative"),
        ("ftp://x/", "scheme"), ("myapp://open", "scheme"), ("https://user@x/", "invalid_url:userinfo"),
        ("https:x.example", "invalid_url:authority"), ("https://", "invalid_url:empty_host"),
    ],
)  # fmt: skip
def test_other_links_left_alone_never_an_error(raw: str, reason: str) -> None:
    doc = f'<a href="{raw}">x</a><a href="https://x/ok">ok</a>'
    out = check(doc, **NO_PIXEL)
    assert html_urls(out) == ["https://x/ok"]
    assert reasons(out) == [(raw, reason)]


def test_href_without_value_and_anchor_without_href() -> None:
    out = check('<a name="top">t</a><a href>e</a>', **NO_PIXEL)
    assert out.links == [] and reasons(out) == [("", "empty")]


def test_own_links_not_wrapped_twice() -> None:
    doc = f'<a href="{TRK}/c/abc">x</a><a href="HTTPS://TRK.TEST/c/abc">y</a>'
    out = check(doc, **NO_PIXEL)
    assert out.links == [] and [r for _, r in reasons(out)] == ["own_link", "own_link"]


def test_rewriting_its_own_output_changes_nothing() -> None:
    for pixel_mode in ("bottom", "none"):
        once = rewrite('<body><a href="https://x/">x</a></body>', pixel=pixel_mode)
        twice = rewrite(once.html, pixel=pixel_mode)
        assert twice.html == once.html and twice.links == []


def test_list_unsubscribe_never_tracked() -> None:
    doc = '<a href="https://x/unsub?u=1&amp;l=2">unsubscribe</a><a href="https://x/">x</a>'
    out = check(doc, "Unsubscribe: https://x/unsub?u=1&l=2", text="all", list_unsubscribe=["<https://x/unsub?u=1&l=2>"])
    assert html_urls(out) == ["https://x/"]
    assert ("https://x/unsub?u=1&amp;l=2", "list_unsubscribe") in reasons(out)
    assert out.text == "Unsubscribe: https://x/unsub?u=1&l=2"


OPT_OUTS = [
    'data-trackd="off"', "data-trackd=OFF", "data-trackd-notrack", 'clicktracking="off"', "clicktracking=off",
    "data-pm-no-track", "mc:disable-tracking", "ses:no-track", 'data-msys-clicktrack="0"',
    'data-mautic-disable-tracking="true"', "mautic:disable-tracking", 'rel="noopener notrack"', "REL=NoTrack",
]  # fmt: skip


@pytest.mark.parametrize("marker", OPT_OUTS)
def test_opt_out_markers_in_html_and_text(marker: str) -> None:
    doc = f'<a {marker} href="https://x/secret?a=1&amp;b=2">reset</a><a href="https://x/other">o</a>'
    text = "Reset: https://x/secret?a=1&b=2 other: https://x/other"
    for mode in ("match-html", "all"):
        out = check(doc, text, text=mode, **NO_PIXEL)
        assert html_urls(out) == ["https://x/other"]
        assert ("https://x/secret?a=1&amp;b=2", "opt_out") in reasons(out)
        assert out.text == f"Reset: https://x/secret?a=1&b=2 other: {TRK}/c/text-1"
        assert ("https://x/secret?a=1&b=2", "opted_out_in_html") in reasons(out)


def test_not_an_opt_out() -> None:
    doc = '<a data-trackd="on" clicktracking="on" rel="nofollow" data-msys-clicktrack="1" href="https://x/">x</a>'
    assert html_urls(check(doc, **NO_PIXEL)) == ["https://x/"]


def test_skip_patterns() -> None:
    doc = (
        '<a href="https://example.com/a">1</a><a href="https://sub.example.com/b">2</a>'
        '<a href="https://EXAMPLE.org/account/x">3</a><a href="https://example.org/other">4</a>'
        '<a href="https://notexample.com/">5</a><a href="https://host.example/">6</a>'
    )
    out = check(doc, skip=["*.example.com", "https://example.org/account/", "host.example"], **NO_PIXEL)
    assert html_urls(out) == ["https://example.org/other", "https://notexample.com/"]
    assert [r for _, r in reasons(out)] == ["skip_pattern"] * 4


def test_links_in_head_are_not_rewritten() -> None:
    doc = '<html><HEAD><a href="https://x/h">h</a></head><a href="https://x/b">b</a></html>'
    out = check(doc, **NO_PIXEL)
    assert html_urls(out) == ["https://x/b"] and reasons(out) == [("https://x/h", "in_head")]
    doc = '<head><a href="https://x/h"><body><a href="https://x/b">b'
    assert html_urls(check(doc, **NO_PIXEL)) == ["https://x/b"]


def test_unterminated_quote_is_reported() -> None:
    doc = '<a href="https://x/a>broken</a><a href="https://x/b">b</a>'
    out = check(doc, **NO_PIXEL)
    assert out.links == [] and reasons(out) == [("https://x/a>broken</a><a href=", "unterminated")]


def test_unterminated_tag_at_the_end() -> None:
    doc = '<a href="https://x/1">1</a><a href="https://x/2'
    assert html_urls(check(doc, **NO_PIXEL)) == ["https://x/1"]


def test_names() -> None:
    doc = (
        '<a data-trackd-name="hero-cta" href="https://x/1">1</a><a href="https://x/2" data-msys-linkname=footer>2</a>'
        f'<a data-trackd-name="{"n" * 65}" href="https://x/3">3</a><a data-trackd-name="caf&eacute;" href="https://x/4">'
    )
    out = check(doc, **NO_PIXEL)
    assert [(link.name, link.url) for link in out.links] == [
        ("hero-cta", "https://x/1"), ("footer", "https://x/2"), ("café", "https://x/4")]  # fmt: skip
    assert reasons(out) == [("https://x/3", "invalid_name")]


# -- link identity ---------------------------------------------------------------------------


def test_indexes_per_part_and_token_indexes_unique() -> None:
    doc = '<a href="https://x/1">1</a><a href="mailto:x@y">m</a><a href="https://x/2">2</a>'
    compiled = compile_email(doc, "https://x/2 and https://x/9", RewriteOptions(text="all", honeypot=True))
    signer = TagSigner()
    out = compiled.render(signer, "camp", "rcpt", sent_at=1_700_000_000, message_id="m-1")
    assert [(link.part, link.index, link.url) for link in out.links] == [
        ("html", 0, "https://x/1"), ("html", 1, "https://x/2"), ("text", 0, "https://x/2"), ("text", 1, "https://x/9"),
    ]  # fmt: skip
    tokens = sorted((c["part"], c["link_index"], c["honeypot"]) for c in signer.calls)
    assert tokens == [("html", 0, False), ("html", 1, False), ("html", 4, True), ("text", 2, False), ("text", 3, False)]
    assert all(c["sent_at"] == 1_700_000_000 and c["message_id"] == "m-1" for c in signer.calls)
    assert undo(out) == (doc, "https://x/2 and https://x/9")


def test_real_tokens_carry_the_exact_target() -> None:
    ring_signer = KeyRingSigner(KeyRing.from_specs(["k1:rewrite-test-secret-0123456789"]), "https://t.example.com")
    doc = (
        '<a data-trackd-name="cta" href="https://x/?a=1&amp;b=%41&region=eu#f">x</a><a href="https://bücher.example/ä">'
    )
    out = compile_email(doc, None, RewriteOptions()).render(ring_signer, "camp", "rcpt")
    assert out.error is None
    first, second = out.links
    claims = ring_signer.ring.open(first.click_url.rsplit("/", 1)[1], KIND_CLICK)
    assert claims is not None
    assert (claims.url, claims.link_index, claims.part, claims.link_name, claims.honeypot) == (
        "https://x/?a=1&b=%41&region=eu#f", 0, "html", "cta", False)  # fmt: skip
    claims = ring_signer.ring.open(second.click_url.rsplit("/", 1)[1], KIND_CLICK)
    assert claims is not None and claims.url == to_location("https://bücher.example/ä")


# -- pixel and honeypot ----------------------------------------------------------------------


def test_pixel_before_the_last_real_body_end() -> None:
    doc = "<html><body><p>x</p></BODY><!-- </body> --><!--[if mso]></body><![endif]--></html>"
    out = check(doc)
    assert out.html == doc.replace("</BODY>", pixel(f"{TRK}/o/rcpt.gif") + "</BODY>")
    doc = "<body>a</body>b</body><!-- </body> -->"
    out = check(doc)
    assert out.html == "<body>a</body>b" + pixel(f"{TRK}/o/rcpt.gif") + "</body><!-- </body> -->"


def test_pixel_appended_without_body_end() -> None:
    for doc in ("<p>no body end</p>", "<p>x</p><!-- </body> -->", "<script></body></script>", ""):
        out = check(doc)
        assert out.html == doc + pixel(f"{TRK}/o/rcpt.gif")


@pytest.mark.parametrize(
    "tail", ["<!-- unclosed", '<a href="https://x/', "<style>p{}", "<title>t", "<![if", "</a", "<p class=x"]
)
def test_pixel_before_an_unclosed_construct_at_the_end(tail: str) -> None:
    doc = "<p>no body end</p>" + tail
    out = check(doc)
    assert out.html == "<p>no body end</p>" + pixel(f"{TRK}/o/rcpt.gif") + tail


def test_pixel_marker_and_none() -> None:
    doc = "<body>a<!--trackd:open-->b<!-- trackd:open --></body>"
    out = rewrite(doc, pixel="marker")
    assert out.html == "<body>a" + pixel(f"{TRK}/o/rcpt.gif") + "b<!-- trackd:open --></body>"
    assert rewrite("<body>a</body>", pixel="marker").html == "<body>a</body>"
    assert rewrite("<!--[if mso]><!--trackd:open--><![endif]--></body>", pixel="marker").html == (
        "<!--[if mso]><!--trackd:open--><![endif]--></body>")  # fmt: skip
    out = rewrite(doc, pixel="none")
    assert out.html == doc and out.open_url == f"{TRK}/o/rcpt.gif"


def test_pixel_markup() -> None:
    markup = pixel("U")
    assert markup.startswith('<img src="U"') and 'width="1" height="1"' in markup and 'alt=""' in markup


def test_honeypot_hidden_and_pointing_at_the_first_link() -> None:
    doc = '<body><a href="mailto:x@y">m</a><a href="https://x/first">f</a><a href="https://x/2">2</a></body>'
    out = check(doc, honeypot=True)
    hp = f"{TRK}/c/html-2-hp"
    assert (out.html or "").endswith(HONEYPOT_BEFORE + hp + HONEYPOT_AFTER + pixel(f"{TRK}/o/rcpt.gif") + "</body>")
    assert 'aria-hidden="true"' in HONEYPOT_AFTER and 'tabindex="-1"' in HONEYPOT_AFTER
    assert "display:none" in HONEYPOT_AFTER and HONEYPOT_AFTER.endswith("></a>")
    assert [link.url for link in out.links] == ["https://x/first", "https://x/2"]
    signer = TagSigner()
    compile_email(doc, None, RewriteOptions(honeypot=True)).render(signer, "c", "r")
    assert [c["url"] for c in signer.calls if c["honeypot"]] == ["https://x/first"]
    assert rewrite("<body>no links</body>", honeypot=True).html == "<body>no links" + pixel(f"{TRK}/o/rcpt.gif") + (
        "</body>")  # fmt: skip
    assert rewrite('<a href="https://x/">x</a>', honeypot=True, pixel="none").html == (
        f'<a href="{TRK}/c/html-0">x</a>' + HONEYPOT_BEFORE + f"{TRK}/c/html-1-hp" + HONEYPOT_AFTER)  # fmt: skip


# -- text part -------------------------------------------------------------------------------

TEXT = "See https://x/path/. (https://x/y) <https://x/z>, ( https://x/w ) and https://x/Foo_(bar)! https://x/q?a=1&b=2;"


def test_text_all() -> None:
    out = check(None, TEXT, text="all")
    assert out.text == (
        f"See {TRK}/c/text-0. ({TRK}/c/text-1) <{TRK}/c/text-2>, ( {TRK}/c/text-3 ) and {TRK}/c/text-4! {TRK}/c/text-5;"
    )
    assert [link.url for link in out.links] == [
        "https://x/path/", "https://x/y", "https://x/z", "https://x/w", "https://x/Foo_(bar)", "https://x/q?a=1&b=2",
    ]  # fmt: skip
    assert out.open_url == f"{TRK}/o/rcpt.gif" and out.html is None


def test_text_match_html_and_off() -> None:
    html = '<a href="https://x/y">y</a><a href="https://x/q?a=1&amp;b=2">q</a>'
    out = check(html, TEXT, **NO_PIXEL)  # match-html is the default
    assert [(link.part, link.url) for link in out.links if link.part == "text"] == [
        ("text", "https://x/y"), ("text", "https://x/q?a=1&b=2")]  # fmt: skip
    assert ("https://x/path/", "not_in_html") in reasons(out)
    out = check(html, TEXT, text="off", **NO_PIXEL)
    assert out.text == TEXT and all(link.part == "html" for link in out.links)


def test_text_urls_never_cross_lines_and_keep_case_of_scheme() -> None:
    text = "HTTPS://X/a\r\nhttp://x/b\n{{ action_url }} https://x/{{id}} mailto:a@b\n[https://x/c]"
    out = check(None, text, text="all")
    assert [link.url for link in out.links] == ["HTTPS://X/a", "http://x/b", "https://x/c"]
    assert ("https://x/{{id}}", "placeholder") in reasons(out)


# -- everything else unchanged, any charset ------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "html"),
    [
        ("iso-8859-1", '<p>Caf\u00e9 \u00bb</p><a href="https://x/?q=caf\u00e9">\u00e9</a>'),
        ("shift_jis", '<p>\u65e5\u672c\u8a9e</p><a href="https://x/\u30c6\u30b9\u30c8">\u30c6</a>'),
        ("utf-8", '<p>\u2603</p><a href="https://x/">x</a>'),
    ],
)
def test_bytes_outside_spans_identical_in_any_charset(encoding: str, html: str) -> None:
    data = html.encode(encoding) + b"\xff\xfe" if encoding == "utf-8" else html.encode(encoding)
    text = data.decode(encoding, "surrogateescape")
    out = rewrite(text)
    assert out.error is None and len(out.links) == 1
    back, _ = undo(out)
    assert back is not None and back.encode(encoding, "surrogateescape") == data


# -- options and fail-open -------------------------------------------------------------------


def test_options_defaults_and_parse() -> None:
    assert RewriteOptions.parse(None) == RewriteOptions()
    default = RewriteOptions()
    assert (default.pixel, default.text, default.honeypot, default.list_unsubscribe, default.skip) == (
        "bottom", "match-html", False, (), ())  # fmt: skip
    parsed = RewriteOptions.parse({"pixel": "marker", "text": "all", "honeypot": True, "skip": ["a.example"],
                                   "list_unsubscribe": ["https://x/u"]})  # fmt: skip
    assert parsed.skip == ("a.example",) and parsed.list_unsubscribe == ("https://x/u",)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"pixel": "top"}, "pixel"), ({"pixel": 1}, "pixel"), ({"text": "on"}, "text"),
        ({"honeypot": "yes"}, "honeypot"), ({"honeypot": 1}, "honeypot"), ({"skip": "a.example"}, "skip"),
        ({"skip": [""]}, "skip[0]"),
        ({"skip": ["a.example", 3]}, "skip[1]"), ({"skip": ["has space.example"]}, "skip[0]"),
        ({"skip": ["a/b"]}, "skip[0]"), ({"list_unsubscribe": [None]}, "list_unsubscribe[0]"),
        ({"colour": 1}, "colour"), ([], "options"),
    ],
)  # fmt: skip
def test_bad_options(raw: object, field: str) -> None:
    with pytest.raises(OptionsError) as caught:
        RewriteOptions.parse(raw)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_fail_open_size_cap() -> None:
    doc = '<a href="https://x/">x</a>' * 100
    compiled = compile_email(doc, "https://x/", RewriteOptions(), max_chars=len(doc))
    out = compiled.render(TagSigner(), "c", "r")
    assert compiled.error and out.error and out.html == doc and out.text == "https://x/" and out.links == []


def test_fail_open_on_a_failure_inside_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.rewrite.template as template

    def broken(*_: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(template, "plan_text", broken)  # fault injection: the HTML plan has already run
    compiled = compile_email('<a href="https://x/">x</a>', "t", RewriteOptions())
    out = compiled.render(TagSigner(), "c", "r")
    assert out.error == "internal: RuntimeError" and out.html == '<a href="https://x/">x</a>' and out.text == "t"
    assert compile_email(b"<a>", None, RewriteOptions()).error  # type: ignore[arg-type]


class _BadSigner(TagSigner):
    def __init__(self, click: str) -> None:
        super().__init__()
        self.click = click

    def click_url(self, **kw: object) -> str:
        if self.click == "raise":
            raise ValueError("no key")
        return self.click


@pytest.mark.parametrize("click", ["raise", 'https://t/c/a"b', "https://t/c/a&b", "https://t/c/a b", ""])
def test_fail_open_on_a_bad_signer(click: str) -> None:
    doc = '<a href="https://x/">x</a><a href="https://x/2">x</a>'
    out = compile_email(doc, None, RewriteOptions()).render(_BadSigner(click), "c", "r")
    assert out.error and out.html == doc and out.links == [] and out.open_url is None


# -- a whole template ------------------------------------------------------------------------


def test_whole_newsletter_template() -> None:
    from pathlib import Path

    data = Path(__file__).parent / "data" / "rewrite"
    html = (data / "newsletter.html").read_text("utf-8")
    text = (data / "newsletter.txt").read_text("utf-8")
    unsubscribe = "<https://shop.example/unsubscribe?list=7&u=42>"
    out = check(html, text, list_unsubscribe=[unsubscribe], own_prefixes=("https://t.example.com/c/", f"{TRK}/c/"))
    sale_button = "https://shop.example/sale?utm_content=button&utm_source=newsletter"
    assert [(link.part, link.index, link.name, link.url) for link in out.links] == [
        ("html", 0, "logo", "https://shop.example/?utm_source=newsletter&utm_medium=email&utm_campaign=spring&region=eu"
                            "&currency=usd"),
        ("html", 1, None, 'https://shop.example/sale?q="spring"&sort=price'),
        ("html", 2, None, "https://shop.example/catalogue.pdf?v=2&lang=en"),
        ("html", 3, None, sale_button),
        ("html", 4, None, sale_button),
        ("html", 5, None, "https://shop.example/stores/north"),
        ("html", 6, "map-south", "https://shop.example/stores/south"),
        ("text", 0, None, sale_button),
        ("text", 1, None, "https://shop.example/catalogue.pdf?v=2&lang=en"),
    ]  # fmt: skip
    assert [(s.part, s.reason) for s in out.skipped] == [
        ("html", "in_head"), ("html", "scheme"), ("html", "scheme"), ("html", "fragment"), ("html", "relative"),
        ("html", "opt_out"), ("html", "opt_out"), ("html", "placeholder"), ("html", "placeholder"),
        ("html", "list_unsubscribe"), ("html", "protocol_relative"), ("html", "opt_out"), ("html", "own_link"),
        ("text", "not_in_html"), ("text", "opted_out_in_html"), ("text", "not_in_html"), ("text", "not_in_html"),
        ("text", "list_unsubscribe"),
    ]  # fmt: skip
    assert [s.raw for s in out.skipped if s.part == "text"][-3:-1] == [
        "https://elsewhere.example/page", "https://shop.example/stores/(north)"]  # fmt: skip
    assert out.html is not None and out.html.count('<img src="https://trk.test/o/') == 1
    assert out.html.index("https://trk.test/o/") > out.html.index("footer: <a href")
    assert out.html.endswith('padding:0;"></BODY>\n</html>\n')
    assert '<link href="https://fonts.example/css?family=Roboto:400,700"' in out.html
    assert 'src="https://shop.example/button-bg.png"' in out.html and "in-script" in out.html


# -- hostile input ---------------------------------------------------------------------------


def test_cve_2025_6069_input_is_fast() -> None:
    import time

    doc = '<a href="https://x/">l</a>' + "a<" * 200_000  # 400 KB: 96 s in html.parser on 3.11.7
    start = time.perf_counter()
    out = check(doc, **NO_PIXEL)
    assert time.perf_counter() - start < 1.0
    assert html_urls(out) == ["https://x/"]


def test_caps_on_links_and_values() -> None:
    doc = '<a href="https://x/">x</a>' * 10_001 + '<a href="https://x/' + "a" * 70_000 + '">'
    out = rewrite(doc, **NO_PIXEL)
    assert out.error is None and len(out.links) == 10_000
    assert [r for _, r in reasons(out)] == ["too_many_links", "invalid_url:too_long"]
    assert undo(out) == (doc, None)
