"""Make tests/vectors/tokens.json, the token test vectors of docs/tokens.md, with the Node
implementation written from the spec alone (tests/node/tokens.mjs: `mint` for version 2,
`mint_v1` for version 1). trackd's app.tokens is checked against the file, never used to make it.

    python tests/vectors/make_vectors.py            # (re)writes tests/vectors/tokens.json
    python tests/vectors/make_vectors.py --check    # exits 1 if the file is not what this makes

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
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_TOKENS = HERE.parent / "node" / "tokens.mjs"
VECTORS = HERE / "tokens.json"

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

OPEN_ONLY = {"link_index": None, "url": None, "link_name": None, "part": "api", "honeypot": False}


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
    text = render(build())
    if "--check" in argv:
        if VECTORS.read_text("utf-8") != text:
            print(f"{VECTORS} is not what {Path(__file__).name} makes: run it", file=sys.stderr)
            return 1
        return 0
    VECTORS.write_text(text, "utf-8")
    print(f"wrote {len(CASES)} vectors to {VECTORS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
