"""Minting and opening tokens (docs/tokens.md): round trips of every field, opacity, rotation,
version 1 tokens still opened, and rejection of every kind of bad token."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.copyrows import RowEncoder, decode_row
from app.settings import Settings
from trackd_links.tokens import (
    KIND_CLICK,
    KIND_OPEN,
    MAX_TOKEN_CHARS,
    TAG_BYTES,
    KeyRing,
    SigningError,
    SigningKey,
    _b64encode,
    click_location,
)
from trackd_links.urls import InvalidURL

RING = KeyRing.from_specs(["k2:second-secret-0123456789", "k1:first-secret-0123456789"])
# Version 1 tokens (HMAC, readable) are minted only by tests now: ring._seal around a payload.
OLD_RING = KeyRing.from_specs(["k1:first-secret-0123456789"])
OTHER_RING = KeyRing.from_specs(["k2:a-different-secret-0123456789"])

ids = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=60).filter(
    lambda s: len(s.encode()) <= 255
)
urls = st.builds(
    lambda host, path, query: f"https://{host}.example/{path}?{query}",
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20),
    st.text(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/", max_size=200),
    st.text(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/?", max_size=300),
)


@given(campaign=ids, recipient=ids, index=st.integers(0, 65535), url=urls, sent=st.integers(0, 2**32 - 1))
def test_click_round_trip(campaign: str, recipient: str, index: int, url: str, sent: int) -> None:
    token = RING.sign_click(campaign, recipient, index, url, sent_at=sent)
    claims = RING.verify(token, KIND_CLICK)
    assert claims is not None
    assert click_location(claims) == url.encode()
    assert RING.open(token, KIND_CLICK) == (KIND_CLICK, "k2", 2, sent, index, campaign, recipient, url, None, None,
                                            "api", False)  # fmt: skip
    assert RING.verify(token, KIND_OPEN) is None  # a click token is not a pixel token


names = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1,
                max_size=30).filter(lambda s: len(s.encode()) <= 64)  # fmt: skip


@given(campaign=ids, recipient=ids, url=urls, name=st.none() | names, message=st.none() | ids,
       part=st.sampled_from(["api", "html", "text"]), honeypot=st.booleans())  # fmt: skip
def test_every_v2_field_round_trips(campaign: str, recipient: str, url: str, name: str | None, message: str | None,
                                    part: str, honeypot: bool) -> None:  # fmt: skip
    token = RING.sign_click(campaign, recipient, 7, url, sent_at=5, link_name=name, message_id=message, part=part,
                            honeypot=honeypot)  # fmt: skip
    assert RING.open(token, KIND_CLICK) == (KIND_CLICK, "k2", 2, 5, 7, campaign, recipient, url, name, message, part,
                                            honeypot)  # fmt: skip
    opened = RING.open(RING.sign_open(campaign, recipient, sent_at=5, message_id=message), KIND_OPEN)
    assert opened == (KIND_OPEN, "k2", 2, 5, None, campaign, recipient, None, None, message, None, False)


@given(campaign=ids, recipient=ids, url=urls)
def test_no_field_is_visible_in_a_token(campaign: str, recipient: str, url: str) -> None:
    """Opaque: the decoded token holds none of its fields (nor any 4-byte piece of them, where
    the field has one that is not also in the clear header)."""
    token = RING.sign_click(campaign, recipient, 0, url, link_name="hero-cta", message_id="<m-1@x>")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw[:4] == b"\x21\x02k2"  # version 2, click; kid: the only clear text
    body = raw[4:]
    for field in (campaign, recipient, url, "hero-cta", "<m-1@x>"):
        data = field.encode()
        for i in range(0, max(1, len(data) - 7)):
            assert data[i : i + 8] not in body or len(data) < 8


ROWS = RowEncoder(Settings())
AGENT = ROWS.agent("click", 0, b"UA")
CLIENT = ROWS.client("127.0.0.1", None)


@given(campaign=ids, recipient=ids, index=st.integers(0, 65535), url=urls, sent=st.integers(0, 2**32 - 1))
def test_the_rows_made_on_the_hot_path_carry_the_claims_as_minted(
    campaign: str, recipient: str, index: int, url: str, sent: int
) -> None:
    sent_at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=sent)
    for name, message, part in ((None, None, "api"), ("hero-cta", "m-1", "html"), (None, "m-2", "text")):
        token = RING.sign_click(campaign, recipient, index, url, sent_at=sent, link_name=name, message_id=message,
                                part=part)  # fmt: skip
        claims = RING.verify(token, KIND_CLICK)
        assert claims is not None
        row, location, machine = ROWS.click_row(1, 2, 1_700_000_000_000_000, AGENT, CLIENT, 0, claims, b"UA")
        assert location == click_location(claims) == url.encode() and not machine
        got = decode_row(row)
        assert (got["kind"], got["campaign_id"], got["recipient_id"], got["link_index"], got["url"], got["sent_at"],
                got["link_name"], got["message_id"], got["part"]) == (
            "click", campaign, recipient, index, url, sent_at, name, message, part)  # fmt: skip
        assert ROWS.row(1, 2, 1_700_000_000_000_000, KIND_CLICK, 0, b"UA", CLIENT, claims) == row
    claims = RING.verify(RING.sign_open(campaign, recipient, sent_at=sent, message_id="m-3"), KIND_OPEN)
    assert claims is not None
    got = decode_row(ROWS.open_row(1, 2, 1_700_000_000_000_000, AGENT.fields, CLIENT, 0, claims))
    assert (got["campaign_id"], got["recipient_id"], got["link_index"], got["url"], got["sent_at"],
            got["link_name"], got["part"], got["message_id"]) == (
        campaign, recipient, None, None, sent_at, None, None, "m-3")  # fmt: skip


def test_a_honeypot_click_is_a_machine_with_reason_honeypot() -> None:
    claims = RING.verify(RING.sign_click("c", "r", 0, "https://example.com/", honeypot=True), KIND_CLICK)
    assert claims is not None
    row, _, machine = ROWS.click_row(1, 2, 1_700_000_000_000_000, AGENT, CLIENT, 0, claims, b"Mozilla/5.0 (X11)")
    got = decode_row(row)
    assert machine and got["is_machine"] and got["machine_reason"] == "honeypot"
    assert got["user_agent"] == "Mozilla/5.0 (X11)"


@given(campaign=ids, recipient=ids)
def test_open_round_trip(campaign: str, recipient: str) -> None:
    token = RING.sign_open(campaign, recipient, sent_at=1_700_000_000)
    assert RING.open(token, KIND_OPEN) == (KIND_OPEN, "k2", 2, 1_700_000_000, None, campaign, recipient, None, None,
                                           None, None, False)  # fmt: skip
    assert RING.verify(token, KIND_CLICK) is None


def test_tokens_are_url_safe_without_padding() -> None:
    for n in range(1, 40):
        token = RING.sign_click("c" * n, "r", 0, "https://example.com/")
        assert set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_documented_length() -> None:
    """docs/tokens.md: open = 25 + kid + campaign + recipient bytes; click adds 2 + URL; a link
    name or message id adds 1 + its bytes; then base64. The same as version 1 for the same input."""
    url = "https://example.com/landing?utm_source=newsletter"
    raw_open = 25 + 2 + 3 + 4  # kid "k2", campaign "c-1", recipient "r-42"
    raw_click = raw_open + 2 + len(url)
    assert len(RING.sign_open("c-1", "r-42")) == -(-raw_open * 4 // 3)
    assert len(RING.sign_click("c-1", "r-42", 0, url)) == -(-raw_click * 4 // 3)
    assert len(RING.sign_click("c-1", "r-42", 0, url, link_name="hero", message_id="m-12")) == -(
        -(raw_click + 5 + 5) * 4 // 3
    )
    v1 = RING._seal(RING._head(KIND_CLICK, None) + b"\x00\x00\x03c-1\x04r-42" + url.encode())
    assert len(v1) == len(RING.sign_click("c-1", "r-42", 0, url))


def test_version_1_tokens_keep_opening() -> None:
    """Minted before links v2 (HMAC): they open, on every key kept, as part api with no name."""
    v1 = RING._seal(RING._head(KIND_CLICK, 1_700_000_000) + b"\x00\x05\x03c-1\x04r-42https://example.com/")
    assert RING.open(v1, KIND_CLICK) == (KIND_CLICK, "k2", 1, 1_700_000_000, 5, "c-1", "r-42", "https://example.com/",
                                         None, None, "api", False)  # fmt: skip
    assert RING.verify(v1, KIND_OPEN) is None and OTHER_RING.verify(v1, KIND_CLICK) is None
    v1_open = RING._seal(RING._head(KIND_OPEN, 9) + b"\x03c-1\x04r-42")
    assert RING.open(v1_open, KIND_OPEN) == (KIND_OPEN, "k2", 1, 9, None, "c-1", "r-42", None, None, None, None, False)


@pytest.mark.parametrize(
    "url", [b"https://e.com/\n", b"https://e.com/ x", b"https://e.com/\x7f", b"https://\xc3\xa9.com/"]
)
def test_a_url_outside_printable_ascii_does_not_open(url: bytes) -> None:
    """Review finding: open() accepted a URL ending in LF (`$` matches before a final newline)
    while the hot path answered it as a bad token; both refuse it now (docs/tokens.md step 4)."""
    from tests.test_hotpath import hot_path

    token = RING._seal_v2(KIND_CLICK, b"\x00\x00\x00\x05\x00\x00" + b"\x00" + b"\x01c\x01r" + url)
    assert RING.verify(token, KIND_CLICK) is not None and RING.open(token, KIND_CLICK) is None
    hot, _, _ = hot_path()
    hot.keyring = RING
    assert hot.answer("click", False, token, [], "192.0.2.1").outcome == "bad_token"


@pytest.mark.parametrize(
    ("kind", "plaintext"),
    [
        (KIND_CLICK, b"\x00\x00\x00\x05\x00\x00" + b"\x20" + b"\x01c\x01r" + b"https://e.com/"),  # reserved bit
        (KIND_CLICK, b"\x00\x00\x00\x05\x00\x00" + b"\x03" + b"\x01c\x01r" + b"https://e.com/"),  # part 3
        (KIND_CLICK, b"\x00\x00\x00\x05\x00\x00" + b"\x00" + b"\x01c\x01r"),  # no URL
        (KIND_CLICK, b"\x00\x00\x00\x05\x00\x00" + b"\x00" + b"\x01c\xf0r" + b"https://e.com/"),  # overrun
        (KIND_CLICK, b"\x00\x00\x00\x05\x00\x00" + b"\x08" + b"\x01c\x01r\x41" + b"a" * 65),  # name > 64
        (KIND_CLICK, b"\x00\x00\x00\x05\x00\x00" + b"\x00" + b"\x00\x01r" + b"https://e.com/"),  # empty id
        (KIND_OPEN, b"\x00\x00\x00\x05" + b"\x00" + b"\x01c\x01rX"),  # bytes left over
        (KIND_OPEN, b"\x00\x00\x00\x05" + b"\x04" + b"\x01c\x01r"),  # honeypot on an open
        (KIND_OPEN, b"\x00\x00\x00\x05" + b"\x10" + b"\x01c\x01r\x05m"),  # message id overrun
    ],
)
def test_authentic_but_malformed_claims_do_not_open(kind: int, plaintext: bytes) -> None:
    """docs/tokens.md, "Opening a token", step 4: refused by open() and by the hot path's row
    makers (IndexError there: a bad token)."""
    token = RING._seal_v2(kind, plaintext)
    claims = RING.verify(token, kind)
    assert claims == plaintext  # authentic
    assert RING.open(token, kind) is None
    with pytest.raises(IndexError):
        if kind == KIND_CLICK:
            ROWS.click_row(1, 2, 1_700_000_000_000_000, AGENT, CLIENT, 0, claims, None)
        else:
            ROWS.open_row(1, 2, 1_700_000_000_000_000, AGENT.fields, CLIENT, 0, claims)


def test_rotation_old_keys_verify_first_key_signs() -> None:
    old = OLD_RING.sign_click("c", "r", 1, "https://example.com/")
    assert RING.verify(old, KIND_CLICK) is not None  # signed before rotation, still works
    new = RING.sign_click("c", "r", 1, "https://example.com/")
    opened = RING.open(new, KIND_CLICK)
    assert opened is not None and opened.kid == "k2"
    assert OLD_RING.verify(new, KIND_CLICK) is None  # unknown kid


def test_wrong_key_same_kid_is_rejected() -> None:
    token = OTHER_RING.sign_click("c", "r", 0, "https://example.com/")
    assert RING.verify(token, KIND_CLICK) is None


def _forge(payload: bytes, secret: bytes) -> str:
    tag = hmac.new(secret, payload, hashlib.sha256).digest()[:TAG_BYTES]
    return _b64encode(payload + tag)


V1_PAYLOAD = RING._head(KIND_CLICK, 1) + b"\x00\x00\x01c\x01rhttps://example.com/"


def test_wrong_version_is_rejected_even_with_a_valid_tag() -> None:
    assert RING.verify(_forge(V1_PAYLOAD, b"second-secret-0123456789"), KIND_CLICK) is not None
    for version in (0, 2, 3, 0x21):
        forged = _forge(bytes([version]) + V1_PAYLOAD[1:], b"second-secret-0123456789")
        assert RING.verify(forged, KIND_CLICK) is None


TOKEN = RING.sign_click("campaign", "recipient", 3, "https://example.com/path?q=1#f")
ALPHABET = string.printable + "é€\u0000"


@settings(max_examples=500)
@given(position=st.integers(0, len(TOKEN) - 1), replacement=st.sampled_from(ALPHABET))
def test_any_changed_character_fails(position: int, replacement: str) -> None:
    if TOKEN[position] == replacement:
        return
    tampered = TOKEN[:position] + replacement + TOKEN[position + 1 :]
    assert RING.verify(tampered, KIND_CLICK) is None


@settings(max_examples=500)
@given(byte=st.integers(0, len(TOKEN) * 3 // 4 - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_of_the_decoded_token_fails(byte: int, bit: int) -> None:
    raw = bytearray(base64.urlsafe_b64decode(TOKEN + "=" * (-len(TOKEN) % 4)))
    raw[byte] ^= 1 << bit
    assert RING.verify(_b64encode(bytes(raw)), KIND_CLICK) is None


def test_every_truncation_fails() -> None:
    for end in range(len(TOKEN)):
        assert RING.verify(TOKEN[:end], KIND_CLICK) is None
    assert RING.verify(TOKEN + "A", KIND_CLICK) is None
    assert RING.verify(TOKEN + "AAAA", KIND_CLICK) is None


@given(st.text(max_size=400))
def test_garbage_never_raises(garbage: str) -> None:
    assert RING.verify(garbage, KIND_CLICK) is None
    assert RING.verify(garbage, KIND_OPEN) is None


def test_oversized_token_is_rejected_cheaply() -> None:
    assert RING.verify("A" * (MAX_TOKEN_CHARS + 4), KIND_CLICK) is None
    assert RING.verify("A" * 65536, KIND_CLICK) is None


@pytest.mark.parametrize(
    ("campaign", "recipient", "index", "url", "error"),
    [
        ("", "r", 0, "https://e.com/", SigningError),
        ("c", "", 0, "https://e.com/", SigningError),
        ("c" * 256, "r", 0, "https://e.com/", SigningError),
        ("c", "r", -1, "https://e.com/", SigningError),
        ("c", "r", 65536, "https://e.com/", SigningError),
        ("c", "r", 0, "javascript:alert(1)", InvalidURL),
        ("c\x00", "r", 0, "https://e.com/", SigningError),
        ("c", "\ud800", 0, "https://e.com/", SigningError),
    ],
)
def test_signing_refuses(campaign: str, recipient: str, index: int, url: str, error: type) -> None:
    with pytest.raises(error):
        RING.sign_click(campaign, recipient, index, url)


@pytest.mark.parametrize("spec", ["nokey", ":secret-long-enough-1234", "k1:short", "bad kid:secret-long-enough-1234",
                                  "dev\n:secret-long-enough-1234"])  # fmt: skip
def test_bad_key_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        SigningKey.parse(spec)


def test_duplicate_kids_refused() -> None:
    with pytest.raises(ValueError):
        KeyRing.from_specs(["k1:first-secret-0123456789", "k1:other-secret-0123456789"])


def test_one_spelling_per_token() -> None:
    """Standard base64 letters, or padding, must not give a second string that verifies."""
    std = TOKEN.replace("-", "+").replace("_", "/")
    assert std != TOKEN or "-" not in TOKEN
    for variant in (std, TOKEN + "=", TOKEN + "==", TOKEN.replace("_", "/", 1), TOKEN.replace("-", "+", 1)):
        if variant != TOKEN:
            assert RING.verify(variant, KIND_CLICK) is None, variant


@pytest.mark.parametrize("length", [16, 63, 64, 65, 200])
def test_tags_are_standard_hmac_sha256_for_any_secret_length(length: int) -> None:
    # verify() finishes pre-keyed SHA-256 states itself (RFC 2104); it must agree with hmac.new.
    secret = bytes(range(256))[:length].replace(b":", b"a").decode("latin-1").encode("utf-8")
    ring = KeyRing([SigningKey("k", secret)])
    payload = ring._head(KIND_OPEN, 1) + b"\x01c\x01r"
    assert ring.verify(_forge(payload, secret), KIND_OPEN) == b"\x00\x00\x00\x01\x00\x01c\x01r"
    assert ring.verify(_forge(payload, secret + b"x"), KIND_OPEN) is None


def test_version_2_keys_are_hkdf_sha256_of_the_secret() -> None:
    """docs/tokens.md, "Keys": checked against cryptography's HKDF and AESSIV directly."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    secret = b"second-secret-0123456789"
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"trackd token v2 AES-SIV").derive(secret)
    token = RING.sign_open("c", "r", sent_at=1)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    header = b"\x20\x02k2"
    assert raw.startswith(header)
    assert AESSIV(key).decrypt(raw[len(header) :], [header]) == b"\x00\x00\x00\x01\x00\x01c\x01r"
