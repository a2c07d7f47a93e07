"""Hard real-world URLs, and what a tracked link must redirect to for each of them.

`CORPUS` holds `(label, input_url, expected_location)`: the URL a sender signs and the exact
`Location` header value a click on the tracked link must produce. The rules:

* An ASCII URL comes back unchanged, byte for byte. Nothing is normalised: existing `%xx`
  escapes keep their case, `+`, `%20` and `%2B` stay distinct, `;`, `&`, `&amp;`, empty
  values, a trailing `?` or `#`, dot segments, double slashes, the case of the scheme and of
  an ASCII host, and explicit ports (even `:80` on http) are all kept.
* An IRI is converted the way browsers do it. A non-ASCII host becomes its IDNA form
  (`idna.encode(host, uts46=True)`, which also maps it through UTS46: lowercase, NFC, full-width
  forms and ideographic full stops folded, soft hyphens dropped). Every non-ASCII character
  in the path, query or fragment, and every space anywhere after the host, is percent-encoded
  as UTF-8 with uppercase hex (`ü` -> `%C3%BC`, ` ` -> `%20`). Nothing else changes.

The expected values below are written out by hand (punycode taken from `idna`) rather than
computed with the code under test. Entries whose URL is ASCII use `_kept`, which states that
the expected `Location` is the input itself.

`REJECTED` holds `(label, input)` pairs that signing must refuse: other schemes, relative and
scheme-relative references, user info, backslashes, control characters (header injection),
over-long input, broken hosts and ports, lone surrogates, and non-strings.
"""

from __future__ import annotations

MAX_URL_LENGTH = 2048


def _kept(label: str, url: str) -> tuple[str, str, str]:
    """An ASCII URL: the `Location` must be the input, byte for byte."""
    assert url.isascii(), label
    return (label, url, url)


# A ~2,000-character query (111 parameters, each with an escape and a `+`), built here so the
# file stays readable. Total URL length stays within MAX_URL_LENGTH.
_LONG_QUERY_URL = "https://www.example.com/p?" + "&".join(f"k{i:03d}=v{i:03d}%2F{i:03d}+x" for i in range(111))
# Exactly at the limit: 2,048 characters is still signable.
_MAX_LENGTH_URL = "https://example.com/?pad=" + "a" * (MAX_URL_LENGTH - len("https://example.com/?pad="))
# A deep path: 250 segments.
_LONG_PATH_URL = "https://cdn.example.com/" + "/".join(f"dir{i:03d}" for i in range(250)) + "/file.txt"
# A short IRI whose URI form is six times longer (each `ü` becomes `%C3%BC`).
_LONG_IRI_PATH = "https://example.com/" + "ü" * 300

