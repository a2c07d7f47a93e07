"""What the hot path keeps of each request for its verdict: a few bits (`events.evidence`) and a
short keyed tag of the full client address (`events.addr_tag`).

Kept as bits, not headers: the rules need to know that a prefetch header or Accept-Language was
there, not what it said, and two bytes per event cost nothing to store or to COPY. The bits are
found with a few dict lookups in the request's headers. The time since the send needs nothing
new: it is `occurred_at - sent_at`.
"""

from __future__ import annotations

import hashlib
import ipaddress
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
    """`events.addr_tag`: a few bits of a keyed hash of the full client address, made before it is
    anonymised. It tells apart the few addresses of one recipient's events (an address burst, the
    scan's own address; the rules compare `ip` and `addr_tag` together) and never names one:

    * next to an IPv4 /24 (TRACKD_IP_MODE=anonymize, the default): the host byte shifted by a
      keyed offset of the /24, modulo 16. Exactly 16 hosts of the /24 share each value, so even
      someone holding the key (derived from the signing key, so that every pod agrees) is left
      with 16 addresses, as many as a /28 holds; neighbouring addresses (a pool of .1, .2, .3)
      always differ.
    * next to an IPv6 /48, or with no address kept (drop): 8 bits of the keyed hash, 256 values
      for all the addresses there are.
    * with the whole address kept (full): 16 bits (it says nothing the row does not).

    Made once per distinct client, with the `ip` field (app.copyrows): nothing per request."""

    V4_NETWORK_BITS = 0x0F
    SHORT_BITS = 0xFF
    FULL_BITS = 0xFFFF

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"trackd address tag v2\x00" + key).digest()

    def value(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, stored: str | None) -> int:
        """The tag of `address` when the row keeps `stored` as its `ip` (the text of the field:
        an IPv4 /24, an IPv6 /48, the address, or None)."""
        packed = address.packed
        if stored is not None and len(packed) == 4 and stored.endswith("/24"):
            offset = hashlib.blake2s(packed[:3], key=self._key, digest_size=1).digest()[0]
            return (packed[3] + offset) & self.V4_NETWORK_BITS
        digest = hashlib.blake2s(packed, key=self._key, digest_size=2).digest()
        bits = self.FULL_BITS if stored is not None and "/" not in stored else self.SHORT_BITS
        return int.from_bytes(digest, "big") & bits

    def field(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, stored: str | None) -> bytes:
        """The tag as a binary COPY int2 field (NULL without an address)."""
        if address is None:
            return _NULL
        return b"\x00\x00\x00\x02" + self.value(address, stored).to_bytes(2, "big")
