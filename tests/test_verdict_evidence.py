"""What the hot path keeps of each request for its verdict (app.verdicts.evidence): the evidence
bits, the address tag, the network list bits and the real-time reasons, as the row says them."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from app.copyrows import decode_row
from app.hotpath import HotPath
from app.settings import IPMode, Settings
from app.verdicts import evidence
from app.verdicts.networks import Networks
from tests.tools.eval_truth import RowsJournal
from tests.tools.eval_truth import hot_path as eval_hot_path
from trackd_links.tokens import KeyRing

RING = KeyRing.from_specs(["ev1:evidence-test-secret-0123456789"])
CHROME = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"
)
EOP = "40.107.218.12"  # gophish#973: Safe Links detonation from Exchange Online Protection


def hot_path(settings: Settings | None = None, networks: Networks | None = None) -> tuple[HotPath, RowsJournal]:
    return eval_hot_path(settings or Settings(), RING, networks, tag_key=b"k")


def record(hot: HotPath, rows: RowsJournal, kind: str, headers: list[tuple[bytes, bytes]], peer: str = "198.51.100.7",
           *, head: bool = False, honeypot: bool = False) -> dict[str, Any]:  # fmt: skip
    if kind == "open":
        token = RING.sign_open("c", "r")
    else:
        token = RING.sign_click("c", "r", 0, "https://shop.example/", honeypot=honeypot)
    answer = hot.answer(kind, head, token, headers, peer)
    assert answer.outcome == "recorded"
    return decode_row(rows.rows[-1])


BROWSER = [
    (b"user-agent", CHROME),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-site", b"none"),
]


def test_a_browser_click_keeps_its_headers_as_bits_and_is_a_person() -> None:
    hot, rows = hot_path()
    row = record(hot, rows, "click", BROWSER)
    assert row["evidence"] == evidence.ACCEPT_LANGUAGE | evidence.SEC_FETCH
    assert row["is_machine"] is False and row["machine_reason"] is None
    assert row["user_agent"] == CHROME.decode()


@pytest.mark.parametrize(
    ("name", "value", "prefetch"),
    [
        (b"sec-purpose", b"prefetch;prerender", True),
        (b"purpose", b"prefetch", True),
        (b"x-purpose", b"preview", True),
        (b"x-moz", b"prefetch", True),
        (b"purpose", b"navigate", False),
    ],
)
def test_a_prefetch_header_is_kept_and_judged(name: bytes, value: bytes, prefetch: bool) -> None:
    hot, rows = hot_path()
    row = record(hot, rows, "click", [*BROWSER, (name, value)])
    assert bool(row["evidence"] & evidence.PREFETCH) is prefetch
    assert row["is_machine"] is prefetch
    assert (row["machine_reason"] == "prefetch") is prefetch


def test_head_is_kept_and_several_reasons_are_all_written() -> None:
    hot, rows = hot_path()
    row = record(hot, rows, "click", [(b"sec-purpose", b"prefetch")], head=True)
    assert row["evidence"] == evidence.HEAD | evidence.PREFETCH
    assert row["machine_reason"] == "head,prefetch,no_user_agent"


def test_a_honeypot_click_keeps_its_bit_and_reason() -> None:
    hot, rows = hot_path()
    row = record(hot, rows, "click", BROWSER, honeypot=True)
    assert row["evidence"] & evidence.HONEYPOT
    assert row["is_machine"] is True and row["machine_reason"] == "honeypot"
    # The same user agent on an ordinary link afterwards is a person's (the cache keys on the bits).
    assert record(hot, rows, "click", BROWSER)["is_machine"] is False


def test_a_certain_network_judges_both_kinds_and_a_clicks_only_entry_only_clicks(tmp_path: Path) -> None:
    extra = tmp_path / "networks.csv"
    extra.write_text(
        "network,scope,certainty,label,source,date\n"
        "192.0.2.0/24,clicks,certain,test-clicks,https://example.com/ranges,2026-12-01\n"
        "198.18.0.0/15,both,probable,test-probable,https://example.com/ranges,2026-12-01\n",
        encoding="utf-8",
    )
    hot, rows = hot_path(networks=Networks.load(extra))
    for kind in ("open", "click"):
        row = record(hot, rows, kind, BROWSER, peer=EOP)
        assert row["evidence"] & evidence.NETWORK_CERTAIN
        assert row["machine_reason"] == "scanner_network"
    assert record(hot, rows, "click", BROWSER, peer="192.0.2.9")["machine_reason"] == "scanner_network"
    row = record(hot, rows, "open", BROWSER, peer="192.0.2.9")
    assert not row["evidence"] & evidence.NETWORK_CERTAIN and row["is_machine"] is False
    # A probable entry is evidence for the deferred rules, never a verdict on its own.
    row = record(hot, rows, "click", BROWSER, peer="198.18.4.4")
    assert row["evidence"] & evidence.NETWORK_PROBABLE and row["is_machine"] is False


def test_the_network_is_judged_on_the_full_address_before_it_is_anonymised() -> None:
    hot, rows = hot_path(Settings(ip_mode=IPMode.anonymize))
    row = record(hot, rows, "click", BROWSER, peer=EOP)
    assert row["ip"] == "40.107.218.0/24"
    assert row["machine_reason"] == "scanner_network"


def test_the_network_is_judged_on_the_address_behind_our_proxies() -> None:
    settings = Settings(trusted_proxies=["10.0.0.0/8"])  # type: ignore[arg-type]
    hot, rows = hot_path(settings)
    row = record(hot, rows, "click", [*BROWSER, (b"x-forwarded-for", f"{EOP}, 10.0.0.2".encode())], peer="10.0.0.1")
    assert row["machine_reason"] == "scanner_network"
    # Without trusting the peer, X-Forwarded-For is not believed.
    hot, rows = hot_path()
    row = record(hot, rows, "click", [*BROWSER, (b"x-forwarded-for", EOP.encode())], peer="198.51.100.7")
    assert row["is_machine"] is False


def test_the_address_tag_tells_addresses_apart_without_keeping_them() -> None:
    hot, rows = hot_path(Settings(ip_mode=IPMode.drop))
    a1 = record(hot, rows, "click", BROWSER, peer="198.51.100.7")
    a2 = record(hot, rows, "click", BROWSER, peer="198.51.100.7")
    b = record(hot, rows, "click", BROWSER, peer="198.51.100.8")  # same /24, another address
    mapped = record(hot, rows, "click", BROWSER, peer="::ffff:198.51.100.7")
    assert a1["ip"] is None  # TRACKD_IP_MODE=drop: no address at all
    assert a1["addr_tag"] == a2["addr_tag"] == mapped["addr_tag"]
    assert a1["addr_tag"] != b["addr_tag"]
    assert -32768 <= a1["addr_tag"] <= 32767


V4 = ipaddress.IPv4Network("198.51.100.0/24")


def test_the_tag_and_the_stored_network_never_name_the_address_even_with_the_key() -> None:
    """With the default TRACKD_IP_MODE the row keeps the /24: the tag then has 16 values, sixteen
    hosts each, so the key holder who tries all 256 addresses of the /24 is left with sixteen (as
    many as a /28); and neighbouring addresses (a test's .1, .2, .3; a scanner's pool) always differ."""
    tags = evidence.AddressTags(b"k")
    by_tag: dict[int, int] = {}
    for address in V4:
        value = tags.value(address, "198.51.100.0/24")
        by_tag[value] = by_tag.get(value, 0) + 1
    assert sorted(set(by_tag.values())) == [16] and len(by_tag) == 16
    assert len({tags.value(a, "198.51.100.0/24") for a in list(V4)[1:17]}) == 16
    # What the hot path keeps: that short tag next to a /24; 8 bits when nothing is kept.
    hot, rows = hot_path(Settings(ip_mode=IPMode.anonymize))
    assert 0 <= record(hot, rows, "click", BROWSER, peer="198.51.100.7")["addr_tag"] <= 15
    hot, rows = hot_path(Settings(ip_mode=IPMode.drop))
    kept = {record(hot, rows, "click", BROWSER, peer=f"203.0.113.{i}")["addr_tag"] for i in range(1, 200)}
    assert all(0 <= t <= 255 for t in kept) and len(kept) > 16


def test_the_tag_is_keyed() -> None:
    """Another deployment's key gives other tags: without the key a tag says nothing of the address."""
    mine, other = evidence.AddressTags(b"k"), evidence.AddressTags(b"other")
    addresses = [ipaddress.ip_address(f"203.0.113.{i}") for i in range(64)]
    assert [mine.value(a, None) for a in addresses] != [other.value(a, None) for a in addresses]
    assert [mine.value(a, "203.0.113.0/24") for a in addresses] != [other.value(a, "203.0.113.0/24") for a in addresses]