CORPUS: list[tuple[str, str, str]] = [
    # --- Percent escapes: kept exactly, whatever their case or meaning --------------------
    _kept("pct_upper_hex", "https://example.com/search?q=caf%C3%A9&path=%2Fhome%2F"),
    _kept("pct_lower_hex", "https://example.com/search?q=caf%c3%a9&path=%2fhome%2f"),
    _kept("pct_mixed_case_hex", "https://example.com/a%2Fb%2fc?eq=%3D%3d&x=%C3%a9"),
    _kept("pct_encoded_percent", "https://example.com/discount?code=100%25OFF&rate=5%25"),
    _kept("pct_2500_nul_lookalike", "https://example.com/file%2500.txt?x=%2500&y=%252500"),
    _kept("pct_2f_in_path", "https://api.example.com/v1/repos/owner%2Frepo/issues?state=open"),
    _kept("pct_encoded_crlf", "https://a.com/%0d%0a"),
    _kept("pct_encoded_header_injection_text", "https://a.com/x?%0D%0ASet-Cookie:%20sid=1"),
    _kept("pct_bare_percent_invalid", "https://example.com/sale?off=100%&note=50%+off&z=%zz"),
    _kept("pct_latin1_escape", "https://example.com/r%E9sum%E9.pdf?n=Jos%E9"),
    _kept("pct_utf8_path", "https://de.wikipedia.org/wiki/M%C3%BCnchen"),
    # --- `+` vs `%20` vs `%2B`: three different things, none rewritten ------------------
    _kept("plus_as_space_query", "https://www.google.com/search?q=red+shoes+size+42"),
    _kept("pct20_space_query", "https://example.com/search?q=red%20shoes%20size%2042"),
    _kept("pct2b_literal_plus", "https://example.com/search?q=c%2B%2B+templates"),
    _kept("plus_in_path", "https://example.com/tags/c++/a+b"),
    _kept("plus_pct20_pct2b_mixed", "https://example.com/?a=1+1%3D2&b=1%2B1=2&c=%20+%20"),
    # --- Repeated parameters and array-style keys -----------------------------------------
    _kept("repeated_param", "https://shop.example.com/filter?color=red&color=blue&color=red&size=M"),
    _kept("repeated_array_brackets", "https://example.com/?ids[]=1&ids[]=2&ids%5B%5D=3&ids%5b%5d=4"),
    # --- Empty values, empty queries ---------------------------------------------------------
    _kept("empty_values", "https://example.com/?a=&b="),
    _kept("empty_query_trailing_question", "https://example.com/path?"),
    _kept("empty_query_lone_amp", "https://example.com/path?&"),
    _kept("bare_key_no_equals", "https://example.com/path?a"),
    _kept("empty_keys_and_pairs", "https://example.com/?=x&=&&a=1&&"),
    _kept("trailing_amp", "https://example.com/?a=1&b=2&"),
    _kept("equals_in_value", "https://example.com/?expr=a=b=c&d=="),
    # --- `;` matrix / path parameters and `;` as separator -------------------------------
    _kept("matrix_params", "https://example.com/cars;color=red;year=2012/models;v=2?x=1"),
    _kept("jsessionid", "https://shop.example.com/cart;jsessionid=0A1B2C3D4E5F6A7B?step=2"),
    _kept("semicolon_query_separator", "https://example.com/?a=1;b=2;c=;d"),
    # --- Fragments ----------------------------------------------------------------------------
    _kept("fragment_with_query_chars", "https://example.com/page#section?x=1&y=2"),
    _kept("fragment_spa_route", "https://app.example.com/#/inbox/thread/123?tab=all&q=a%2Fb"),
    _kept("fragment_hashbang_and_hash", "https://example.com/#!/path/to#anchor"),
    _kept("fragment_escaped_hash", "https://example.com/docs#%23heading-1"),
    _kept("fragment_text_directive", "https://example.com/article#:~:text=hello,world&text=-,end"),
    _kept("fragment_after_query", "https://example.com/p?utm_source=x#pricing?plan=pro"),
    # --- Ports ----------------------------------------------------------------------------------
    _kept("port_80_explicit", "http://example.com:80/"),
    _kept("port_443_explicit", "https://example.com:443/login?next=/home"),
    _kept("port_8080", "http://localhost:8080/health?verbose=1"),
    _kept("port_high", "https://example.com:65535/x"),
    _kept("port_empty", "http://example.com:/path"),
    _kept("port_no_path", "http://example.com:8000"),
    # --- IP literal hosts -------------------------------------------------------------------
    _kept("ipv4", "http://192.0.2.10/track?id=1"),
    _kept("ipv4_port", "http://203.0.113.5:8443/a/b?c=d"),
    _kept("ipv6_port", "http://[2001:db8::1]:8080/x"),
    _kept("ipv6_no_port", "https://[2001:db8:85a3::8a2e:370:7334]/"),
    _kept("ipv6_mapped_ipv4", "http://[::ffff:192.0.2.1]/path?q=1"),
    _kept("ipv6_loopback_no_path", "http://[::1]"),
    _kept("ipv6_uppercase_hex", "http://[2001:DB8::ABCD]:443/"),
    # --- ASCII hosts: case and shape kept ----------------------------------------------------
    _kept("ascii_host_mixed_case", "https://WWW.Example.COM/Path/To/Page"),
    _kept("host_trailing_dot", "https://example.com./"),
    _kept("host_already_punycode", "https://xn--e1afmkfd.xn--p1ai/"),
    _kept("host_underscore_subdomain", "https://my_service.example.com/"),
    # --- IDN hosts: IDNA via UTS46 (lowercased, NFC, width-folded) ---------------------------
    ("idn_german", "https://bücher.de/katalog?q=1", "https://xn--bcher-kva.de/katalog?q=1"),
    ("idn_german_uppercase", "https://MÜNCHEN.de/", "https://xn--mnchen-3ya.de/"),
    ("idn_eszett_nontransitional", "https://straße.de/", "https://xn--strae-oqa.de/"),
    ("idn_decomposed_umlaut", "https://bu\u0308cher.de/", "https://xn--bcher-kva.de/"),
    ("idn_soft_hyphen_ignored", "https://bü\u00adcher.de/", "https://xn--bcher-kva.de/"),
    ("idn_subdomain", "https://www.bücher.de/", "https://www.xn--bcher-kva.de/"),
    ("idn_trailing_dot", "https://bücher.de./", "https://xn--bcher-kva.de./"),
    ("idn_no_path", "https://españa.com", "https://xn--espaa-rta.com"),
    ("idn_port_and_iri_path", "http://bücher.de:8080/ü", "http://xn--bcher-kva.de:8080/%C3%BC"),
    ("idn_japanese", "https://例え.テスト/パス", "https://xn--r8jz45g.xn--zckzah/%E3%83%91%E3%82%B9"),
    ("idn_japanese_jp", "https://日本語.jp/", "https://xn--wgv71a119e.jp/"),
    ("idn_cyrillic", "https://пример.рф/", "https://xn--e1afmkfd.xn--p1ai/"),
    ("idn_cyrillic_uppercase", "https://ПРИМЕР.РФ/", "https://xn--e1afmkfd.xn--p1ai/"),
    ("idn_korean", "https://한국.kr/", "https://xn--3e0b707e.kr/"),
    ("idn_greek", "https://δοκιμή.gr/", "https://xn--jxalpdlp.gr/"),
    ("idn_arabic", "https://مثال.إختبار/", "https://xn--mgbh0fb.xn--kgbechtv/"),
    # Full-width Latin letters fold to ASCII; U+3002 (ideographic full stop) is a label dot.
    (
        "idn_fullwidth_ascii",
        "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/",
        "https://example.com/",
    ),
    ("idn_ideographic_full_stop", "https://münchen\u3002de/", "https://xn--mnchen-3ya.de/"),
    # --- IRIs: non-ASCII outside the host is UTF-8 percent-encoded, uppercase hex -----------
    (
        "iri_german_path",
        "https://example.com/straße/größe",
        "https://example.com/stra%C3%9Fe/gr%C3%B6%C3%9Fe",
    ),
    (
        "iri_query",
        "https://example.com/search?q=café&city=Zürich",
        "https://example.com/search?q=caf%C3%A9&city=Z%C3%BCrich",
    ),
    ("iri_fragment", "https://example.com/wiki#Überblick", "https://example.com/wiki#%C3%9Cberblick"),
    (
        "iri_cyrillic_path",
        "https://ru.wikipedia.org/wiki/Москва",
        "https://ru.wikipedia.org/wiki/%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0",
    ),
    (
        "iri_japanese_query",
        "https://example.jp/search?q=東京",
        "https://example.jp/search?q=%E6%9D%B1%E4%BA%AC",
    ),
    ("iri_arabic_path", "https://example.com/مرحبا", "https://example.com/%D9%85%D8%B1%D8%AD%D8%A8%D8%A7"),
    (
        "iri_emoji_astral",
        "https://example.com/🎉/party?e=😀",
        "https://example.com/%F0%9F%8E%89/party?e=%F0%9F%98%80",
    ),
    (
        "iri_next_to_existing_escapes",
        "https://example.com/caf%C3%A9/café?x=%c3%a9&y=é",
        "https://example.com/caf%C3%A9/caf%C3%A9?x=%c3%a9&y=%C3%A9",
    ),
    # Outside the host there is no normalisation: NFD stays NFD.
    ("iri_nfd_not_normalised", "https://example.com/e\u0301", "https://example.com/e%CC%81"),
    # Copy-paste debris from email bodies.
    ("iri_nbsp", "https://example.com/a\u00a0b", "https://example.com/a%C2%A0b"),
    (
        "iri_zero_width_space",
        "https://example.com/unsubscribe\u200b",
        "https://example.com/unsubscribe%E2%80%8B",
    ),
    (
        "iri_everywhere",
        "https://bücher.de/straße?q=größe#Überblick",
        "https://xn--bcher-kva.de/stra%C3%9Fe?q=gr%C3%B6%C3%9Fe#%C3%9Cberblick",
    ),
    ("iri_long_path_expands", _LONG_IRI_PATH, "https://example.com/" + "%C3%BC" * 300),
    # --- Spaces: percent-encoded as %20 wherever they appear after the host -----------------
    ("space_in_path", "https://example.com/my file.pdf", "https://example.com/my%20file.pdf"),
    (
        "space_in_query",
        "https://example.com/?q=red shoes&x=a b",
        "https://example.com/?q=red%20shoes&x=a%20b",
    ),
    ("space_in_fragment", "https://example.com/#two words", "https://example.com/#two%20words"),
    # WHATWG strips C0 controls and spaces at both ends (browsers navigate to .../a).
    ("space_trailing", "https://example.com/a ", "https://example.com/a"),
    ("space_next_to_plus", "https://example.com/?q=a +b", "https://example.com/?q=a%20+b"),
    # --- Read as browsers read it (WHATWG): C0 controls and spaces stripped at both ends, ASCII
    # tab, LF and CR removed anywhere. These were refused before; what a browser does with the
    # sender's string is what the Location now says, and no control byte can reach a header.
    ("leading_space", " https://example.com/", "https://example.com/"),
    ("raw_nul", "https://a.com/\x00", "https://a.com/"),
    ("raw_soh", "https://a.com/\x01", "https://a.com/"),
    ("raw_cr", "https://a.com/\rSet-Cookie:x=1", "https://a.com/Set-Cookie:x=1"),
    ("raw_lf", "https://a.com/\nSet-Cookie:x=1", "https://a.com/Set-Cookie:x=1"),
    ("raw_crlf", "https://a.com/\r\nSet-Cookie: x=1", "https://a.com/Set-Cookie:%20x=1"),
    ("raw_tab", "https://a.com/a\tb", "https://a.com/ab"),
    (
        "wrapped_in_email_body",
        "\r\n  https://example.com/very/long/\r\n  path?q=1 \r\n",
        "https://example.com/very/long/%20%20path?q=1",
    ),
    ("tab_in_host", "https://exa\tmple.com/", "https://example.com/"),
    # --- Length -----------------------------------------------------------------------------
    _kept("long_query_2000", _LONG_QUERY_URL),
    _kept("length_exactly_2048", _MAX_LENGTH_URL),
    _kept("long_path", _LONG_PATH_URL),
    # --- UTM and ad-click parameters ----------------------------------------------------------
    _kept(
        "utm_full_set",
        "https://www.example.com/landing?utm_source=newsletter&utm_medium=email"
        "&utm_campaign=spring_sale_2024&utm_term=running+shoes&utm_content=hero_button",
    ),
    _kept(
        "utm_with_id_and_fragment",
        "https://www.example.com/pricing/?utm_id=cmp-8812&utm_source=Newsletter&utm_medium=Email"
        "&utm_campaign=Q3%20Launch&utm_content=cta%7Cfooter#plans",
    ),
    _kept(
        "click_ids",
        "https://www.example.com/?gclid=Cj0KCQjw9ZGYBhCEARIsAEUXITW_xyz-AbC123_wcB"
        "&fbclid=IwAR2F4-Ll0bG7mA_Q9eYkWv8yZ1XoJ3N&msclkid=a1b2c3d4e5f60718293a4b5c6d7e8f90",
    ),
    # --- ESP-style tracking links -------------------------------------------------------------
    _kept(
        "mailchimp_click",
        "https://example.us4.list-manage.com/track/click?u=9a8b7c6d5e4f3a2b1c0d9e8f7&id=1a2b3c4d5e&e=0f1e2d3c4b",
    ),
    _kept("mailchimp_mc_ids", "https://www.example.com/sale?mc_cid=4b2a9f1c3d&mc_eid=8e7d6c5b4a&mc_eid="),
    _kept(
        "hubspot_hsenc",
        "https://www.example.com/pricing?utm_campaign=Q3&utm_medium=email&_hsmi=281234567"
        "&_hsenc=p2ANqtz-8xK3_eM4vXb1Q-Jz9YwLrT5nFhPq2sU7cVd0aGiKoRm6tHyE1bNw4lZx8jCf3DgS9uA_pWvQ"
        "&utm_content=281234567&utm_source=hs_email",
    ),
    _kept(
        "salesforce_mc_qs",
        "https://click.e.example.com/?qs=4f8a1c9e2b7d3f6a0e5c8b1d4a7f2e9c3b6d0a5f8e1c4b7a2d9f6e3c0b5a8d1f"
        "4e7c2b9a6d3f0e5c8b1a4d7f2e9c3b6&j=1a2b3c&sfmc_sub=12345678&l=42_HTML&u=987654321&mid=7001234&jb=1",
    ),
    _kept(
        "pardot_link",
        "https://go.example.com/e/123456/2024-05-01/abcd1/123456789?h=Xy9_Zq-Ab0&utm_source=pardot",
    ),
    _kept(
        "sendgrid_upn",
        "https://u1234567.ct.sendgrid.net/ls/click?upn=u001.Ab-2BCd_Ef0gH1iJ-2FkL2mN3oP-3D-3DxQ4r"
        "_5sT6uV7wX8yZ9aB0cD-2BeF-3D",
    ),
    _kept(
        "amazon_ses_awstrack",
        "https://abcd1234.r.us-east-1.awstrack.me/L0/https:%2F%2Fwww.example.com%2Fpath%3Fa=1"
        "/1/0100018f-aaaa-bbbb-cccc-000000000000-000000/AbCdEfGh1234=350",
    ),
    _kept(
        "base64_padding",
        "https://example.com/confirm?data=SGVsbG8gV29ybGQ=&sig=YWJjZA==&raw=a+b/c9==&enc=YWJjZA%3D%3D",
    ),
    _kept(
        "jwt_token",
        "https://app.example.com/magic-login?token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c&next=%2Fdashboard",
    ),
    # --- HTML `&amp;`: decoded links are plain `&`; literal `&amp;` text is kept as sent ------
    _kept("html_amp_decoded", "https://example.com/?a=1&b=2&c=3"),
    _kept("html_amp_literal", "https://example.com/?a=1&amp;b=2"),
    _kept("html_amp_double_escaped", "https://example.com/?a=1&amp;amp;b=2&amp;"),
    _kept("html_entities_literal", "https://example.com/?q=&lt;b&gt;&quot;hi&quot;&#39;"),
    # --- Sub-delimiters and other printable ASCII in path and query ---------------------------
    _kept("sub_delims_path", "https://example.com/it's/(draft)!/*~$,@/file;v=1"),
    _kept("sub_delims_query", "https://example.com/?q='x'&a=(1)&b=!&c=*&d=~&e=$5&f=a,b&g=@h"),
    _kept("wikipedia_parens", "https://en.wikipedia.org/wiki/Mercury_(planet)"),
    _kept("at_in_path", "https://medium.com/@username/post-title-1a2b3c4d5e6f"),
    _kept("at_in_query", "https://example.com/unsubscribe?email=jane.doe@example.org&list=42"),
    _kept("apostrophe_names", "https://example.com/o'reilly?name=O'Brien"),
    _kept("tilde_user_glob", "https://example.com/~user/files/*.txt"),
    _kept("colon_in_path", "https://example.com/wiki/Special:Search/12:30"),
    _kept(
        "kibana_rison",
        "https://kibana.example.com/app/discover#/?_g=(time:(from:now-15m,to:now))"
        "&_a=(query:(language:kuery,query:'status:500'),filters:!())",
    ),
    _kept("json_in_query", 'https://example.com/api?filter={"status":"active","ids":[1,2]}'),
    _kept("ascii_unusual_printables", "https://example.com/a|b^c`d<e>?x={y}"),
    # --- Scheme case, structure, dot segments, slashes ---------------------------------------
    _kept("uppercase_scheme", "HTTPS://EXAMPLE.COM/Path"),
    _kept("mixed_case_scheme", "HtTp://example.com/"),
    _kept("trailing_hash", "https://example.com/page#"),
    _kept("empty_query_and_fragment", "https://example.com/?#"),
    _kept("double_slashes_path", "https://example.com//a//b///c"),
    _kept("dot_segments", "https://example.com/a/./b/../c"),
    _kept("dot_segments_escaped", "https://example.com/a/%2e%2e/b/%2E/c"),
    _kept("dot_segments_above_root", "https://example.com/../../etc"),
    _kept("no_path", "http://example.com"),
    _kept("no_path_query", "https://example.com?a=1"),
    _kept("no_path_fragment", "https://example.com#top"),
    # --- mailto-like text and nested URLs in the query ---------------------------------------
    _kept(
        "mailto_in_query",
        "https://example.com/share?to=mailto:someone@example.com&subject=Hello%20there&body=Hi!",
    ),
    _kept("mailto_raw_nested_query", "https://example.com/r?next=mailto:a@b.example?subject=x&cc=c@d.example"),
    _kept(
        "nested_encoded_url",
        "https://example.com/redirect?u=https%3A%2F%2Fother.example.org%2Fpath%3Fa%3D1%26b%3D2",
    ),
    _kept("nested_double_encoded_url", "https://example.com/r?u=https%253A%252F%252Fx.example.org%252F"),
    _kept("nested_raw_url", "https://example.com/r?u=https://other.example.org/path?a=1&b=2#frag"),
    _kept(
        "google_url_redirect",
        "https://www.google.com/url?q=https://example.com/page?x%3D1&sa=D&source=editors"
        "&ust=1700000000000000&usg=AOvVaw0abcDEF123",
    ),
    # An IDN inside the query is not a host: it is percent-encoded, not punycoded.
    (
        "nested_iri_host_in_query",
        "https://example.com/r?u=https://bücher.de/",
        "https://example.com/r?u=https://b%C3%BCcher.de/",
    ),
]

