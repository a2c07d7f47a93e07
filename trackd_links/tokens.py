"""Mint and open link tokens (docs/tokens.md is the byte-exact specification). A token carries
everything a redirect needs: no database read.

Version 2, the one minted: `base64url(header || siv || ciphertext)` without padding, where the
header (`0x20 | kind`, kid length, kid) is the only clear text and the associated data, and
`siv || ciphertext` is AES-SIV (RFC 5297) under a key derived from the kid's secret with HKDF-
SHA256. Decoding a token reveals nothing of its fields; changing any byte makes it fail.
Version 1 (HMAC-SHA256 over a readable payload) is opened for as long as its key is kept.

The hot path calls `KeyRing.verify`, which returns the token's *claims*: the plaintext of
version 2 (below), the same layout for a version 1 token (rewritten once, with empty flags), so
that app.copyrows reads one layout:

    sent_at u32 | [link_index u16, clicks] | flags u8 | campaign_len u8 | campaign
    | recipient_len u8 | recipient | [name_len u8 | link_name] | [message_len u8 | message_id]
    | [url, clicks: to the end]

This package never imports `app`: senders whose own code has a package named `app` sign links
in process with `from trackd_links import KeyRing`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trackd_links.urls import to_location

VERSION = 2
VERSION_1 = 1
KIND_OPEN = 0
KIND_CLICK = 1
TAG_BYTES = 16  # version 1's truncated HMAC, and version 2's synthetic IV
MAX_ID_BYTES = 255
MAX_LINK_NAME_BYTES = 64
# A token for a 2048-character URL whose IRI form grew when percent-encoded still fits; a path
# longer than this is rejected before any decoding work.
MAX_TOKEN_CHARS = 16_384
HKDF_INFO = b"trackd token v2 AES-SIV"
PARTS = ("api", "html", "text")

# flags (docs/tokens.md): bits 0-1 part, 2 honeypot, 3 link name, 4 message id, 5-7 reserved.
FLAG_PART = 0x03
FLAG_HONEYPOT = 0x04
FLAG_LINK_NAME = 0x08
FLAG_MESSAGE_ID = 0x10
FLAG_RESERVED = 0xE0
# What an open may carry: a message id only.
OPEN_FLAGS_REFUSED = FLAG_PART | FLAG_HONEYPOT | FLAG_LINK_NAME | FLAG_RESERVED

_KID = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # fullmatch: `$` would accept "dev\n"
_TO_STD_B64 = bytes.maketrans(b"-_", b"+/")
# For verifying: base64url to standard base64 in one pass, with '+', '/' and '=' mapped to a
# byte strict base64 decoding refuses, so each token has one spelling (see KeyRing.verify).
_VERIFY_B64 = bytes.maketrans(b"-_+/=", b"+/!!!")
_FROM_STD_B64 = bytes.maketrans(b"+/", b"-_")
# Standard base64's alphabet: verify() translates a token to it before decoding.
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The last character of an unpadded token carries unused low bits; they must be zero or two
# different strings would verify as one token (a tampered byte that still verifies).
_LAST_CHAR_OK = {
    2: frozenset(c for i, c in enumerate(_B64) if i & 0b1111 == 0),
    3: frozenset(c for i, c in enumerate(_B64) if i & 0b11 == 0),
}
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_SENT_LINK = struct.Struct(">IH")
_compare_digest = hmac.compare_digest
_PRINTABLE_ASCII = re.compile(rb"[\x21-\x7e]+")  # used with fullmatch: `$` would let a final LF by


class SigningError(ValueError):
    """The link cannot be signed as asked (bad id, URL, name or index)."""


class LinkClaims(NamedTuple):
    """What an opened token says (every field, decoded)."""

    kind: int
    kid: str
    version: int
    sent_at: int
    link_index: int | None
    campaign_id: str
    recipient_id: str
    url: str | None
    link_name: str | None
    message_id: str | None
    part: str | None  # "api", "html" or "text" for a click; None for an open
    honeypot: bool


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes

    @classmethod
    def parse(cls, spec: str) -> SigningKey:
        kid, sep, secret = spec.partition(":")
        if not sep or not _KID.fullmatch(kid):
            raise ValueError("a signing key is 'kid:secret' with kid of 1-32 characters [A-Za-z0-9_.-]")
        if len(secret) < 16:
            raise ValueError(f"signing key {kid!r}: the secret must have at least 16 characters")
        return cls(kid, secret.encode("utf-8"))

    def siv_key(self) -> bytes:
        """The 64-byte AES-SIV key of version 2 tokens (HKDF-SHA256, docs/tokens.md)."""
        return HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=HKDF_INFO).derive(self.secret)


Pads = tuple["hashlib._Hash", "hashlib._Hash"]


def _hmac_pads(secret: bytes) -> Pads:
    """HMAC-SHA256 (RFC 2104) keyed once: the inner and outer hash states after the padded key.
    Copying and finishing these costs 0.6 us a tag against 1.1 us through hmac.HMAC (timeit);
    tests check the tags against hmac.new()."""
    key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
    key = key.ljust(64, b"\x00")
    return hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key))


def _tag(pads: Pads, payload: bytes) -> bytes:
    inner = pads[0].copy()
    inner.update(payload)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.digest()[:TAG_BYTES]


def _b64encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_FROM_STD_B64).decode("ascii")


def _field(name: str, value: str, limit: int = MAX_ID_BYTES) -> bytes:
    """A length byte and the UTF-8 of `value` (1 to `limit` bytes, no NUL)."""
    if not isinstance(value, str) or not value:
        raise SigningError(f"{name} must be a non-empty string")
    if "\x00" in value:
        raise SigningError(f"{name} must not contain NUL characters")
    try:
        encoded = value.encode("utf-8", "strict")
    except UnicodeEncodeError:
        raise SigningError(f"{name} is not valid Unicode (lone surrogate)") from None
    if len(encoded) > limit:
        raise SigningError(f"{name} must be at most {limit} bytes of UTF-8")
    return bytes((len(encoded),)) + encoded


def v1_claims(payload: bytes) -> bytes:
    """The claims (version 2 plaintext layout) of a verified version 1 payload: the header cut
    off and an empty flags byte put after sent_at (and link_index)."""
    body = payload[3 + payload[2] :]
    cut = 6 if payload[1] == KIND_CLICK else 4
    return body[:cut] + b"\x00" + body[cut:]


class KeyRing:
    """Minting and opening keys. The first key mints; every key opens (rotation)."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self.keys = list(keys)
        if not self.keys:
            raise ValueError("a key ring needs at least one signing key")
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise ValueError("signing key ids must be unique")
        # Keyed states built once: version 1's HMAC pads, version 2's AES-SIV (HKDF per key).
        self._pads = {k.kid.encode("ascii"): _hmac_pads(k.secret) for k in self.keys}
        self._sivs = {k.kid.encode("ascii"): AESSIV(k.siv_key()) for k in self.keys}
        self._signer = self.keys[0]
        kid = self._signer.kid.encode("ascii")
        self._signer_siv = self._sivs[kid]
        self._headers = {kind: bytes((0x20 | kind, len(kid))) + kid for kind in (KIND_OPEN, KIND_CLICK)}
        self._v1_head = bytes((len(kid),)) + kid

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> KeyRing:
        return cls(SigningKey.parse(s) for s in specs)

    # -- minting -------------------------------------------------------------------------------

    def _seal_v2(self, kind: int, plaintext: bytes) -> str:
        """A version 2 token around any plaintext (tests make malformed ones with it)."""
        header = self._headers[kind]
        return _b64encode(header + self._signer_siv.encrypt(plaintext, [header]))

    def _seal(self, payload: bytes) -> str:
        """A version 1 token around any payload (read only: tests, and vectors, make them)."""
        return _b64encode(payload + _tag(self._pads[self._signer.kid.encode("ascii")], payload))

    def _head(self, kind: int, sent_at: int | None) -> bytes:
        """A version 1 payload's head (tests)."""
        return bytes((VERSION_1, kind)) + self._v1_head + _U32.pack(_sent_at(sent_at))

    def sign_open(self, campaign_id: str, recipient_id: str, *, sent_at: int | None = None,
                  message_id: str | None = None) -> str:  # fmt: skip
        flags = 0
        tail = b""
        if message_id is not None:
            flags |= FLAG_MESSAGE_ID
            tail = _field("message_id", message_id)
        ids = _field("campaign_id", campaign_id) + _field("recipient_id", recipient_id)
        return self._seal_v2(KIND_OPEN, _U32.pack(_sent_at(sent_at)) + bytes((flags,)) + ids + tail)

    def sign_click(
        self, campaign_id: str, recipient_id: str, link_index: int, url: str, *, sent_at: int | None = None,
        link_name: str | None = None, message_id: str | None = None, part: str = "api", honeypot: bool = False,
    ) -> str:  # fmt: skip
        """Mint a click on `url`. Raises InvalidURL (a SigningError's sibling) for unsignable URLs."""
        if not isinstance(link_index, int) or isinstance(link_index, bool) or not 0 <= link_index <= 0xFFFF:
            raise SigningError("link_index must be an integer from 0 to 65535")
        if part not in PARTS:
            raise SigningError(f"part must be one of {', '.join(PARTS)}")
        location = to_location(url).encode("ascii")
        flags = PARTS.index(part) | (FLAG_HONEYPOT if honeypot else 0)
        tail = b""
        if link_name is not None:
            flags |= FLAG_LINK_NAME
            tail += _field("link_name", link_name, MAX_LINK_NAME_BYTES)
        if message_id is not None:
            flags |= FLAG_MESSAGE_ID
            tail += _field("message_id", message_id)
        ids = _field("campaign_id", campaign_id) + _field("recipient_id", recipient_id)
        head = _SENT_LINK.pack(_sent_at(sent_at), link_index) + bytes((flags,))
        return self._seal_v2(KIND_CLICK, head + ids + tail + location)

    # -- opening (the hot path) ----------------------------------------------------------------

    def verify(self, token: str, kind: int) -> bytes | None:
        """The claims of `token` if it is a valid token of `kind` (docs/tokens.md, "Opening a
        token", steps 1-3), else None. Never raises. Step 4, the claims' layout, is checked by
        whoever reads them: app.copyrows on the hot path, `claims()` elsewhere."""
        n = len(token)
        if n < 24 or n > MAX_TOKEN_CHARS:
            return None
        rem = n & 3
        try:
            # '+', '/' and '=' become '!', which strict decoding refuses like anything else
            # outside the alphabet: one spelling per token.
            data = token.encode("ascii").translate(_VERIFY_B64)
        except UnicodeEncodeError:
            return None
        if rem:
            if rem == 1 or data[-1] not in _LAST_CHAR_OK[rem]:
                return None
            data += b"==" if rem == 2 else b"="
        try:
            raw = binascii.a2b_base64(data, strict_mode=True)
        except binascii.Error:
            return None
        first = raw[0]
        if first == 0x20 | kind:
            end = 2 + raw[1]
            siv = self._sivs.get(raw[2:end])
            if siv is None or len(raw) < end + TAG_BYTES + 1:
                return None
            try:
                return siv.decrypt(raw[end:], [raw[:end]])
            except InvalidTag:
                return None
        if first != VERSION_1 or raw[1] != kind:
            return None
        pads = self._pads.get(raw[3 : 3 + raw[2]])
        if pads is None:
            return None
        payload = raw[:-TAG_BYTES]
        # _tag(), written out: one Python call fewer
        inner = pads[0].copy()
        inner.update(payload)
        outer = pads[1].copy()
        outer.update(inner.digest())
        if not _compare_digest(outer.digest()[:TAG_BYTES], raw[-TAG_BYTES:]) or len(payload) < 3 + raw[2] + 4:
            return None
        return v1_claims(payload)

    def open(self, token: str, kind: int) -> LinkClaims | None:
        """Every field of a valid token of `kind`, decoded; None if it is not one (any step of
        docs/tokens.md's "Opening a token" failing, and fields that are not valid UTF-8)."""
        claims = self.verify(token, kind)
        if claims is None:
            return None
        raw = _raw(token)
        if raw[0] == VERSION_1:
            kid, version = raw[3 : 3 + raw[2]].decode("ascii"), VERSION_1
        else:
            kid, version = raw[2 : 2 + raw[1]].decode("ascii"), VERSION
        try:
            return parse_claims(claims, kind, kid, version)
        except (IndexError, struct.error, UnicodeError, ValueError):
            return None


