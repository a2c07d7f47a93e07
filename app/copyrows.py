"""`events` rows in PostgreSQL's binary COPY format, made once, on the request path.

The journal stores each event as the exact bytes PostgreSQL's `COPY ... (FORMAT binary)` takes for
one row, so the writer ships a batch by concatenating what it read, with no Python work per
event: parsing the token payload, resolving and anonymising the client address and classifying
the user agent are done here, once, and never again on replay. The parts that repeat (the
user-agent fields, the client address) come from bounded caches.

One row: field count (int16) and, per column in `COLUMNS` order, a length (int32, -1 for NULL)
followed by the value in the type's binary send format (uuid: 16 bytes; timestamptz: int64
microseconds since 2000-01-01 UTC; int4; bool: 1 byte; inet: family, bits, is_cidr, length,
address; text: UTF-8).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import struct
import uuid
from typing import Any, NamedTuple

from app.classify import machine_reason
from app.events import RawEvent, RowMaker
from app.settings import Settings
from trackd_links.tokens import (
    FLAG_HONEYPOT,
    FLAG_LINK_NAME,
    FLAG_MESSAGE_ID,
    KIND_CLICK,
    MAX_LINK_NAME_BYTES,
    OPEN_FLAGS_REFUSED,
    v1_claims,
)

# The column order of every row; the writer names the same columns in its COPY statements.
COLUMNS = (
    "id", "occurred_at", "ip", "kind", "user_agent", "is_machine", "machine_reason",
    "sent_at", "link_index", "campaign_id", "recipient_id", "url", "link_name", "part", "message_id",
)  # fmt: skip
# Rows journaled before links v2 (journal format 2) end at `url`: upgrade_rows() adds the rest.
COLUMNS_V1 = COLUMNS[:12]
# The binary COPY stream around the rows: signature, flags, header extension length / trailer.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"

_PG_EPOCH_S = 946_684_800.0  # 2000-01-01T00:00:00Z in unix seconds
_PG_EPOCH_US = 946_684_800_000_000
_NULL = b"\xff\xff\xff\xff"
# Field count, then the id's length: the id and receipt time are packed in one call.
_HEAD = struct.Struct(">hiQQiq")
_SENT_LINK = struct.Struct(">iqii")
_SENT_NO_LINK = struct.Struct(">iq")
_I32 = struct.Struct(">i")
# Read from a token's claims (see trackd_links.tokens): sent_at, and for a click its link index.
_CLAIMS_SENT = struct.Struct(">I")
_CLAIMS_SENT_LINK = struct.Struct(">IH")
_FIELDS = len(COLUMNS)
_LEN3 = b"\x00\x00\x00"  # the high bytes of an int32 length below 256 (campaign, recipient, ...)
_PART_FIELDS = (b"\x00\x00\x00\x03api", b"\x00\x00\x00\x04html", b"\x00\x00\x00\x04text")
# Flags a click must not have (reserved bits); part 3 is refused separately.
_CLICK_FLAGS_REFUSED = 0xE0
_TAIL_NULLS = _NULL * 3  # link_name, part, message_id of an open from before links v2
_UPGRADED_CLICK_TAIL = _NULL + _PART_FIELDS[0] + _NULL  # a click from before links v2: part api
_INET_FAMILY = {4: 2, 6: 3}  # PGSQL_AF_INET, PGSQL_AF_INET6
_MAX_CACHED_XFF = 256


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode("utf-8")
    return _I32.pack(len(data)) + data


def inet_field(value: str | None) -> bytes:
    """An inet field from its text form ('203.0.113.0/24', '2001:db8::1', None)."""
    if value is None:
        return _NULL
    iface = ipaddress.ip_interface(value)
    packed = iface.ip.packed
    body = bytes((_INET_FAMILY[iface.version], iface.network.prefixlen, 0, len(packed))) + packed
    return _I32.pack(len(body)) + body


class AgentFields(NamedTuple):
    fields: bytes  # kind, user_agent, is_machine, machine_reason
    machine: bool


def _agent_fields(kind: str, is_head: bool, user_agent: bytes | None, honeypot: bool = False) -> AgentFields:
    """Cached by RowEncoder.agent: the regular expressions run once per distinct user agent. A
    honeypot link's click is a machine's whatever its user agent says (no person sees the link)."""
    decoded = user_agent.decode("utf-8", "replace") if user_agent else None
    reason = "honeypot" if honeypot else machine_reason(kind, is_head, decoded)
    # PostgreSQL text is valid UTF-8 without NUL: undecodable bytes and NUL become U+FFFD.
    ua = decoded.replace("\x00", "\ufffd") if decoded is not None else None
    machine = reason is not None
    fields = _text(kind) + _text(ua) + b"\x00\x00\x00\x01" + (b"\x01" if machine else b"\x00") + _text(reason)
    return AgentFields(fields, machine)


class RowEncoder:
    """Makes row bytes; holds the privacy settings (through RowMaker) and the caches."""

    def __init__(self, settings: Settings) -> None:
        self.maker = RowMaker(settings)
        # The same clients and user agents come back again and again; a miss costs a few
        # microseconds of `ipaddress` or regular expressions, a hit a dictionary lookup. The
        # caches are bounded in bytes too: an entry holds a user agent (cut to the configured
        # maximum) about three times over, and a long X-Forwarded-For is never kept.
        self.agent = functools.lru_cache(maxsize=max(256, (8 << 20) // (3 * settings.user_agent_max_bytes)))(
            _agent_fields
        )
        self._client_cached = functools.lru_cache(maxsize=65536)(self._client_field)
        # Without trusted proxies X-Forwarded-For is never read: the cache is all there is.
        self.client = self._client_cached if not settings.trusted_proxies else self._client

    def honeypot(self, is_head: bool, user_agent: bytes | None) -> AgentFields:
        """The agent fields of a honeypot click (rare: not cached)."""
        return _agent_fields("click", is_head, user_agent, honeypot=True)

    def _client(self, peer: str | None, forwarded_for: bytes | None) -> bytes:
        if forwarded_for is not None and len(forwarded_for) > _MAX_CACHED_XFF:
            return self._client_field(peer, forwarded_for)
        return self._client_cached(peer, forwarded_for)

    def _client_field(self, peer: str | None, forwarded_for: bytes | None) -> bytes:
        return inet_field(self.maker.ip_value(peer, forwarded_for))

    # The two row makers of the hot path, from a token's claims (app.tokens: the version 2
    # plaintext layout). Their fields go into the row as they are: a one-byte length becomes an
    # int32 length by three zero bytes before it, so the ids are copied, never decoded. Written
    # out per kind, with one join and no helper calls: this is about a quarter of trackd's own
    # work per request (timeit: 0.94 -> 0.70 us a click row). A length running past the claims,
    # a reserved flag, a missing URL or bytes left over raise IndexError: a bad token (L8).

    def click_row(
        self, id_hi: int, id_lo: int, received_us: int, agent: AgentFields, client: bytes, claims: bytes,
        is_head: bool, user_agent: bytes | None,
    ) -> tuple[bytes, bytes, bool]:  # fmt: skip
        """The row of a click, its Location (the claims' URL, found on the way), and whether
        it is a machine's (by its user agent, or a honeypot link)."""
        sent_at, link_index = _CLAIMS_SENT_LINK.unpack_from(claims)
        flags = claims[6]
        if flags & _CLICK_FLAGS_REFUSED or flags & 3 == 3:
            raise IndexError("reserved flags")
        end = 8 + claims[7]  # campaign: length byte + UTF-8
        url_at = recipient_end = end + 1 + claims[end]  # recipient: length byte + UTF-8
        if not claims[7] or not claims[end]:
            raise IndexError("an empty id")
        name = message = _NULL
        if flags & 0x18:  # a link name and/or a message id follow
            url_at, name, message = _optional_fields(claims, flags, url_at)
        if url_at >= len(claims):
            raise IndexError("no URL, or a length running past the claims")
        url = claims[url_at:]
        if flags & FLAG_HONEYPOT:
            agent = self.honeypot(is_head, user_agent)
        return b"".join((
            _HEAD.pack(_FIELDS, 16, id_hi, id_lo, 8, received_us - _PG_EPOCH_US), client, agent.fields,
            _SENT_LINK.pack(8, sent_at * 1_000_000 - _PG_EPOCH_US, 4, link_index),
            _LEN3, claims[7:end], _LEN3, claims[end:recipient_end],
            _I32.pack(len(url)), url, name, _PART_FIELDS[flags & 3], message,
        )), url, agent.machine  # fmt: skip

    def open_row(self, id_hi: int, id_lo: int, received_us: int, agent: bytes, client: bytes, claims: bytes) -> bytes:
        (sent_at,) = _CLAIMS_SENT.unpack_from(claims)
        flags = claims[4]
        if flags & OPEN_FLAGS_REFUSED:
            raise IndexError("flags an open must not have")
        end = 6 + claims[5]
        stop = end + 1 + claims[end]
        if not claims[5] or not claims[end]:
            raise IndexError("an empty id")
        recipient_end = stop
        message = _NULL
        if flags:  # a message id follows
            stop, _, message = _optional_fields(claims, flags, stop)
        if stop != len(claims):
            raise IndexError("the lengths do not match the claims")
        return b"".join((
            _HEAD.pack(_FIELDS, 16, id_hi, id_lo, 8, received_us - _PG_EPOCH_US), client, agent,
            _SENT_NO_LINK.pack(8, sent_at * 1_000_000 - _PG_EPOCH_US), _NULL,
            _LEN3, claims[5:end], _LEN3, claims[end:recipient_end], _NULL, _NULL, _NULL, message,
        ))  # fmt: skip

    def row(self, id_hi: int, id_lo: int, received_us: int, kind: int, is_head: bool, user_agent: bytes | None,
            client: bytes, claims: bytes) -> bytes:  # fmt: skip
        """The row of either kind (replays, tests)."""
        agent = self.agent("click" if kind == KIND_CLICK else "open", is_head, user_agent)
        if kind == KIND_CLICK:
            return self.click_row(id_hi, id_lo, received_us, agent, client, claims, is_head, user_agent)[0]
        return self.open_row(id_hi, id_lo, received_us, agent.fields, client, claims)

    def from_event(self, event: RawEvent) -> tuple[bytes, int]:
        """The row of an event recorded by an older version (journal format 1), and its time.
        The time is rounded exactly as PostgreSQL's to_timestamp() rounded it when that version
        wrote the row (after moving to its 2000 epoch): a replay of an event it had committed
        must meet the same primary key, or it would be inserted twice."""
        kind = event.payload[1]  # a version 1 payload: those versions minted no other
        received_us = round((event.received_at - _PG_EPOCH_S) * 1_000_000) + _PG_EPOCH_US
        client = self.client(event.peer, event.forwarded_for)
        row = self.row(event.id >> 64, event.id & 0xFFFF_FFFF_FFFF_FFFF, received_us, kind, event.is_head,
                       event.user_agent, client, v1_claims(event.payload))  # fmt: skip
        return row, received_us


def _optional_fields(claims: bytes, flags: int, at: int) -> tuple[int, bytes, bytes]:
    """The link name and message id fields (int32 length + UTF-8, or NULL) that follow the
    recipient at `at`, and where they end. Raises IndexError on a bad length."""
    name = message = _NULL
    if flags & FLAG_LINK_NAME:
        n = claims[at]
        if not 1 <= n <= MAX_LINK_NAME_BYTES:
            raise IndexError("link name length")
        name = _LEN3 + claims[at : at + 1 + n]
        at += 1 + n
    if flags & FLAG_MESSAGE_ID:
        n = claims[at]
        if not n:
            raise IndexError("message id length")
        message = _LEN3 + claims[at : at + 1 + n]
        at += 1 + n
    return at, name, message


def upgrade_rows(rows: bytes) -> bytes:
    """Rows journaled before links v2 (COLUMNS_V1, journal format 2) as rows of COLUMNS: link
    name and message id NULL, and part `api` for a click (its token was a version 1 one, which
    came from the API, as a version 1 click recorded now is) or NULL for an open. Raises
    ValueError on bytes that are not whole rows."""
    old = struct.pack(">h", len(COLUMNS_V1))
    new = struct.pack(">h", len(COLUMNS))
    out: list[bytes] = []
    for row in split_rows(rows):
        if row[:2] != old:
            raise ValueError(f"a row of {struct.unpack_from('>h', row)[0]} fields in a format 2 frame")
        out += (new, row[2:], _UPGRADED_CLICK_TAIL if _kind_of(row) == b"click" else _TAIL_NULLS)
    return b"".join(out)


def _kind_of(row: bytes) -> bytes:
    """The `kind` field's value of a row (the 4th column: id, occurred_at, ip, kind)."""
    at = 2
    for _ in range(3):
        (length,) = _I32.unpack_from(row, at)
        at += 4 + max(0, length)
    (length,) = _I32.unpack_from(row, at)
    return row[at + 4 : at + 4 + length]


# -- reading rows back (dead letters, tests) -----------------------------------------------------


def split_rows(data: bytes) -> list[bytes]:
    """Cut concatenated rows apart (for bisecting a refused batch). Raises ValueError on bytes
    that are not whole rows."""
    rows = []
    at = 0
    size = len(data)
    while at < size:
        start = at
        (count,) = struct.unpack_from(">h", data, at)
        at += 2
        for _ in range(count):
            (length,) = _I32.unpack_from(data, at)
            at += 4 + max(0, length)
        if at > size:
            raise ValueError("truncated row")
        rows.append(data[start:at])
    return rows


def _decode_value(column: str, value: bytes) -> Any:
    if column == "id":
        return uuid.UUID(bytes=value)
    if column in ("occurred_at", "sent_at"):
        (us,) = struct.unpack(">q", value)
        return dt.datetime(2000, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    if column == "link_index":
        return _I32.unpack(value)[0]
    if column == "is_machine":
        return value == b"\x01"
    if column == "ip":
        _family, bits, _, n = value[:4]
        address = ipaddress.ip_address(value[4 : 4 + n])
        return f"{address}/{bits}"
    return value.decode("utf-8", "replace")


def decode_row(row: bytes) -> dict[str, Any]:
    """A row's values by column (for dead letters, logs and tests)."""
    (count,) = struct.unpack_from(">h", row, 0)
    if count != len(COLUMNS):
        raise ValueError(f"a row of {count} fields, expected {len(COLUMNS)}")
    at = 2
    out: dict[str, Any] = {}
    for column in COLUMNS:
        (length,) = _I32.unpack_from(row, at)
        at += 4
        if length < 0:
            out[column] = None
            continue
        out[column] = _decode_value(column, row[at : at + length])
        at += length
    return out
