"""Event ids, format 1 events, and the client address an event keeps.

`EventIds` makes the UUIDv7 each event gets at receipt (so a replay or a retry is idempotent).
`RawEvent` is what earlier versions of the journal stored per event (format 1), still read on
replay; today the hot path makes the `events` row itself (app.copyrows). `RowMaker` resolves the
client address through trusted proxies and anonymises it, by the settings.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
from typing import NamedTuple

from app.settings import IPMode, Settings


class RawEvent(NamedTuple):
    """A format 1 journal record: the raw event as earlier versions recorded it."""

    id: int  # a UUIDv7 as an integer, made at receipt: replays and retries are idempotent
    received_at: float  # unix seconds
    is_head: bool
    payload: bytes  # the verified token payload (see trackd_links.tokens)
    peer: str | None  # socket peer address
    forwarded_for: bytes | None  # X-Forwarded-For as received (trusted only from our proxies)
    user_agent: bytes | None  # already cut to the configured maximum


class EventIds:
    """UUIDv7 ids (time-ordered, so the primary key index stays append-mostly) without a
    system call per request: 42 random bits fixed per process plus a counter."""

    def __init__(self) -> None:
        salt = secrets.randbits(42)
        # Version 7 and the salt's high bits above the millisecond time; the variant and the rest
        # of the salt above the counter.
        self._hi_salt = (7 << 12) | (salt >> 30)
        self._lo_salt = (2 << 62) | ((salt & (2**30 - 1)) << 32)
        self._counter = itertools.count(secrets.randbits(32))

    def pair(self, unix_ms: int) -> tuple[int, int]:
        """The next id as its high and low 64 bits (what a binary COPY row takes)."""
        return (unix_ms << 16) | self._hi_salt, self._lo_salt | (next(self._counter) & 0xFFFF_FFFF)

    def next(self, now: float) -> int:
        """The next id as one integer (format 1 events, tests)."""
        hi, lo = self.pair(int(now * 1000))
        return (hi << 64) | lo


def anonymise(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    prefix = 24 if address.version == 4 else 48
    return ipaddress.ip_network((address, prefix), strict=False)


class RowMaker:
    """The client address an `events` row keeps, by the privacy and proxy settings."""

    def __init__(self, settings: Settings) -> None:
        self.ip_mode = settings.ip_mode
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.trusted)

    def client_address(
        self, peer: str | None, forwarded_for: bytes | None
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The socket peer, or - only when the peer is one of our proxies - the nearest address
        in X-Forwarded-For that is not one of our proxies (the rightmost untrusted hop)."""
        try:
            address = ipaddress.ip_address(peer) if peer else None
        except ValueError:
            return None
        if address is None or not forwarded_for or not self.trusted or not self._is_trusted(address):
            return address
        for hop in reversed(forwarded_for.decode("latin-1").split(",")):
            try:
                address = ipaddress.ip_address(hop.strip())
            except ValueError:
                break
            if not self._is_trusted(address):
                break
        return address

    def ip_value(self, peer: str | None, forwarded_for: bytes | None) -> str | None:
        """The text of the `ip` column (uncached: app.copyrows caches the encoded field)."""
        return self.ip_text(self.client_address(peer, forwarded_for))

    def ip_text(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str | None:
        """The text of the `ip` column for a client address, by TRACKD_IP_MODE."""
        if self.ip_mode is IPMode.drop:
            return None
        if address is None:
            return None
        if address.version == 6 and address.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; a /48 of that would
            # erase the whole address, a /24 of the IPv4 address is what the setting means.
            address = address.ipv4_mapped
        if self.ip_mode is IPMode.anonymize:
            return str(anonymise(address))
        return str(address)