def _raw(token: str) -> bytes:
    data = token.encode("ascii").translate(_TO_STD_B64)
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _sent_at(sent_at: int | None) -> int:
    when = int(time.time()) if sent_at is None else int(sent_at)
    if not 0 <= when < 2**32:
        raise SigningError("sent_at out of range")
    return when


class Layout(NamedTuple):
    """Where the fields of a claims string are (offsets into it); raises IndexError when the
    claims do not parse exactly (docs/tokens.md, "Opening a token", step 4)."""

    flags: int
    campaign: tuple[int, int]
    recipient: tuple[int, int]
    link_name: tuple[int, int] | None
    message_id: tuple[int, int] | None
    url_at: int  # clicks: the URL runs from here to the end; opens: the end


def layout(claims: bytes, kind: int) -> Layout:
    at = 6 if kind == KIND_CLICK else 4
    flags = claims[at]
    if flags & (FLAG_RESERVED if kind == KIND_CLICK else OPEN_FLAGS_REFUSED) or flags & FLAG_PART == FLAG_PART:
        raise IndexError("reserved flag bits, or flags an open must not have")
    at += 1
    spans: list[tuple[int, int] | None] = []
    wanted = ((True, MAX_ID_BYTES), (True, MAX_ID_BYTES), (bool(flags & FLAG_LINK_NAME), MAX_LINK_NAME_BYTES),
              (bool(flags & FLAG_MESSAGE_ID), MAX_ID_BYTES))  # fmt: skip
    for present, limit in wanted:
        if not present:
            spans.append(None)
            continue
        n = claims[at]
        if not 1 <= n <= limit or at + 1 + n > len(claims):
            raise IndexError("a field length out of range or past the end")
        spans.append((at + 1, at + 1 + n))
        at += 1 + n
    if (kind == KIND_CLICK) == (at >= len(claims)):
        raise IndexError("a click without a URL, or an open with bytes left over")
    campaign, recipient, name, message = spans
    assert campaign is not None and recipient is not None
    return Layout(flags, campaign, recipient, name, message, at)


