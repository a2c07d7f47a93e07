"""tests/node/tokens.mjs, the second implementation of docs/tokens.md (Node 20's crypto only),
checked on its own: RFC 4493 / RFC 5297 examples, its AES-SIV and HKDF against `cryptography`
in both directions, its layout against the spec's table rebuilt here, and mint/open round trips.

Every check runs Node once for all its cases (hypothesis makes the cases first, with a fixed
seed). The vectors (tests/vectors/tokens.json) and trackd's own trackd_links.tokens are checked against
this implementation in tests/test_tokens_vectors.py. Needs no server.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, seed, settings
from hypothesis import strategies as st

NODE_TOKENS = Path(__file__).parent / "node" / "tokens.mjs"
SEED = 12  # issue #12: every case below is the same on every run

Json = dict[str, Any]
T = TypeVar("T")


def node_binary() -> str:
    """`node`, or a skip; under CI a missing node fails (tests/test_urls_whatwg.py's rule)."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not on PATH (make test installs it: DEBIAN_TOOLS node:nodejs)")
        pytest.skip("node is not on PATH")
    return node


def run_node(requests: list[Json]) -> list[Json]:
    """All requests through one `node tests/node/tokens.mjs` process (its header documents them)."""
    done = subprocess.run(
        [node_binary(), str(NODE_TOKENS)],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[Json] = json.loads(done.stdout)
    assert len(results) == len(requests)
    return results


def cases(strategy: st.SearchStrategy[T], count: int = 200) -> list[T]:
    """`count` examples of `strategy`, the same ones every run (hypothesis, fixed seed), to send to
    Node in one batch."""
    made: list[T] = []

    @seed(SEED)
    @settings(max_examples=count, database=None, deadline=None)
    @given(strategy)
    def collect(value: T) -> None:
        made.append(value)

    collect()
    return made


def b64decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


# --- RFC examples -------------------------------------------------------------------------------


def test_node_self_test() -> None:
    done = subprocess.run(
        [node_binary(), str(NODE_TOKENS), "--self-test"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rfc_4493_examples_agree_with_cryptography() -> None:
    """The constants the self-test holds are RFC 4493's (cryptography's CMAC computes them too)."""
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.cmac import CMAC

    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    message = bytes.fromhex(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
    )
    requests: list[Json] = [{"op": "cmac", "key": key.hex(), "message": message[:n].hex()} for n in (0, 16, 40, 64)]
    for answer, n in zip(run_node(requests), (0, 16, 40, 64), strict=True):
        mac = CMAC(algorithms.AES(key))
        mac.update(message[:n])
        assert answer == {"mac": mac.finalize().hex()}, n


# --- AES-SIV against cryptography's AESSIV --------------------------------------------------------

SIV_CASE = st.tuples(
    st.sampled_from([32, 48, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.lists(st.binary(max_size=70), max_size=4),
    st.binary(max_size=300),
)


def test_siv_agrees_with_cryptography_both_ways() -> None:
    """Node's AES-SIV (any key size, any number of AD components, any plaintext length, block
    boundaries included) encrypts as `cryptography` does, opens what `cryptography` sealed, and
    refuses a changed SIV or ciphertext, as `cryptography` does."""
    made = cases(SIV_CASE)
    made += [(bytes(range(n)), ads, bytes(m)) for n in (32, 48, 64) for m in (0, 15, 16, 17, 32) for ads in ([], [b""])]
    sealed = [AESSIV(key).encrypt(plaintext, ads) for key, ads, plaintext in made]
    forged = [bytes((s[0] ^ 0x01,)) + s[1:] if i % 2 else s[:-1] + bytes((s[-1] ^ 0x80,)) for i, s in enumerate(sealed)]
    requests: list[Json] = []
    for (key, ads, plaintext), ours, bad in zip(made, sealed, forged, strict=True):
        ad = [a.hex() for a in ads]
        requests.append({"op": "siv_encrypt", "key": key.hex(), "ad": ad, "plaintext": plaintext.hex()})
        requests.append({"op": "siv_decrypt", "key": key.hex(), "ad": ad, "ciphertext": ours.hex()})
        requests.append({"op": "siv_decrypt", "key": key.hex(), "ad": ad, "ciphertext": bad.hex()})
    answers = iter(run_node(requests))
    for (key, ads, plaintext), ours in zip(made, sealed, strict=True):
        encrypted, decrypted, refused = next(answers), next(answers), next(answers)
        assert encrypted == {"output": ours.hex()}, (key.hex(), ads, plaintext.hex())
        assert AESSIV(key).decrypt(bytes.fromhex(encrypted["output"]), ads) == plaintext
        assert decrypted == {"plaintext": plaintext.hex()}
        assert refused == {"error": "SIV does not match"}


# --- HKDF against cryptography's HKDF -------------------------------------------------------------

SECRET = st.text(st.characters(codec="utf-8"), min_size=16, max_size=60)


def hkdf_siv_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"trackd token v2 AES-SIV")
    return hkdf.derive(secret.encode())


def test_hkdf_agrees_with_cryptography() -> None:
    secrets = [*cases(SECRET), "0123456789abcdef", "pässwörd-sécret-ünïcode", "🔑" * 16]
    answers = run_node([{"op": "derive", "secret": s} for s in secrets])
    for secret, answer in zip(secrets, answers, strict=True):
        assert answer == {"key": hkdf_siv_key(secret).hex()}, secret


# --- mint / open round trips ----------------------------------------------------------------------

PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def utf8_text(max_bytes: int, max_chars: int = 80) -> st.SearchStrategy[str]:
    """1 to max_bytes UTF-8 bytes, no NUL, no surrogates; long ASCII ones too."""
    chars = st.characters(codec="utf-8", exclude_characters="\0")
    return st.one_of(
        st.text(chars, min_size=1, max_size=max_chars).filter(lambda s: len(s.encode()) <= max_bytes),
        st.integers(1, max_bytes).map(lambda n: "x" * n),
    )


KID = st.from_regex(r"\A[A-Za-z0-9_.-]{1,32}\Z")
URL = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}/{rest}"[:2048],
    st.sampled_from(["http", "https"]),
    st.from_regex(r"\A[a-z0-9-]{1,20}(\.[a-z]{2,6}){1,2}\Z"),
    st.one_of(st.text(PRINTABLE_ASCII, max_size=100), st.integers(0, 2100).map(lambda n: "p" * n)),
)
CLICK = st.fixed_dictionaries(
    {
        "sent_at": st.integers(0, 2**32 - 1),
        "link_index": st.integers(0, 65535),
        "campaign_id": utf8_text(255),
        "recipient_id": utf8_text(255),
        "url": URL,
        "link_name": st.none() | utf8_text(64, 30),
        "message_id": st.none() | utf8_text(255),
        "part": st.sampled_from(["api", "html", "text"]),
        "honeypot": st.booleans(),
    }
)
OPEN_FIELDS = {"link_index": None, "url": None, "link_name": None, "part": None, "honeypot": False}
FIELDS = st.sampled_from(["open", "click"]).flatmap(
    lambda kind: st.tuples(st.just(kind), CLICK.map(lambda f: {**f, **OPEN_FIELDS} if kind == "open" else f))
)
ROUND_TRIP = st.tuples(KID, SECRET, KID, FIELDS).filter(lambda c: c[0] != c[2])


def spec_plaintext(kind: str, f: Json) -> bytes:
    """docs/tokens.md's plaintext table, rebuilt here to check Node's layout byte for byte."""
    flags = 0
    out = struct.pack(">I", f["sent_at"])
    if kind == "click":
        out += struct.pack(">H", f["link_index"])
        flags = ["api", "html", "text"].index(f["part"]) | (4 if f["honeypot"] else 0)
        flags |= 8 if f["link_name"] is not None else 0
    flags |= 16 if f["message_id"] is not None else 0
    out += bytes((flags,))
    for name in ("campaign_id", "recipient_id", "link_name", "message_id"):
        if f[name] is not None:
            raw = f[name].encode()
            out += bytes((len(raw),)) + raw
    return out + (f["url"].encode("ascii") if kind == "click" else b"")


def spec_length(kind: str, kid: str, f: Json) -> int:
    """docs/tokens.md, "Length": bytes before base64, then ceil(4 * bytes / 3) characters."""
    n = (25 if kind == "open" else 27) + len(kid) + len(f["campaign_id"].encode()) + len(f["recipient_id"].encode())
    if kind == "click":
        n += len(f["url"]) + (1 + len(f["link_name"].encode()) if f["link_name"] is not None else 0)
    n += 1 + len(f["message_id"].encode()) if f["message_id"] is not None else 0
    return -(-4 * n // 3)


def v1_expressible(f: Json) -> bool:
    return f["part"] in ("api", None) and not f["honeypot"] and f["link_name"] is None and f["message_id"] is None


def test_mint_open_round_trips() -> None:
    """Random fields under random keys: Node mints a token of the spec's length whose header is
    `0x20 | kind, kid_len, kid` and whose AES-SIV plaintext (opened by `cryptography` with the
    HKDF key) is the spec's table; Node opens it to the same fields under a rotated key list,
    and refuses it on the other path and without its key. Version 1 likewise, where it can say
    the fields, at the same length."""
    made = cases(ROUND_TRIP)
    minted = run_node(
        [{"op": "mint", "key": f"{kid}:{secret}", "kind": kind, "fields": f} for kid, secret, _, (kind, f) in made]
        + [
            {"op": "mint_v1", "key": f"{kid}:{secret}", "kind": kind, "fields": f}
            for kid, secret, _, (kind, f) in made
            if v1_expressible(f)
        ]
    )
    v2, v1 = minted[: len(made)], iter(minted[len(made) :])
    requests: list[Json] = []
    expected: list[Json] = []
    for (kid, secret, other, (kind, f)), answer in zip(made, v2, strict=True):
        token = answer["token"]
        assert len(token) == spec_length(kind, kid, f), (kind, kid, f)
        raw = b64decode(token)
        header = bytes((0x20 | (kind == "click"), len(kid))) + kid.encode()
        assert raw.startswith(header)
        assert AESSIV(hkdf_siv_key(secret)).decrypt(raw[len(header) :], [header]) == spec_plaintext(kind, f)
        tokens = [(2, token)]
        if v1_expressible(f):
            v1_token = next(v1)["token"]
            assert len(v1_token) == len(token)
            tokens.append((1, v1_token))
        wrong_kind = "open" if kind == "click" else "click"
        for version, t in tokens:
            requests += [
                {"op": "open", "keys": [f"{other}:{'n' * 16}", f"{kid}:{secret}"], "token": t, "kind": kind},
                {"op": "open", "keys": [f"{kid}:{secret}"], "token": t, "kind": wrong_kind},
                {"op": "open", "keys": [f"{other}:{secret}"], "token": t, "kind": kind},
                {"op": "open", "keys": [f"{kid}:{secret}x"], "token": t, "kind": kind},
            ]
            expected.append({"version": version, "kind": kind, "kid": kid, "fields": f})
    opened = iter(run_node(requests))
    for want in expected:
        assert next(opened) == want
        for refusal in (next(opened), next(opened), next(opened)):
            assert refusal.keys() == {"error"}, (want, refusal)


def test_spec_length_example() -> None:
    """docs/tokens.md: a 2-character kid, a 10-byte campaign, a 12-byte recipient and a 35-character
    URL make an open of 66 characters and a click of 115, in both versions."""
    f = {"sent_at": 1, "campaign_id": "c" * 10, "recipient_id": "r" * 12}
    click = {**f, "link_index": 7, "url": "https://example.com/" + "p" * 15}
    minted = run_node(
        [
            {"op": op, "key": "k1:0123456789abcdef", "kind": kind, "fields": fields}
            for op in ("mint", "mint_v1")
            for kind, fields in (("open", f), ("click", click))
        ]
    )
    assert [len(m["token"]) for m in minted] == [66, 115, 66, 115]


K = "k1:0123456789abcdef"
OPEN: Json = {"campaign_id": "c", "recipient_id": "r"}
C: Json = {**OPEN, "link_index": 0, "url": "https://e.com/"}
BAD_MINTS: list[tuple[str, str, Json]] = [
    ("k1:short", "open", OPEN),  # secret under 16 characters
    ("k/1:0123456789abcdef", "open", OPEN),
    ("k" * 33 + ":0123456789abcdef", "open", OPEN),
    (K, "open", {**OPEN, "campaign_id": ""}),
    (K, "open", {**OPEN, "campaign_id": "c" * 256}),
    (K, "open", {**OPEN, "campaign_id": "あ" * 86}),  # 258 bytes
    (K, "open", {**OPEN, "campaign_id": "c\0"}),
    (K, "open", {**OPEN, "url": "https://e.com/"}),
    (K, "open", {**OPEN, "sent_at": 2**32}),
    (K, "click", {**C, "link_index": 65536}),
    (K, "click", {**C, "url": "https://e.com/ä"}),
    (K, "click", {**C, "url": "https://e.com/ x"}),
    (K, "click", {**C, "url": "https://e.com/" + "p" * 2035}),  # 2,049 characters
    (K, "click", {**C, "url": "ftp://e.com/"}),
    (K, "click", {**C, "link_name": "n" * 65}),
    (K, "click", {**C, "part": "amp"}),
    (K, "bounce", OPEN),
]


def test_mint_refuses_what_the_spec_does_not_allow() -> None:
    requests: list[Json] = [
        {"op": op, "key": key, "kind": kind, "fields": f} for key, kind, f in BAD_MINTS for op in ("mint", "mint_v1")
    ]
    for answer, request in zip(run_node(requests), requests, strict=True):
        assert answer.keys() == {"error"}, request


# --- opening: each rule of "Opening a token", with tokens sealed here by cryptography --------------

KEY = ("k1", "0123456789abcdef")
SIV_KEY = hkdf_siv_key(KEY[1])


def seal(plaintext: bytes, first: int = 0x21, kid: bytes = b"k1") -> str:
    header = bytes((first, len(kid))) + kid
    raw = header + AESSIV(SIV_KEY).encrypt(plaintext, [header])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def click(flags: int = 0, ids: bytes = b"\x01c\x01r", url: bytes = b"https://e.com/") -> str:
    """A click token (45 bytes, 60 characters, as given) around any plaintext."""
    return seal(struct.pack(">IHB", 1, 2, flags) + ids + url)


def open_(flags: int = 0, ids: bytes = b"\x01c\x01r", kid: bytes = b"k1") -> str:
    return seal(struct.pack(">IB", 1, flags) + ids, 0x20, kid)


CLICK_PLAINTEXT = struct.pack(">IHB", 1, 2, 0) + b"\x01c\x01rhttps://e.com/"
URL_RULE = "url is empty or not printable ASCII"


def bad_tokens() -> list[tuple[str, str, str, str]]:
    """(why, kind, token, the reason Node gives): each is refused by one rule of "Opening a token"."""
    good = click()
    assert len(good) % 4 == 0
    # An open with a 4-character kid is 31 bytes, 42 characters: the last holds 2 bits and 4 unused ones.
    open31 = open_(kid=b"kid4")
    assert len(open31) % 4 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = open31[:-1] + alphabet[alphabet.index(open31[-1]) | 1]
    no_siv = base64.urlsafe_b64encode(b"\x20\x02k1" + bytes(15)).rstrip(b"=").decode()  # 26 characters
    return [
        ("padding", "open", open31 + "==", "alphabet"),
        ("standard alphabet +", "click", good[:5] + "+" + good[6:], "alphabet"),
        ("standard alphabet /", "click", good[:5] + "/" + good[6:], "alphabet"),
        ("dot", "click", good[:5] + "." + good[6:], "alphabet"),
        ("space", "click", good[:-1] + " ", "alphabet"),
        ("non-ASCII", "click", good[:5] + "é" + good[6:], "alphabet"),
        ("too short", "open", "A" * 23, "length"),
        ("too long", "click", "A" * 16_385, "length"),
        ("1 more than a multiple of 4", "click", good + "A", "length is 1 more than a multiple of 4"),
        ("unused bits", "open", unused, "unused bits"),
        ("version 3", "click", seal(CLICK_PLAINTEXT, 0x31), "version or kind"),
        ("kind 2", "click", seal(CLICK_PLAINTEXT, 0x22), "version or kind"),
        ("click on the open path", "open", good, "version or kind"),
        ("unknown kid", "open", open_(kid=b"k2"), "unknown kid"),
        ("kid in another case", "open", open_(kid=b"K1"), "unknown kid"),
        ("empty kid", "open", open_(kid=b""), "unknown kid"),
        ("no SIV", "open", no_siv, "SIV does not match"),
        ("reserved bit 5", "click", click(0x20), "reserved flag bits"),
        ("reserved bit 7", "open", open_(0x80), "reserved flag bits"),
        ("part 3", "click", click(3), "part 3"),
        ("part in an open", "open", open_(1), "click flags in an open"),
        ("honeypot in an open", "open", open_(4), "click flags in an open"),
        ("link name in an open", "open", open_(8, b"\x01c\x01r\x01n"), "click flags in an open"),
        ("plaintext too short", "open", seal(b"\x00\x00\x00", 0x20), "sent_at runs past the end"),
        ("campaign length 0", "click", click(ids=b"\x00\x01r"), "campaign length 0 is not 1 to 255"),
        ("recipient past the end", "open", open_(ids=b"\x01c\x05r"), "recipient runs past the end"),
        ("link name of 65", "click", click(8, b"\x01c\x01r\x41" + b"n" * 65), "link_name length 65 is not 1 to 64"),
        ("link name length 0", "click", click(8, b"\x01c\x01r\x00"), "link_name length 0 is not 1 to 64"),
        ("message id length 0", "open", open_(16, b"\x01c\x01r\x00"), "message_id length 0 is not 1 to 255"),
        ("message id past the end", "open", open_(16, b"\x01c\x01r"), "message_id length runs past the end"),
        ("left over in an open", "open", open_(ids=b"\x01c\x01rx"), "bytes left over in an open"),
        ("no url", "click", click(url=b""), URL_RULE),
        ("url with a space", "click", click(url=b"https://e.com/ "), URL_RULE),
        ("url with DEL", "click", click(url=b"https://e.com/\x7f"), URL_RULE),
        ("url with UTF-8", "click", click(url="https://e.com/ä".encode()), URL_RULE),
        ("campaign not UTF-8", "click", click(ids=b"\x01\xff\x01r"), "campaign is not UTF-8"),
        ("campaign with NUL", "click", click(ids=b"\x01\x00\x01r"), "campaign holds NUL"),
    ]


def test_open_refuses_each_rule() -> None:
    bad = bad_tokens()
    keys = [":".join(KEY), "k3:fedcba9876543210"]
    good: list[tuple[str, str, Json]] = [
        ("click", click(), {"url": "https://e.com/", "part": "api"}),
        ("click", click(8 | 4 | 2, b"\x01c\x01r\x01n"), {"link_name": "n", "honeypot": True, "part": "text"}),
        ("open", open_(16, b"\x01c\x01r\x01m"), {"message_id": "m", "link_index": None}),
    ]
    requests: list[Json] = [{"op": "open", "keys": keys, "kind": kind, "token": t} for kind, t, _ in good]
    requests += [{"op": "open", "keys": keys, "kind": kind, "token": t} for _, kind, t, _ in bad]
    answers = run_node(requests)
    for (_, _, some), answer in zip(good, answers, strict=False):
        assert answer["fields"].items() >= some.items(), answer
    for (why, _, token, reason), answer in zip(bad, answers[len(good) :], strict=True):
        assert answer == {"error": f"bad token: {reason}"}, (why, token)


# --- placeholder: the vectors and trackd's trackd_links.tokens ------------------------------------------------
#
# Checked in tests/test_tokens_vectors.py, not here: that file runs against trackd_links.tokens version 2
# (KeyRing.sign_click/sign_open/open, LinkClaims with version, link_name, message_id, part and
# honeypot), so it passes only once trackd_links.tokens version 2 lands. It checks (a) every vector in
# tests/vectors/tokens.json against this Node implementation, (b) the same vectors against
# trackd_links.tokens, (c) that any single changed character or byte of a vector's token opens in neither.
# tests/vectors/make_vectors.py regenerates the vectors from this implementation.
