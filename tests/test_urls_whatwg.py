"""The signing check reads URLs as browsers do (WHATWG URL standard), checked three ways:

* against the web-platform-tests URL data (tests/data/urltestdata_http.json, see its README);
* against ada, the WHATWG implementation Node uses, over the corpus and hypothesis-made strings;
* against Node 20 itself, all inputs in one `node` process.

The invariant: when `to_location` accepts a string, a browser accepts it too, and reads our
`Location` as the very URL it reads the sender's string as (same `href`). When a browser refuses
a string, we refuse it. Where we refuse what browsers accept, it is policy, and the error's
`reason` must be one of `trackd_links.urls.POLICY_REASONS` (documented there and in docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import ada_url
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trackd_links.urls as urls
from tests.url_corpus import CORPUS, REJECTED
from trackd_links.urls import InvalidURL, to_location

# getattr: so that these tests fail (rather than not import) against the code before item 8.
POLICY_REASONS: frozenset[str] = getattr(urls, "POLICY_REASONS", frozenset())
# Refused although ada accepts: Node 20 refuses these (or reads them differently).
NODE_RULES: frozenset[str] = getattr(urls, "ADA_LENIENT_REASONS", frozenset())
try:
    from trackd_links.url_tables import NODE20_REFUSED_IN_HOST
except ImportError:  # before item 8: the code points hostile-clients.md L4 names
    NODE20_REFUSED_IN_HOST = ((0x2062, 0x2062), (0x206A, 0x206F), (0xFFA0, 0xFFA0), (0x1E9E, 0x1E9E))

WPT = json.loads((Path(__file__).parent / "data" / "urltestdata_http.json").read_text("ascii"))
WPT_FAILURES = [case["input"] for case in WPT if case.get("failure")]
WPT_SUCCESSES = [(case["input"], case["href"]) for case in WPT if not case.get("failure")]


def whatwg_href(url: str) -> str | None:
    try:
        return ada_url.parse_url(url, attributes=("href",))["href"]
    except ValueError:
        return None


def outcome(url: object) -> tuple[str | None, str | None]:
    """(Location, None) when signed, (None, reason) when refused."""
    try:
        return to_location(url), None
    except InvalidURL as exc:
        return None, getattr(exc, "reason", "no reason given")


# --- web-platform-tests ---------------------------------------------------------------------


def test_the_wpt_subset_is_the_one_described() -> None:
    assert len(WPT_FAILURES) >= 150 and len(WPT_SUCCESSES) >= 150
    assert len({case["input"] for case in WPT}) == len(WPT)


@pytest.mark.parametrize("url", WPT_FAILURES, ids=[ascii(u)[1:-1][:60] for u in WPT_FAILURES])
def test_what_browsers_refuse_is_refused(url: str) -> None:
    location, _ = outcome(url)
    assert location is None, f"signed {location!r}, which browsers refuse"


@pytest.mark.parametrize(("url", "href"), WPT_SUCCESSES, ids=[ascii(u)[1:-1][:60] for u, _ in WPT_SUCCESSES])
def test_what_browsers_accept_is_signed_as_they_read_it_or_refused_by_policy(url: str, href: str) -> None:
    location, reason = outcome(url)
    if location is None:
        assert reason in POLICY_REASONS, f"refused ({reason}) although browsers accept it as {href!r}"
        return
    # Byte for byte when we can; otherwise a browser reading our Location lands on `href` exactly.
    assert location == href or whatwg_href(location) == href, location


def test_most_of_what_browsers_accept_is_signed() -> None:
    signed = [url for url, _ in WPT_SUCCESSES if outcome(url)[0] is not None]
    # Policy refusals (userinfo, backslashes, no "//", % in hosts, ...) are the minority.
    assert len(signed) >= 0.6 * len(WPT_SUCCESSES), len(signed)


# --- differential against ada (the WHATWG parser in Node) -----------------------------------


def assert_agrees_with_whatwg(url: object) -> None:
    location, reason = outcome(url)
    if not isinstance(url, str):
        assert location is None
        return
    expected = whatwg_href(url)
    if location is None:
        if expected is not None:
            # ada accepts it: our refusal must be a documented policy, or a rule Node 20 follows.
            assert reason in POLICY_REASONS | NODE_RULES, (url, reason)
        return
    assert all(0x21 <= ord(c) <= 0x7E for c in location), location
    assert expected is not None, f"signed {url!r} as {location!r}, which the WHATWG parser refuses"
    assert whatwg_href(location) == expected, (url, location, expected)


@pytest.mark.parametrize(("label", "url", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_agrees_with_whatwg(label: str, url: str, expected: str) -> None:
    assert_agrees_with_whatwg(url)
    assert whatwg_href(expected) == whatwg_href(url), label


PIECES = [
    "http://",
    "https://",
    "HTTP://",
    "http:",
    "https:/",
    "//",
    "/",
    "\\",
    "?",
    "#",
    "@",
    ":",
    ":80",
    ":0",
    ":65536",
    "[",
    "]",
    "[::1]",
    "[1:2:3:4:5:6:7:8:9]",
    "[:::]",
    "[::ffff:1.2.3.4]",
    ".",
    "..",
    "%",
    "%2e",
    "%41",
    "%zz",
    "%00",
    "xn--",
    "xn--zz",
    "xn--n3h",
    "xn--bcher-kva",
    "XN--",
    "a",
    "b",
    "example",
    ".com",
    "0x7f",
    "1.2.3.4",
    "256",
    "09",
    "ü",
    "ß",
    "\u1e9e",
    "\u00ad",
    "\u200b",
    "\u2062",
    "\u206a",
    "\uffa0",
    "\u3002",
    "\uff0e",
    "\uff0f",
    "\uff05",
    "\u0301",
    "😀",
    "\u200d",
    "\u0627",
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x01",
    "\x1f",
    "\x7f",
    "\x85",
    "\ud800",
    "'",
    '"',
    "<",
    ">",
    "^",
    "|",
    "`",
    "{",
    "}",
]


def url_ish() -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(PIECES), st.text(max_size=3), st.characters(codec="utf-8"))
    body = st.lists(piece, max_size=12).map("".join)
    prefix = st.sampled_from(["https://", "http://", " https://", "HTTPS://", "\x00http://", "", "https://a"])
    return st.builds(lambda p, b: p + b, prefix, body)


@settings(max_examples=3000, deadline=None)
@given(url_ish())
def test_generated_strings_agree_with_whatwg(url: str) -> None:
    assert_agrees_with_whatwg(url)


# --- Node 20 ----------------------------------------------------------------------------------

_NODE_SCRIPT = r"""
const inputs = JSON.parse(require("fs").readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(inputs.map((s) => { try { return new URL(s).href; } catch (e) { return null; } })));
"""


def node_hrefs(inputs: list[str]) -> list[str | None]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not on PATH (make test installs it: DEBIAN_TOOLS node:nodejs)")
        pytest.skip("node is not on PATH")
    done = subprocess.run(
        [node, "-e", _NODE_SCRIPT], input=json.dumps(inputs), capture_output=True, text=True, timeout=120, check=True
    )
    answers: list[str | None] = json.loads(done.stdout)
    assert len(answers) == len(inputs)
    return answers


def generated_inputs(count: int) -> list[str]:
    rng = random.Random(8)  # fixed: the same batch every run
    made = []
    for _ in range(count):
        prefix = rng.choice(["https://", "http://", " https://", "https://a", "https://xn--"])
        made.append(prefix + "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 8))))
    return made


def host_table_probes() -> list[str]:
    return [f"https://a{chr(c)}b.com/" for start, end in NODE20_REFUSED_IN_HOST for c in sorted({start, end})]


def test_node_20_agrees() -> None:
    inputs = [url for _, url, _ in CORPUS]
    inputs += [value for _, value in REJECTED if isinstance(value, str)]
    inputs += [case["input"] for case in WPT]
    inputs += generated_inputs(3000) + host_table_probes()
    ours = [outcome(url) for url in inputs]
    locations = [location for location, _ in ours if location is not None]
    answers = node_hrefs(inputs + locations)
    from_node, of_location = answers[: len(inputs)], iter(answers[len(inputs) :])
    problems = []
    for url, (location, reason), href in zip(inputs, ours, from_node, strict=True):
        if location is None:
            # Node accepts it: then it must be our policy, or a host rule (NODE_RULES): U+1E9E, which
            # Node maps to "ss" and idna to "ß", and `xn--` labels that are not valid punycode, which
            # Node 20's ada 2.9 lets through in some spellings (xn--examplexn--) but the standard refuses.
            if href is not None and reason not in POLICY_REASONS | NODE_RULES:
                problems.append(f"{url!r}: refused ({reason}), Node reads it as {href!r}")
            continue
        node_reads_location = next(of_location)
        if href is None:
            problems.append(f"{url!r}: signed as {location!r}, Node refuses it")
        elif node_reads_location != href:
            problems.append(f"{url!r}: Node reads it as {href!r}, our Location {location!r} as {node_reads_location!r}")
    assert not problems, "\n".join(problems[:40])