def parse_claims(claims: bytes, kind: int, kid: str = "", version: int = VERSION) -> LinkClaims:
    """Decode every field of verified claims (off the hot path: tools, tests, the API)."""
    where = layout(claims, kind)

    def text(span: tuple[int, int] | None) -> str | None:
        if span is None:
            return None
        value = claims[span[0] : span[1]].decode("utf-8")
        if "\x00" in value:
            raise ValueError("NUL in a field")
        return value

    if kind == KIND_CLICK:
        sent_at, link_index = _SENT_LINK.unpack_from(claims)
        url_bytes = claims[where.url_at :]
        if not _PRINTABLE_ASCII.fullmatch(url_bytes):
            raise ValueError("a URL outside printable ASCII")
        url: str | None = url_bytes.decode("ascii")
        part: str | None = PARTS[where.flags & FLAG_PART]
    else:
        (sent_at,) = _U32.unpack_from(claims)
        link_index, url, part = None, None, None
    return LinkClaims(
        kind, kid, version, sent_at, link_index, text(where.campaign) or "", text(where.recipient) or "", url,
        text(where.link_name), text(where.message_id), part, bool(where.flags & FLAG_HONEYPOT),
    )  # fmt: skip


def click_location(claims: bytes) -> bytes:
    """The Location bytes inside verified click claims (no decoding: they are ASCII)."""
    return claims[layout(claims, KIND_CLICK).url_at :]


