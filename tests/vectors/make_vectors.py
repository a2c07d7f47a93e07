"""Make tests/vectors/tokens.json and bad_tokens.json, the token test vectors of docs/tokens.md, with the Node
implementation written from the spec alone (tests/node/tokens.mjs: `mint` for version 2,
`mint_v1` for version 1). trackd's trackd_links.tokens is checked against the file, never used to make it.

    python tests/vectors/make_vectors.py            # (re)writes both files
    python tests/vectors/make_vectors.py --check    # exits 1 if they are not what this makes

Each vector: {"name", "version", "kind", "keys": ["kid:secret", ...] (the first mints, all
open), "fields": {...}, "token"}. `fields` always has all nine keys, as Node's `open` gives them
back: an open has link_index, url and link_name null, part "api" and honeypot false; a version
1 token has link_name and message_id null, part "api" and honeypot false.

The cases (CASES below), by name prefix `v{version}-{kind}-`:
- keys: a plain one; a 32-character kid (every kid character class); a non-ASCII secret; a
  secret holding ':' (the kid ends at the first ':'); a 16-character secret (the minimum); two
  keys (rotation: the first mints, the second is there to be skipped);
- ids: ASCII, Japanese, emoji (a ZWJ sequence), combining characters (NFD and NFC spellings of
  the same text, which must make different tokens: no normalization), 255-byte ids of 1-, 3- and
  4-byte characters;
- clicks: every part (api, html, text), honeypot, link names of 1, 8 and 64 bytes (ASCII and
  UTF-8), message ids (up to 255 bytes), a 2,048-character URL, IDNA hosts and percent-encoded
  paths, queries and fragments, an IPv6 host with a port, punctuation; link_index 0 and 65535;
- opens: with and without a message id;
- sent_at 0 and 2^32-1 in both versions and kinds; the largest token (every field at its limit).

Every URL is printable ASCII and already in the form trackd sends (the spec's `url`).

bad_tokens.json: tokens made WITH the key (Node's raw `seal` / `seal_v1`: any plaintext) that
break one rule of step 4 of "Opening a token" (or, for version 1, the same field rules: the
spec gives version 1's layout but not its opening rules, so version 2's are assumed). Each:
{"name", "version", "kind" (the path it is opened on), "keys", "token", "why"}; every one must
be refused. Valid vectors cannot test these rules: only a key holder can make such a token.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_TOKENS = HERE.parent / "node" / "tokens.mjs"
VECTORS = HERE / "tokens.json"
BAD_VECTORS = HERE / "bad_tokens.json"

Json = dict[str, Any]

K1 = "k1:trackd-test-vector-secret-1"
K32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-789:a 32-character kid, this is its secret"
K_UTF8 = "2026-05.rotated:pässwörd-sécret-ünïcode-🔑"
K_COLON = "colon:secret:with:colons:inside"
K_MIN = "x:0123456789abcdef"
K_OLD = "k0:the-previous-key-still-opens"

SENT_AT = 1_767_225_600  # 2026-01-01T00:00:00Z
MAX_U32 = 2**32 - 1
URL = "https://example.com/spring?utm_source=email"
URL_2048 = "https://example.com/" + "/".join(["segment-0123456789"] * 80)
URL_2048 += "?q=" + "x" * (2048 - len(URL_2048) - 3)
assert len(URL_2048) == 2048

JAPANESE = ("春のセール2026", "山田太郎@例え.jp")
EMOJI = ("🎉 launch 🚀", "👩‍👩‍👧‍👦 family")
NFD = ("cafe\u0301-cre\u0300me-bru\u0302le\u0301e", "Zoe\u0308 Ams\u030ae")
NFC = ("caf\u00e9-cr\u00e8me-br\u00fbl\u00e9e", "Zo\u00eb Ams\u00e5e")
IDS_255_1 = ("c" * 255, "r" * 255)
IDS_255_3 = ("あ" * 85, "キャンペーン" * 14 + "ン")  # 85 characters of 3 bytes each
IDS_255_4 = ("𝄞" * 63 + "abc", "🙂" * 63 + "xyz")  # 63 * 4 + 3 bytes
for _pair in (IDS_255_1, IDS_255_3, IDS_255_4):
    assert [len(s.encode()) for s in _pair] == [255, 255], _pair
NAME_64 = "n" * 64
NAME_64_UTF8 = "ボタン" * 7 + "x"  # 21 * 3 + 1 bytes
MESSAGE = "<20260101.5f3a9c@mail.example.com>"
MESSAGE_255 = "<" + "m" * 241 + "@example.com>"
assert len(NAME_64_UTF8.encode()) == 64 and len(MESSAGE_255.encode()) == 255

OPEN_ONLY = {"link_index": None, "url": None, "link_name": None, "part": None, "honeypot": False}


def fields(kind: str, **given: Any) -> Json:
    out: Json = {
        "sent_at": SENT_AT,
        "link_index": 0,
        "campaign_id": "spring-sale",
        "recipient_id": "r-000123",
        "url": URL,
        "link_name": None,
        "message_id": None,
        "part": "api",
        "honeypot": False,
    }
    if kind == "open":
        out.update(OPEN_ONLY)
    for name, value in given.items():
        assert name in out, name
        out[name] = value
    return out


def ids(pair: tuple[str, str]) -> Json:
    return {"campaign_id": pair[0], "recipient_id": pair[1]}


def case(name: str, version: int, kind: str, keys: list[str], **given: Any) -> Json:
    return {"name": name, "version": version, "kind": kind, "keys": keys, "fields": fields(kind, **given)}


def both_kinds(version: int, stem: str, keys: list[str], **given: Any) -> list[Json]:
    return [case(f"v{version}-{kind}-{stem}", version, kind, keys, **given) for kind in ("open", "click")]


def v2_cases() -> list[Json]:
    out: list[Json] = []
    out += both_kinds(2, "basic", [K1])
    out += both_kinds(2, "kid-32", [K32])
    out += both_kinds(2, "secret-utf8", [K_UTF8])
    out += both_kinds(2, "secret-with-colons", [K_COLON])
    out += both_kinds(2, "secret-16", [K_MIN])
    out += both_kinds(2, "rotation", [K1, K_OLD, K32])
    out += both_kinds(2, "sent-at-0", [K1], sent_at=0)
    out += both_kinds(2, "sent-at-max", [K1], sent_at=MAX_U32)
    out += both_kinds(2, "japanese", [K1], **ids(JAPANESE))
    out += both_kinds(2, "emoji", [K1], **ids(EMOJI))
    out += both_kinds(2, "combining-nfd", [K1], **ids(NFD))
    out += both_kinds(2, "combining-nfc", [K1], **ids(NFC))
    out += both_kinds(2, "ids-255-ascii", [K1], **ids(IDS_255_1))
    out += both_kinds(2, "ids-255-3-byte", [K1], **ids(IDS_255_3))
    out += both_kinds(2, "ids-255-4-byte", [K1], **ids(IDS_255_4))
    out += both_kinds(2, "ids-1-byte", [K1], campaign_id="c", recipient_id="r")
    out += both_kinds(2, "message-id", [K1], message_id=MESSAGE)
    out += both_kinds(2, "message-id-1", [K1], message_id="m")
    out += both_kinds(2, "message-id-255", [K1], message_id=MESSAGE_255)
    out += both_kinds(2, "message-id-utf8", [K_UTF8], message_id="<メール-42@例え.jp>", **ids(JAPANESE))
    click: list[tuple[str, Json]] = [
        ("part-html", {"part": "html"}),
        ("part-text", {"part": "text"}),
        ("honeypot", {"honeypot": True}),
        ("honeypot-html", {"honeypot": True, "part": "html"}),
        ("link-name", {"link_name": "hero-cta"}),
        ("link-name-1", {"link_name": "a"}),
        ("link-name-64", {"link_name": NAME_64}),
        ("link-name-64-utf8", {"link_name": NAME_64_UTF8}),
        ("link-name-and-message-id", {"link_name": "footer/unsubscribe", "message_id": MESSAGE, "part": "text"}),
        ("link-index-65535", {"link_index": 65535}),
        ("link-index-1", {"link_index": 1}),
        ("url-2048", {"url": URL_2048}),
        ("url-http", {"url": "http://example.com/"}),
        ("url-idna", {"url": "https://xn--mnchen-3ya.de/stra%C3%9Fe?q=%E2%9C%93#%C3%BC"}),
        ("url-idna-japanese", {"url": "https://xn--r8jz45g.xn--zckzah/%E3%83%86%E3%82%B9%E3%83%88"}),
        ("url-percent-encoded", {"url": "https://example.com/a%20b/%E6%97%A5%E6%9C%AC?x=%F0%9F%8E%89&y=1"}),
        ("url-ipv6-port", {"url": "https://[2001:db8::1]:8443/p?q=1"}),
        ("url-punctuation", {"url": "https://example.com/!$&'()*+,;=:@-._~?a=[x]&b=|^%60{}"}),
        (
            "everything",
            {"link_index": 65535, "sent_at": MAX_U32, "part": "text", "honeypot": True, "link_name": "hero-cta"}
            | {"message_id": MESSAGE} | ids(EMOJI),
        ),
    ]  # fmt: skip
    out += [case(f"v2-click-{stem}", 2, "click", [K1], **given) for stem, given in click]
    out.append(
        case("v2-open-largest", 2, "open", [K32], message_id=MESSAGE_255, sent_at=MAX_U32, **ids(IDS_255_4)),
    )
    out.append(
        case(
            "v2-click-largest",
            2,
            "click",
            [K32],
            **ids(IDS_255_4),
            sent_at=MAX_U32,
            link_index=65535,
            link_name=NAME_64_UTF8,
            message_id=MESSAGE_255,
            url=URL_2048,
            part="html",
            honeypot=True,
        ),
    )
    return out


def v1_cases() -> list[Json]:
    out: list[Json] = []
    out += both_kinds(1, "basic", [K1])
    out += both_kinds(1, "kid-32", [K32])
    out += both_kinds(1, "secret-utf8", [K_UTF8])
    out += both_kinds(1, "rotation", [K_OLD, K1])
    out += both_kinds(1, "sent-at-0", [K1], sent_at=0)
    out += both_kinds(1, "sent-at-max", [K1], sent_at=MAX_U32)
    out += both_kinds(1, "japanese", [K1], **ids(JAPANESE))
    out += both_kinds(1, "emoji", [K1], **ids(EMOJI))
    out += both_kinds(1, "combining-nfd", [K1], **ids(NFD))
    out += both_kinds(1, "ids-255-3-byte", [K1], **ids(IDS_255_3))
    out += both_kinds(1, "ids-255-4-byte", [K_MIN], **ids(IDS_255_4))
    clicks: list[tuple[str, Json]] = [
        ("link-index-65535", {"link_index": 65535}),
        ("url-2048", {"url": URL_2048}),
        ("url-idna", {"url": "https://xn--mnchen-3ya.de/stra%C3%9Fe?q=%E2%9C%93#%C3%BC"}),
        ("url-percent-encoded", {"url": "https://example.com/a%20b/%E6%97%A5%E6%9C%AC?x=%F0%9F%8E%89&y=1"}),
    ]
    out += [case(f"v1-click-{stem}", 1, "click", [K1], **given) for stem, given in clicks]
    return out


CASES: list[Json] = v2_cases() + v1_cases()


def _click(flags: int = 0, ids: bytes = b"\x01c\x01r", url: bytes = b"https://example.com/") -> bytes:
    return struct.pack(">IHB", SENT_AT, 7, flags) + ids + url


def _open(flags: int = 0, ids: bytes = b"\x01c\x01r") -> bytes:
    return struct.pack(">IB", SENT_AT, flags) + ids


def _v1(kind: int, rest: bytes, kid: bytes = b"k1") -> bytes:
    return bytes((0x01, kind, len(kid))) + kid + struct.pack(">I", SENT_AT) + rest


# (name, kind, plaintext, why): version 2, sealed with K1.
BAD_V2: list[tuple[str, str, bytes, str]] = [
    ("reserved-bit-5", "click", _click(0x20), "flag bit 5 is reserved"),
    ("reserved-bit-6", "click", _click(0x40), "flag bit 6 is reserved"),
    ("reserved-bit-7", "click", _click(0x80), "flag bit 7 is reserved"),
    ("reserved-bit-5-open", "open", _open(0x20), "flag bit 5 is reserved"),
    ("part-3", "click", _click(3), "part 3 is invalid"),
    ("part-in-open", "open", _open(1), "an open's part bits are 0"),
    ("part-3-in-open", "open", _open(3), "an open's part bits are 0"),
    ("honeypot-in-open", "open", _open(4), "an open's honeypot bit is 0"),
    ("link-name-in-open", "open", _open(8, b"\x01c\x01r\x01n"), "an open's link-name bit is 0"),
    ("empty", "open", b"", "no sent_at"),
    ("sent-at-short", "open", b"\x00\x00\x00", "sent_at runs past the end"),
    ("link-index-short", "click", struct.pack(">IB", SENT_AT, 0), "link_index runs past the end"),
    ("no-flags", "open", struct.pack(">I", SENT_AT), "no flags byte"),
    ("no-campaign", "open", struct.pack(">IB", SENT_AT, 0), "no campaign_len"),
    ("campaign-length-0", "click", _click(ids=b"\x00\x01r"), "campaign_len 0"),
    ("campaign-past-end", "open", _open(ids=b"\x05c"), "campaign runs past the end"),
    ("recipient-length-0", "open", _open(ids=b"\x01c\x00"), "recipient_len 0"),
    ("recipient-past-end", "open", _open(ids=b"\x01c\x05r"), "recipient runs past the end"),
    ("no-recipient", "open", _open(ids=b"\x01c"), "no recipient_len"),
    ("link-name-length-0", "click", _click(8, b"\x01c\x01r\x00"), "name_len 0"),
    ("link-name-65", "click", _click(8, b"\x01c\x01r\x41" + b"n" * 65), "name_len 65 is over 64"),
    ("link-name-past-end", "click", _click(8, b"\x01c\x01r\xff", b"https://e.com/"), "link name runs past the end"),
    ("message-length-0", "open", _open(16, b"\x01c\x01r\x00"), "message_len 0"),
    ("message-missing", "open", _open(16), "flag bit 4 but no message id"),
    ("message-past-end", "open", _open(16, b"\x01c\x01r\x09m"), "message id runs past the end"),
    ("left-over-open", "open", _open(ids=b"\x01c\x01rx"), "bytes left over in an open"),
    ("left-over-open-message", "open", _open(16, b"\x01c\x01r\x01mx"), "bytes left over in an open"),
    ("no-url", "click", _click(url=b""), "a click's url is at least one byte"),
    ("url-space", "click", _click(url=b"https://e.com/a b"), "url outside 0x21 to 0x7e"),
    ("url-tab", "click", _click(url=b"https://e.com/\t"), "url outside 0x21 to 0x7e"),
    ("url-nul", "click", _click(url=b"https://e.com/\x00"), "url outside 0x21 to 0x7e"),
    ("url-del", "click", _click(url=b"https://e.com/\x7f"), "url outside 0x21 to 0x7e"),
    ("url-utf8", "click", _click(url="https://e.com/ä".encode()), "url outside 0x21 to 0x7e"),
    ("url-latin1", "click", _click(url=b"https://e.com/\xe4"), "url outside 0x21 to 0x7e"),
    ("campaign-not-utf8", "click", _click(ids=b"\x01\xff\x01r"), "campaign is not UTF-8"),
    ("recipient-overlong-utf8", "open", _open(ids=b"\x01c\x02\xc0\xaf"), "recipient is not UTF-8 (overlong)"),
    ("recipient-surrogate", "open", _open(ids=b"\x01c\x03\xed\xa0\x80"), "recipient is not UTF-8 (a surrogate)"),
    ("campaign-truncated-utf8", "open", _open(ids=b"\x02\xe3\x81\x01r"), "campaign is not UTF-8 (cut)"),
    ("campaign-nul", "click", _click(ids=b"\x01\x00\x01r"), "campaign holds NUL"),
    ("recipient-nul", "open", _open(ids=b"\x01c\x02r\x00"), "recipient holds NUL"),
    ("link-name-not-utf8", "click", _click(8, b"\x01c\x01r\x01\x80"), "link name is not UTF-8"),
    ("message-nul", "open", _open(16, b"\x01c\x01r\x01\x00"), "message id holds NUL"),
]  # fmt: skip

# (name, path kind, payload, why): version 1, tagged with K1's secret (version 2's field rules assumed).
BAD_V1: list[tuple[str, str, bytes, str]] = [
    ("kind-2", "click", _v1(2, struct.pack(">H", 7) + b"\x01c\x01rhttps://example.com/"), "kind 2"),
    ("unknown-kid", "open", _v1(0, b"\x01c\x01r", b"k9"), "kid k9 names no key (the tag is K1's)"),
    ("campaign-length-0", "open", _v1(0, b"\x00\x01r"), "campaign_len 0"),
    ("recipient-past-end", "open", _v1(0, b"\x01c\x05r"), "recipient runs past the end"),
    ("no-recipient", "open", _v1(0, b"\x01c"), "no recipient_len"),
    ("left-over-open", "open", _v1(0, b"\x01c\x01rx"), "bytes left over in an open"),
    ("link-index-short", "click", _v1(1, b"\x00"), "link_index runs past the end"),
    ("no-url", "click", _v1(1, struct.pack(">H", 7) + b"\x01c\x01r"), "a click's url is at least one byte"),
    ("url-space", "click", _v1(1, struct.pack(">H", 7) + b"\x01c\x01rhttps://e.com/a b"), "url outside 0x21 to 0x7e"),
    ("url-utf8", "click", _v1(1, b"\x00\x07\x01c\x01r" + "https://e.com/ä".encode()), "url outside 0x21 to 0x7e"),
    ("campaign-not-utf8", "open", _v1(0, b"\x01\xff\x01r"), "campaign is not UTF-8"),
    ("campaign-nul", "open", _v1(0, b"\x01\x00\x01r"), "campaign holds NUL"),
]  # fmt: skip


def build_bad(run: Callable[[list[Json]], list[Json]] | None = None) -> list[Json]:
    """The bad tokens: sealed by Node with K1, each checked to be refused by Node."""
    run = run or node_runner
    cases = [
        (f"v2-{name}", 2, kind, {"op": "seal", "key": K1, "kind": kind, "plaintext": p.hex()}, why)
        for name, kind, p, why in BAD_V2
    ]
    cases += [
        (f"v1-{name}", 1, kind, {"op": "seal_v1", "key": K1, "payload": p.hex()}, why) for name, kind, p, why in BAD_V1
    ]
    sealed = run([request for _, _, _, request, _ in cases])
    bad = [
        {"name": name, "version": version, "kind": kind, "keys": [K1, K_OLD], "token": answer["token"], "why": why}
        for (name, version, kind, _, why), answer in zip(cases, sealed, strict=True)
    ]
    opened = run([{"op": "open", "keys": b["keys"], "kind": b["kind"], "token": b["token"]} for b in bad])
    for b, answer in zip(bad, opened, strict=True):
        assert answer.keys() == {"error"}, (b["name"], answer)
    return bad


def node_runner(requests: list[Json]) -> list[Json]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH")
    done = subprocess.run(
        [node, str(NODE_TOKENS)], input=json.dumps(requests), capture_output=True, text=True, check=True, timeout=120
    )
    results: list[Json] = json.loads(done.stdout)
    return results


def build(run: Callable[[list[Json]], list[Json]] = node_runner) -> list[Json]:
    """The vectors: CASES minted by Node, each checked to open (with all its keys) to its fields."""
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names), "vector names repeat"

    def to_mint(c: Json) -> Json:
        f = c["fields"]
        if c["kind"] == "open":
            f = {k: v for k, v in f.items() if k not in OPEN_ONLY}
        if c["version"] == 1:
            f = {k: v for k, v in f.items() if k not in ("link_name", "message_id", "part", "honeypot")}
        return {"op": "mint" if c["version"] == 2 else "mint_v1", "key": c["keys"][0], "kind": c["kind"], "fields": f}

    minted = run([to_mint(c) for c in CASES])
    vectors = []
    for c, answer in zip(CASES, minted, strict=True):
        assert "token" in answer, (c["name"], answer)
        vectors.append({**c, "token": answer["token"]})
    opened = run([{"op": "open", "keys": v["keys"], "kind": v["kind"], "token": v["token"]} for v in vectors])
    for v, answer in zip(vectors, opened, strict=True):
        want = {
            "version": v["version"],
            "kind": v["kind"],
            "kid": v["keys"][0].partition(":")[0],
            "fields": v["fields"],
        }
        assert answer == want, (v["name"], answer)
    return vectors


def render(vectors: list[Json]) -> str:
    return "[\n" + ",\n".join(json.dumps(v, ensure_ascii=False) for v in vectors) + "\n]\n"


def main(argv: list[str]) -> int:
    made = {VECTORS: build(), BAD_VECTORS: build_bad()}
    outputs = {path: render(vectors) for path, vectors in made.items()}
    if "--check" in argv:
        stale = [path for path, text in outputs.items() if path.read_text("utf-8") != text]
        for path in stale:
            print(f"{path} is not what {Path(__file__).name} makes: run it", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text, "utf-8")
        print(f"wrote {len(made[path])} vectors to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
