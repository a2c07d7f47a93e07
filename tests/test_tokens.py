"""Signing and verifying tokens: round trips, rotation, and rejection of every kind of bad token."""

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
from app.tokens import (
    KIND_CLICK,
    KIND_OPEN,
    MAX_TOKEN_CHARS,
    TAG_BYTES,
    KeyRing,
    SigningError,
    SigningKey,
    _b64encode,
    click_location,
    parse_payload,
)
from app.urls import InvalidURL

RING = KeyRing.from_specs(["k2:second-secret-0123456789", "k1:first-secret-0123456789"])
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
    payload = RING.verify(token, KIND_CLICK)
    assert payload is not None
    assert click_location(payload) == url.encode()
    claims = parse_payload(payload)
    assert claims == (KIND_CLICK, "k2", sent, index, campaign, recipient, url)
    assert RING.verify(token, KIND_OPEN) is None  # a click token is not a pixel token


ROWS = RowEncoder(Settings())
AGENT = ROWS.agent("click", False, b"UA").fields
CLIENT = ROWS.client("127.0.0.1", None)


@given(campaign=ids, recipient=ids, index=st.integers(0, 65535), url=urls, sent=st.integers(0, 2**32 - 1))
def test_the_rows_made_on_the_hot_path_carry_the_payload_as_signed(
    campaign: str, recipient: str, index: int, url: str, sent: int
) -> None:
    sent_at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=sent)
    payload = RING.verify(RING.sign_click(campaign, recipient, index, url, sent_at=sent), KIND_CLICK)
    assert payload is not None
    row, location = ROWS.click_row(1, 2, 1_700_000_000_000_000, AGENT, CLIENT, payload)
    assert location == click_location(payload) == url.encode()
    got = decode_row(row)
    assert (got["kind"], got["campaign_id"], got["recipient_id"], got["link_index"], got["url"], got["sent_at"]) == (
        "click",
        campaign,
        recipient,
        index,
        url,
        sent_at,
    )
    assert ROWS.row(1, 2, 1_700_000_000_000_000, AGENT, CLIENT, payload) == row
    payload = RING.verify(RING.sign_open(campaign, recipient, sent_at=sent), KIND_OPEN)
    assert payload is not None
    got = decode_row(ROWS.open_row(1, 2, 1_700_000_000_000_000, AGENT, CLIENT, payload))
    assert (got["campaign_id"], got["recipient_id"], got["link_index"], got["url"], got["sent_at"]) == (
        campaign,
        recipient,
        None,
        None,
        sent_at,
    )


@given(campaign=ids, recipient=ids)
def test_open_round_trip(campaign: str, recipient: str) -> None:
    token = RING.sign_open(campaign, recipient, sent_at=1_700_000_000)
    payload = RING.verify(token, KIND_OPEN)
    assert payload is not None
    assert parse_payload(payload) == (KIND_OPEN, "k2", 1_700_000_000, None, campaign, recipient, None)
    assert RING.verify(token, KIND_CLICK) is None


def test_tokens_are_url_safe_without_padding() -> None:
    for n in range(1, 40):
        token = RING.sign_click("c" * n, "r", 0, "https://example.com/")
        assert set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_documented_length() -> None:
    """README: open = 25 + kid + campaign + recipient bytes; click adds 2 + URL; then base64."""
    url = "https://example.com/landing?utm_source=newsletter"
    raw_open = 25 + 2 + 3 + 4  # kid "k2", campaign "c-1", recipient "r-42"
    raw_click = raw_open + 2 + len(url)
    assert len(RING.sign_open("c-1", "r-42")) == -(-raw_open * 4 // 3)
    assert len(RING.sign_click("c-1", "r-42", 0, url)) == -(-raw_click * 4 // 3)


def test_rotation_old_keys_verify_first_key_signs() -> None:
    old = OLD_RING.sign_click("c", "r", 1, "https://example.com/")
    assert RING.verify(old, KIND_CLICK) is not None  # signed before rotation, still works
    new = RING.sign_click("c", "r", 1, "https://example.com/")
    assert parse_payload(RING.verify(new, KIND_CLICK) or b"").kid == "k2"
    assert OLD_RING.verify(new, KIND_CLICK) is None  # unknown kid


def test_wrong_key_same_kid_is_rejected() -> None:
    token = OTHER_RING.sign_click("c", "r", 0, "https://example.com/")
    assert RING.verify(token, KIND_CLICK) is None


def _forge(payload: bytes, secret: bytes) -> str:
    tag = hmac.new(secret, payload, hashlib.sha256).digest()[:TAG_BYTES]
    return _b64encode(payload + tag)


def test_wrong_version_is_rejected_even_with_a_valid_tag() -> None:
    token = RING.sign_click("c", "r", 0, "https://example.com/")
    payload = RING.verify(token, KIND_CLICK)
    assert payload is not None
    assert RING.verify(_forge(payload, b"second-secret-0123456789"), KIND_CLICK) is not None
    assert RING.verify(_forge(bytes([2]) + payload[1:], b"second-secret-0123456789"), KIND_CLICK) is None


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


@pytest.mark.parametrize("spec", ["nokey", ":secret-long-enough-1234", "k1:short", "bad kid:secret-long-enough-1234"])
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
    payload = ring.verify(ring.sign_open("c", "r"), KIND_OPEN)
    assert payload is not None
    assert ring.verify(_forge(payload, secret), KIND_OPEN) == payload
    assert ring.verify(_forge(payload, secret + b"x"), KIND_OPEN) is None
