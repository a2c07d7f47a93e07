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

from app.events import RawEvent, RowMaker
from app.settings import Settings
from app.verdicts import evidence
from app.verdicts.evidence import AddressTags
from app.verdicts.networks import Match, Networks
from app.verdicts.rules import machine_reason
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
    "evidence", "addr_tag",
)  # fmt: skip
# Rows journaled before links v2 (journal format 2) end at `url`, rows journaled before evidence
# was kept (format 3) at `message_id`: upgrade_rows() adds the rest.
COLUMNS_V1 = COLUMNS[:12]
COLUMNS_V2 = COLUMNS[:15]
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
_NO_EVIDENCE = _NULL * 2  # evidence, addr_tag of a row from before they were kept
# link_name, part, message_id (and no evidence) of an open from before links v2
_TAIL_NULLS = _NULL * 3 + _NO_EVIDENCE
_UPGRADED_CLICK_TAIL = _NULL + _PART_FIELDS[0] + _NULL + _NO_EVIDENCE  # a click from before links v2: part api
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


class Client(NamedTuple):
    """What an event keeps of its client, made once per distinct (peer, X-Forwarded-For)."""

    field: bytes  # the `ip` field (anonymised by TRACKD_IP_MODE)
    tag: bytes  # the `addr_tag` field: a few keyed bits of the full address (evidence.AddressTags)
    open_bits: int  # evidence bits of the address's network list entries for an open ...
    click_bits: int  # ... and for a click


def _agent_fields(kind: str, bits: int, user_agent: bytes | None) -> AgentFields:
    """Cached by RowEncoder.agent: the rules run once per distinct user agent and evidence bits
    that decide (evidence.REASON_BITS). A honeypot link's click is a machine's whatever its user
    agent says (no person sees the link)."""
    decoded = user_agent.decode("utf-8", "replace") if user_agent else None
    reason = machine_reason(kind, bits, decoded)
    # PostgreSQL text is valid UTF-8 without NUL: undecodable bytes and NUL become U+FFFD.
    ua = decoded.replace("\x00", "\ufffd") if decoded is not None else None
    machine = reason is not None
    fields = _text(kind) + _text(ua) + b"\x00\x00\x00\x01" + (b"\x01" if machine else b"\x00") + _text(reason)
    return AgentFields(fields, machine)


