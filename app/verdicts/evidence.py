"""What the hot path keeps of each request for its verdict: a few bits (`events.evidence`) and a
16-bit keyed tag of the full client address (`events.addr_tag`).

Kept as bits, not headers: the rules need to know that a prefetch header or Accept-Language was
there, not what it said, and two bytes per event cost nothing to store or to COPY. The bits are
found with a few dict lookups in the request's headers. The time since the send needs nothing
new: it is `occurred_at - sent_at`.
"""

from __future__ import annotations

import hashlib
import re
import struct

HEAD = 1  # the method was HEAD
PREFETCH = 2  # Purpose / Sec-Purpose / X-Purpose / X-Moz said prefetch, prerender or preview
ACCEPT_LANGUAGE = 4  # an Accept-Language header was sent (browsers navigating send one)
SEC_FETCH = 8  # a Sec-Fetch-* header was sent (Chromium and Firefox since 2020 send them)
NETWORK_CERTAIN = 16  # the address is in a certain network list entry whose scope covers this kind
NETWORK_PROBABLE = 32  # ... in a probable one (judged with the time since the send, in PostgreSQL)
HONEYPOT = 64  # the click's token is a honeypot link (no person sees it)
ALL = 127

# The bits a real-time verdict depends on (with the user agent); the others are evidence for
# deferred rules and `trackd explain`.
REASON_BITS = HEAD | PREFETCH | NETWORK_CERTAIN | HONEYPOT

NAMES = {
    HEAD: "head request",
    PREFETCH: "prefetch header",
    ACCEPT_LANGUAGE: "Accept-Language sent",
    SEC_FETCH: "Sec-Fetch-* sent",
    NETWORK_CERTAIN: "address in a certain network list entry",
    NETWORK_PROBABLE: "address in a probable network list entry",
    HONEYPOT: "honeypot link",
}

# The headers the hot path looks for (lower case, as both parsers give them).
SEC_FETCH_HEADERS = frozenset((b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest", b"sec-fetch-user"))
PREFETCH_HEADERS = (b"sec-purpose", b"purpose", b"x-purpose", b"x-moz")
PREFETCH_HEADER_SET = frozenset(PREFETCH_HEADERS)

# Chrome sends `Sec-Purpose: prefetch` (and `prefetch;prerender`), Firefox `X-Moz: prefetch`,
# Safari and old Chrome `Purpose: prefetch`, some previewers `X-Purpose: preview` (Mautic,
# warmbly, Matomo; docs/engagement.md).
_PREFETCH_VALUE = re.compile(rb"prefetch|prerender|preview", re.IGNORECASE)


def prefetch_in(headers: dict[bytes, bytes]) -> bool:
    """Whether a prefetch header says prefetch, prerender or preview."""
    for name in PREFETCH_HEADERS:
        value = headers.get(name)
        if value is not None and _PREFETCH_VALUE.search(value) is not None:
            return True
    return False


# `events.evidence` as a binary COPY int2 field, for every value (made once).
FIELDS = tuple(b"\x00\x00\x00\x02" + struct.pack(">h", bits) for bits in range(ALL + 1))
_NULL = b"\xff\xff\xff\xff"


def names(bits: int | None) -> list[str]:
    """The evidence bits, in words (`trackd explain`)."""
    if bits is None:
        return []
    return [name for bit, name in NAMES.items() if bits & bit]


class AddressTags:
    """`events.addr_tag`: a keyed hash of the full client address *and the event's campaign and
    recipient*, cut to a few bits. It tells apart the few addresses of one recipient's events (an
    address burst, the scan's own address) and nothing more:

    * scoped to the recipient: the same address gives unrelated tags for two recipients, so a tag
      links nothing across recipients or campaigns;
    * never the address: where the row keeps an IPv4 /24 (TRACKD_IP_MODE=anonymize, the default)
      the tag has 64 values, each shared by exactly four hosts of the /24, so even someone holding
      the key (derived from the signing key, so that every pod agrees) is left with four
      addresses; elsewhere 16 bits of a keyed hash (next to an IPv6 /48, or with no address kept:
      about 2^64 and 65,536 candidates per value).

    The rules compare (ip, addr_tag) pairs, so addresses in different networks never collide."""

    V4_NETWORK_MASK = 0x3F
    FULL_MASK = 0xFFFF

    def __init__(self, key: bytes) -> None:
        self._base = hashlib.blake2s(key=hashlib.sha256(b"trackd address tag v2\x00" + key).digest(), digest_size=2)

    def prepare(self, packed: bytes, mask: int) -> Tagger:
        """The part of the tag that depends on the address alone, made once per distinct client
        (cached with its `ip` field): each event then hashes only its campaign and recipient.

        Next to an IPv4 /24 (`mask` V4_NETWORK_MASK) the tag is the host byte shifted by a keyed
        offset of the /24 and the recipient, modulo 64: exactly four hosts of the /24 share each
        value (.7, .71, .135 and .199 ...), so with the key the address is one of four, and two
        addresses of one /24 differ unless their host bytes are 64 apart. Elsewhere, 16 bits of
        the keyed hash of the address and the recipient."""
        state = self._base.copy()
        if mask == self.V4_NETWORK_MASK and len(packed) == 4:
            state.update(packed[:3])
            return Tagger(state, packed[3])
        state.update(packed)
        return Tagger(state, -1)

    def value(self, packed: bytes, ids: bytes, mask: int) -> int:
        """The tag of an address (its packed bytes) for a recipient (`ids`: the claims' campaign
        and recipient fields) with `mask` bits kept (tests, and what `prepare` makes per event)."""
        field = self.prepare(packed, mask).field(ids)
        return int.from_bytes(field[4:], "big")


class Tagger:
    """An address's tag state (AddressTags.prepare): `field(ids)` is the `addr_tag` field of an
    event of that recipient. Measured 0.43 us an event (one state copy, one update, one digest)."""

    __slots__ = ("_host", "_state")

    def __init__(self, state: hashlib.blake2s, host: int) -> None:
        self._state = state
        self._host = host  # the IPv4 host byte next to a /24, or -1 for a 16-bit tag

    def field(self, ids: bytes) -> bytes:
        h = self._state.copy()
        h.update(ids)
        if self._host >= 0:
            return _V4_TAG_FIELDS[(self._host + h.digest()[0]) & 0x3F]
        return _TAG_HEAD + h.digest()


_TAG_HEAD = b"\x00\x00\x00\x02"
_V4_TAG_FIELDS = tuple(_TAG_HEAD + value.to_bytes(2, "big") for value in range(64))