def test_no_address_no_tag() -> None:
    hot, rows = hot_path()
    row = record(hot, rows, "click", BROWSER, peer="not an address")
    assert row["ip"] is None and row["addr_tag"] is None


@pytest.mark.parametrize(
    ("kind", "ua", "reason"),
    [
        ("open", b"Mozilla/5.0", "apple_mpp"),
        ("open", None, "no_user_agent"),
        ("open", b"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", None),
        ("open", b"YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", None),
        ("click", b"Microsoft Office Existence Discovery", "office_discovery"),
        ("click", b"Barracuda Sentinel (EE)", "scanner_user_agent"),
    ],
)
def test_user_agent_rules_reach_the_row(kind: str, ua: bytes | None, reason: str | None) -> None:
    hot, rows = hot_path()
    headers = [(b"user-agent", ua)] if ua is not None else []
    row = record(hot, rows, kind, headers)
    assert row["machine_reason"] == reason
    assert row["is_machine"] is (reason is not None)


def test_every_reason_code_is_explained_documented_and_known_to_the_deferred_rules() -> None:
    """The codes live in three places: the Python rules (and `trackd explain`'s words), migration
    011's list of deferred codes (which decides what a burst may chain), and docs/engagement.md's
    table. They must say the same."""
    import re

    from app.verdicts import agents, rules
    from tests.support import ROOT

    at_receipt = agents.REASON_CODES | {rules.HEAD, rules.PREFETCH, rules.SCANNER_NETWORK, rules.HONEYPOT}
    assert not at_receipt & set(rules.DEFERRED)
    assert at_receipt | set(rules.DEFERRED) <= set(rules.REASONS)
    sql = (ROOT / "app" / "migrations" / "011_deferred_verdicts.sql").read_text(encoding="utf-8")
    listed = re.search(r"old_codes <@ ARRAY\[([^\]]*)\]", sql)
    assert listed is not None
    assert {c.strip().strip("'") for c in listed.group(1).split(",")} == set(rules.DEFERRED)
    table = (ROOT / "docs" / "engagement.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \| (?:receipt|deferred) \|", table, re.M))
    assert documented == at_receipt | set(rules.DEFERRED)