class RowEncoder:
    """Makes row bytes; holds the privacy settings (through RowMaker) and the caches."""

    def __init__(self, settings: Settings, networks: Networks | None = None, tag_key: bytes = b"") -> None:
        self.maker = RowMaker(settings)
        self.networks = networks
        self.tags = AddressTags(tag_key)
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

    def set_networks(self, networks: Networks | None) -> None:
        """Use other network lists from now on (SIGHUP): the cached clients are judged again."""
        self.networks = networks
        self._client_cached.cache_clear()

    def _client(self, peer: str | None, forwarded_for: bytes | None) -> Client:
        if forwarded_for is not None and len(forwarded_for) > _MAX_CACHED_XFF:
            return self._client_field(peer, forwarded_for)
        return self._client_cached(peer, forwarded_for)

    def _client_field(self, peer: str | None, forwarded_for: bytes | None) -> Client:
        """The address through trusted proxies, judged against the network lists and tagged in
        full, then kept as TRACKD_IP_MODE says (the full address goes no further)."""
        address = self.maker.client_address(peer, forwarded_for)
        if address is not None and address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        open_bits = click_bits = 0
        if address is not None and self.networks is not None:
            open_bits = _network_bits(self.networks.match(address, "open"))
            click_bits = _network_bits(self.networks.match(address, "click"))
        text = self.maker.ip_text(address)
        # The tag's bits depend on what the row keeps of the address: the two never name it.
        return Client(inet_field(text), self.tags.field(address, text), open_bits, click_bits)

    # The two row makers of the hot path, from a token's claims (app.tokens: the version 2
    # plaintext layout). Their fields go into the row as they are: a one-byte length becomes an
    # int32 length by three zero bytes before it, so the ids are copied, never decoded. Written
    # out per kind, with one join and no helper calls: this is about a quarter of trackd's own
    # work per request (timeit: 0.94 -> 0.70 us a click row). A length running past the claims,
    # a reserved flag, a missing URL or bytes left over raise IndexError: a bad token (L8).

    def click_row(
        self, id_hi: int, id_lo: int, received_us: int, agent: AgentFields, client: Client, bits: int,
        claims: bytes, user_agent: bytes | None,
    ) -> tuple[bytes, bytes, bool]:  # fmt: skip
        """The row of a click, its Location (the claims' URL, found on the way), and whether
        it is a machine's. `agent` was made for `bits` (evidence, this kind's network bits
        included); a honeypot link adds its bit and is judged again."""
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
            bits |= evidence.HONEYPOT
            agent = self.agent("click", bits & evidence.REASON_BITS, user_agent)
        return b"".join((
            _HEAD.pack(_FIELDS, 16, id_hi, id_lo, 8, received_us - _PG_EPOCH_US), client.field, agent.fields,
            _SENT_LINK.pack(8, sent_at * 1_000_000 - _PG_EPOCH_US, 4, link_index),
            _LEN3, claims[7:end], _LEN3, claims[end:recipient_end],
            _I32.pack(len(url)), url, name, _PART_FIELDS[flags & 3], message, evidence.FIELDS[bits],
            client.tag,
        )), url, agent.machine  # fmt: skip

    def open_row(
        self, id_hi: int, id_lo: int, received_us: int, agent: bytes, client: Client, bits: int, claims: bytes
    ) -> bytes:
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
            _HEAD.pack(_FIELDS, 16, id_hi, id_lo, 8, received_us - _PG_EPOCH_US), client.field, agent,
            _SENT_NO_LINK.pack(8, sent_at * 1_000_000 - _PG_EPOCH_US), _NULL,
            _LEN3, claims[5:end], _LEN3, claims[end:recipient_end], _NULL, _NULL, _NULL, message,
            evidence.FIELDS[bits], client.tag,
        ))  # fmt: skip

    def row(self, id_hi: int, id_lo: int, received_us: int, kind: int, bits: int, user_agent: bytes | None,
            client: Client, claims: bytes) -> bytes:  # fmt: skip
        """The row of either kind (replays, tests): `bits` are the request's evidence bits; the
        client's network bits for the kind are added here."""
        if kind == KIND_CLICK:
            bits |= client.click_bits
            agent = self.agent("click", bits & evidence.REASON_BITS, user_agent)
            return self.click_row(id_hi, id_lo, received_us, agent, client, bits, claims, user_agent)[0]
        bits |= client.open_bits
        agent = self.agent("open", bits & evidence.REASON_BITS, user_agent)
        return self.open_row(id_hi, id_lo, received_us, agent.fields, client, bits, claims)

    def from_event(self, event: RawEvent) -> tuple[bytes, int]:
        """The row of an event recorded by an older version (journal format 1), and its time.
        The time is rounded exactly as PostgreSQL's to_timestamp() rounded it when that version
        wrote the row (after moving to its 2000 epoch): a replay of an event it had committed
        must meet the same primary key, or it would be inserted twice."""
        kind = event.payload[1]  # a version 1 payload: those versions minted no other
        received_us = round((event.received_at - _PG_EPOCH_S) * 1_000_000) + _PG_EPOCH_US
        client = self.client(event.peer, event.forwarded_for)
        # A format 1 record kept the method, address and user agent: its evidence is what those
        # show (the HEAD and network bits), the headers it did not keep read as absent.
        row = self.row(event.id >> 64, event.id & 0xFFFF_FFFF_FFFF_FFFF, received_us, kind,
                       evidence.HEAD if event.is_head else 0, event.user_agent, client,
                       v1_claims(event.payload))  # fmt: skip
        return row, received_us


def _network_bits(found: Match) -> int:
    return (evidence.NETWORK_CERTAIN if found.certain else 0) | (evidence.NETWORK_PROBABLE if found.probable else 0)


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
    came from the API, as a version 1 click recorded now is) or NULL for an open; evidence and
    address tag NULL (not kept then). Raises ValueError on bytes that are not whole rows."""
    old = struct.pack(">h", len(COLUMNS_V1))
    new = struct.pack(">h", len(COLUMNS))
    out: list[bytes] = []
    for row in split_rows(rows):
        if row[:2] != old:
            raise ValueError(f"a row of {struct.unpack_from('>h', row)[0]} fields in a format 2 frame")
        out += (new, row[2:], _UPGRADED_CLICK_TAIL if _kind_of(row) == b"click" else _TAIL_NULLS)
    return b"".join(out)


def upgrade_rows_v2(rows: bytes) -> bytes:
    """Rows journaled before evidence was kept (COLUMNS_V2, journal format 3) as rows of
    COLUMNS: evidence and address tag NULL. Raises ValueError on bytes that are not whole rows."""
    old = struct.pack(">h", len(COLUMNS_V2))
    new = struct.pack(">h", len(COLUMNS))
    out: list[bytes] = []
    for row in split_rows(rows):
        if row[:2] != old:
            raise ValueError(f"a row of {struct.unpack_from('>h', row)[0]} fields in a format 3 frame")
        out += (new, row[2:], _NO_EVIDENCE)
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
    if column in ("evidence", "addr_tag"):
        return struct.unpack(">h", value)[0]
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