REJECTED: list[tuple[str, object]] = [
    # Browsers decode %xx in hosts: http://evil%2Ecom/ goes to evil.com.
    ("percent_in_host", "http://evil%2Ecom/"),
    # --- Schemes other than http(s) ------------------------------------------------------------
    ("javascript", "javascript:alert(1)"),
    ("javascript_mixed_case", "JaVaScRiPt:alert(document.cookie)"),
    ("javascript_with_slashes", "javascript://example.com/%0aalert(1)"),
    ("vbscript", "vbscript:msgbox(1)"),
    ("data_html", "data:text/html,<script>alert(1)</script>"),
    ("data_base64", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
    ("file", "file:///etc/passwd"),
    ("ftp", "ftp://x"),
    # --- Not absolute, or no authority -----------------------------------------------------
    ("relative_absolute_path", "/path"),
    ("relative_path", "path"),
    ("protocol_relative", "//evil.com"),
    ("scheme_no_slashes", "https:evil.com"),
    ("scheme_one_slash", "https:/evil.com"),
    ("empty_host_three_slashes", "https:///nohost"),
    ("empty_host_nothing_after", "https://"),
    ("empty_host_with_port", "http://:80/"),
    # --- User information -------------------------------------------------------------------
    ("userinfo_user", "http://user@host/"),
    ("userinfo_user_pass", "http://user:pass@host/"),
    ("userinfo_spoof", "https://good.example.com@evil.example.net/"),
    # --- Backslashes (parser differentials) ------------------------------------------------
    ("backslash_at_authority", "https://evil.com\\@good.com"),
    ("backslash_in_path", "https://example.com/a\\b"),
    ("backslash_as_slash", "https://example.com\\path"),
    # --- Control characters (header injection) -------------------------------------------
    # (Tab, LF and CR anywhere, and controls at either end, are removed as browsers do: see CORPUS.)
    ("raw_nul_inside", "https://a.com/a\x00b"),
    ("raw_soh_inside", "https://a.com/a\x01b"),
    ("raw_vt_inside", "https://a.com/a\x0bb"),
    ("raw_del", "https://a.com/\x7f"),
    ("raw_nel_c1", "https://a.com/\x85"),
    # --- Length and emptiness ---------------------------------------------------------------
    (
        "too_long_2049",
        "https://example.com/?pad=" + "a" * (MAX_URL_LENGTH + 1 - len("https://example.com/?pad=")),
    ),
    ("empty", ""),
    ("whitespace_only", "   "),
    # --- Broken hosts and ports ---------------------------------------------------------------
    ("space_in_host", "http://exa mple.com/"),
    ("port_too_large", "http://a.com:99999/"),
    ("port_65536", "http://a.com:65536/"),
    ("port_not_numeric", "http://a.com:80a/"),
    ("port_negative", "http://a.com:-1/"),
    ("ipv6_unclosed", "http://[::1/"),
    ("ipv6_junk_after_bracket", "http://[::1]x/"),
    # IDNA2008 disallows emoji and symbols, so "emoji domains" cannot be converted.
    ("idn_emoji_host", "https://😀.example/"),
    ("idn_symbol_host", "https://i\u2764.ws/"),
    # U+FF0F (full-width solidus) maps to "/" under UTS46: not a valid host character.
    ("idn_fullwidth_solidus_host", "https://evil.com\uff0fgood.com/"),
    # --- Hosts no browser follows (hostile-clients L4) ----------------------------------------
    ("punycode_invalid", "http://xn--zz.com/"),
    ("punycode_empty", "https://xn--.com/"),
    ("punycode_control", "https://xn--a.com/"),
    ("punycode_invalid_upper", "https://XN--ZZ.com/"),
    ("punycode_invalid_in_idn", "https://b\u00fccher.xn--zz/"),
    ("ipv6_too_many_groups", "http://[1:2:3:4:5:6:7:8:9]/"),
    ("ipv6_triple_colon", "http://[:::]/"),
    ("ipv4_out_of_range", "http://256.256.256.256/"),
    ("host_ends_in_bad_number", "http://foo.09/"),
    ("invisible_times_host", "https://aa\u2062.com/x"),
    ("inhibit_swapping_host", "https://aa\u206a.com/"),
    ("halfwidth_hangul_filler_host", "https://aa\uffa0.com/"),
    # Node 20 maps U+1E9E to "ss", newer UTS-46 tables to "ß": browsers and idna disagree.
    ("capital_sharp_s_host", "https://\u1e9e.de/"),
    ("forbidden_host_caret", "http://a^b/"),
    # --- Text that cannot be encoded ------------------------------------------------------
    ("lone_surrogate", "https://a.com/\ud800"),
    # --- Not a string -------------------------------------------------------------------------
    ("none", None),
    ("int", 42),
    ("list", ["x"]),
    ("dict", {"u": 1}),
    ("bytes", b"https://example.com/"),
]

assert len({label for label, _, _ in CORPUS}) == len(CORPUS), "CORPUS labels must be unique"
assert len({label for label, _ in REJECTED}) == len(REJECTED), "REJECTED labels must be unique"
assert len(_LONG_QUERY_URL) <= MAX_URL_LENGTH and len(_LONG_QUERY_URL.partition("?")[2]) >= 1900
assert len(_MAX_LENGTH_URL) == MAX_URL_LENGTH