def load_or_create_dev_key(data_dir: Path) -> SigningKey:
    """A development key kept in the data directory, so links survive a restart of `make run`."""
    path = data_dir / "dev-signing-key"
    if path.exists():
        return SigningKey.parse(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = SigningKey("dev", secrets.token_urlsafe(32).encode("ascii"))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{key.kid}:{key.secret.decode('ascii')}\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


# -- diagnosis (trackd decode) -----------------------------------------------------------------

_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
KIND_NAMES = {KIND_OPEN: "open", KIND_CLICK: "click"}
_PATHS = {KIND_OPEN: "/o/{token}.gif", KIND_CLICK: "/c/{token}"}
ARTICLES = {KIND_OPEN: "an open", KIND_CLICK: "a click"}


def diagnose(ring: KeyRing, token: str, kind: int | None = None) -> str:
    """Why `token` does not open as a token of `kind` with `ring` (None: the kind its own header
    names), as one line; "" when it opens (then `ring.open` gives its fields).

    It walks docs/tokens.md's "Opening a token" one step at a time and names the first that
    fails. KeyRing.verify, the hot path, checks the same steps but only says None, and must stay
    that way (every branch there costs every request): this is the slow twin for people, and
    tests check the two agree on which tokens open."""
    # Step 1: spelling. The alphabet first: a '+', '/' or '=' says more than a length would.
    for i, char in enumerate(token):
        if char not in _B64URL_ALPHABET:
            hint = {
                "=": " (padding: tokens are base64url without '=')",
                "+": " (standard base64: tokens use '-' for '+')",
                "/": " (standard base64: tokens use '_' for '/'; or a path was pasted with the token)",
                "%": " (percent-escaped: trackd refuses escaped tokens, one spelling per token)",
            }.get(char, "")
            return f"not base64url: {char!r} at position {i}{hint}"
    n = len(token)
    if n < 24:
        return f"wrong length: {n} characters, a token has at least 24 (cut short?)"
    if n > MAX_TOKEN_CHARS:
        return f"wrong length: {n} characters, a token has at most {MAX_TOKEN_CHARS}"
    rem = n % 4
    if rem == 1:
        return f"wrong length: {n} characters, 1 more than a multiple of 4 is no base64 (a character lost or added?)"
    data = token.encode("ascii").translate(_TO_STD_B64)
    if rem and data[-1] not in _LAST_CHAR_OK[rem]:
        return f"wrong spelling: the unused low bits of the last character {token[-1]!r} are not zero (altered?)"
    raw = binascii.a2b_base64(data + b"=" * (-n % 4), strict_mode=True)

    # Step 2: version, kind, key id.
    first = raw[0]
    if first in (0x20 | KIND_OPEN, 0x20 | KIND_CLICK):
        version, token_kind, kid_at = VERSION, first & 0x0F, 1
    elif first == VERSION_1:
        version, token_kind, kid_at = VERSION_1, raw[1], 2
        if token_kind not in KIND_NAMES:
            return f"not a trackd token: version 1 with kind byte 0x{token_kind:02x} (0 open, 1 click)"
    else:
        return f"not a trackd token: first byte 0x{first:02x} is neither version 2 (0x20, 0x21) nor version 1 (0x01)"
    if kind is not None and token_kind != kind:
        return (
            f"wrong kind: this is {ARTICLES[token_kind]} token (version {version}), not {ARTICLES[kind]};"
            f" it is requested as {_PATHS[token_kind]}"
        )
    kid_len = raw[kid_at]
    end = kid_at + 1 + kid_len
    if end > len(raw):
        return f"not a trackd token: its key id length ({kid_len}) runs past the end of the token"
    kid_bytes = raw[kid_at + 1 : end]
    kid = kid_bytes.decode("ascii", "backslashreplace")
    known = ", ".join(k.kid for k in ring.keys)
    if kid_bytes not in ring._sivs:
        return f"unknown kid {kid!r}: made with a key not in this key ring ({known}); dropped from TRACKD_SIGNING_KEYS?"

    # Step 3: the tag.
    mismatch = f"tag does not match: not made with this ring's key {kid!r} (another secret under that kid) or altered"
    if version == VERSION:
        if len(raw) < end + TAG_BYTES + 1:
            return f"wrong length: too short for key {kid!r}: no room for the 16-byte tag and a plaintext"
        try:
            claims = ring._sivs[kid_bytes].decrypt(raw[end:], [raw[:end]])
        except InvalidTag:
            return mismatch
    else:
        payload = raw[:-TAG_BYTES]
        if not _compare_digest(_tag(ring._pads[kid_bytes], payload), raw[-TAG_BYTES:]):
            return mismatch
        if len(payload) < end + 4:
            return f"authentic (key {kid!r}) but malformed: the payload ends before sent_at"
        claims = v1_claims(payload)

    # Step 4: the fields. The flags byte first, by name: layout() checks it in one test.
    malformed = f"authentic (key {kid!r}) but malformed:"
    flags_at = 6 if token_kind == KIND_CLICK else 4
    if len(claims) > flags_at:
        flags = claims[flags_at]
        if flags & FLAG_RESERVED:
            return f"{malformed} reserved flag bits set (0x{flags & FLAG_RESERVED:02x})"
        if flags & FLAG_PART == FLAG_PART:
            return f"{malformed} part 3 (only 0 api, 1 html, 2 text)"
        if token_kind == KIND_OPEN and flags & OPEN_FLAGS_REFUSED:
            return f"{malformed} an open with part, honeypot or link-name flags (flags 0x{flags:02x})"
    try:
        parse_claims(claims, token_kind, kid, version)
    except IndexError as exc:
        why = "a field runs past the end" if str(exc) == "index out of range" else str(exc)
        return f"{malformed} {why}"
    except struct.error:
        return f"{malformed} too short for sent_at and link_index"
    except UnicodeDecodeError:
        return f"{malformed} a field is not valid UTF-8"
    except ValueError as exc:
        return f"{malformed} {exc}"
    return ""
