"""What the hot path keeps of each request for its verdict: a few bits (`events.evidence`) and a
16-bit keyed tag of the full client address (`events.addr_tag`).

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
    """`events.addr_tag`: 16 bits of a keyed hash of the full client address. Enough to count the
    distinct addresses among one recipient's few events (an address burst), not enough to name an
    address: each value stands for about 65,000 IPv4 addresses, and without the key (derived from
    the signing key, so every pod agrees) not even that set is known."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"trackd address tag v1\x00" + key).digest()[:32]

    def value(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        digest = hashlib.blake2s(address.packed, key=self._key, digest_size=2).digest()
        return int(struct.unpack(">h", digest)[0])

    def field(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bytes:
        """The tag as a binary COPY int2 field (NULL without an address)."""
        if address is None:
            return _NULL
        return b"\x00\x00\x00\x02" + struct.pack(">h", self.value(address))
