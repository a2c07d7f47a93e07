"""`trackd explain EVENT_ID`: an event's evidence and the rules that fired, in words.

The real-time rules are run again on what the event kept (kind, user agent, evidence bits), so the
output also shows when today's rules would judge it differently from the rules that recorded it.
A deferred reason is shown with the neighbouring events of the same recipient that make the
pattern (a burst, an address burst, a honeypot scan), with their times relative to this event.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

import asyncpg

from app.verdicts import evidence, rules
from app.verdicts.networks import Networks

_COLUMNS = """id, occurred_at, kind, campaign_id, recipient_id, link_index, link_name, url, part, message_id,
       ip, user_agent, is_machine, machine_reason, sent_at, evidence, addr_tag"""

# The id is a UUIDv7 made at receipt: its first 48 bits are the receipt time in milliseconds,
# which is occurred_at, so the event is found in its partition by the primary key, not by a
# scan of every partition.
_BY_ID = f"""
SELECT {_COLUMNS} FROM events
WHERE occurred_at >= $2 AND occurred_at < $3 AND id = $1
"""
_BY_ID_ANYWHERE = f"SELECT {_COLUMNS} FROM events WHERE id = $1"
# The same recipient's events around this one: what a deferred rule looked at.
_NEIGHBOURS = """
SELECT id, occurred_at, kind, link_index, addr_tag, is_machine, machine_reason
FROM events
WHERE recipient_id = $1 AND campaign_id = $2 AND occurred_at BETWEEN $3 AND $4
ORDER BY occurred_at, id
LIMIT 50
"""
_NEIGHBOURHOOD = dt.timedelta(seconds=120)


async def find_event(conn: asyncpg.Connection, event_id: uuid.UUID) -> asyncpg.Record | None:
    if event_id.version == 7:
        try:
            at = dt.datetime.fromtimestamp((event_id.int >> 80) / 1000, dt.UTC)
            window = (at - dt.timedelta(seconds=2), at + dt.timedelta(seconds=2))
        except (ValueError, OverflowError):  # a time no event can have (past year 9999)
            window = None
        if window is not None:
            row = await conn.fetchrow(_BY_ID, event_id, *window)
            if row is not None:
                return row
    return await conn.fetchrow(_BY_ID_ANYWHERE, event_id)


def _full_address(ip: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The stored address when it is a whole one (TRACKD_IP_MODE=full); None for a network (the
    default /24 or /48) or none. asyncpg gives an inet as an address or an interface."""
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    if isinstance(ip, ipaddress.IPv4Interface | ipaddress.IPv6Interface) and ip.network.num_addresses == 1:
        return ip.ip
    return None


def _method(bits: int | None) -> str:
    if bits is None:
        return "not kept"
    return "HEAD" if bits & evidence.HEAD else "GET"


def _seconds(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds():+.3f} s"


async def explain(conn: asyncpg.Connection, event_id: uuid.UUID, networks: Networks) -> list[str] | None:
    """The explanation of one event, as lines; None when there is no such event."""
    e = await find_event(conn, event_id)
    if e is None:
        return None
    bits: int | None = e["evidence"]
    kind: str = e["kind"]
    lines = [
        f"event      {e['id']}",
        f"           {kind} at {e['occurred_at'].isoformat()}, campaign {e['campaign_id']!r},"
        f" recipient {e['recipient_id']!r}"
        + (f", link {e['link_index']}" + (f" ({e['link_name']})" if e["link_name"] else "") if kind == "click" else ""),
    ]
    if e["url"]:
        lines.append(f"           url {e['url']}")
    lines.append(f"verdict    {'machine: ' + (e['machine_reason'] or 'machine') if e['is_machine'] else 'person'}")
    lines.append("evidence")
    lines.append(f"  method           {_method(bits)}")
    ua = e["user_agent"]
    lines.append(f"  user agent       {ua!r}" if ua is not None else "  user agent       none")
    ip = e["ip"]
    lines.append(f"  address          {ip if ip is not None else 'not kept (TRACKD_IP_MODE=drop)'}"
                 f"; tag {e['addr_tag'] if e['addr_tag'] is not None else 'none'}")  # fmt: skip
    if bits is None:
        lines.append("  headers          not kept (recorded before evidence was kept)")
    else:
        seen = evidence.names(bits & ~evidence.HEAD)
        none = "no Accept-Language, no Sec-Fetch-*, no prefetch header"
        lines.append(f"  seen             {', '.join(seen) if seen else none}")
    if e["sent_at"] is not None:
        lines.append(f"  since the send   {_seconds(e['occurred_at'] - e['sent_at'])}")
    full = _full_address(ip)
    if full is not None:
        for entry in networks.entries_for(full, kind):
            lines.append(f"  network list     {entry.network} {entry.label} ({entry.certainty}, {entry.scope};"
                         f" {entry.source}, {entry.date}; {entry.origin})")  # fmt: skip
    lines.append("rules that fired")
    recorded = [c for c in (e["machine_reason"] or "").split(",") if c] if e["is_machine"] else []
    for code in recorded or ["(none: a person)"]:
        lines.append(f"  {code:<18} {rules.REASONS.get(code, '')}")
    now = list(rules.reasons(kind, (bits or 0) & evidence.REASON_BITS, e["user_agent"]))
    if bits is not None:
        realtime = [c for c in recorded if c not in rules.DEFERRED]
        if now != realtime:
            lines.append(f"  note: today's real-time rules give {','.join(now) or 'a person'} for this evidence")
    if any(c in rules.DEFERRED for c in recorded):
        lines.append("the recipient's events around it (what the deferred rules saw)")
        rows = await conn.fetch(_NEIGHBOURS, e["recipient_id"], e["campaign_id"],
                                e["occurred_at"] - _NEIGHBOURHOOD, e["occurred_at"] + _NEIGHBOURHOOD)  # fmt: skip
        for n in rows:
            mark = "->" if n["id"] == e["id"] else "  "
            link = f" link {n['link_index']}" if n["kind"] == "click" else ""
            verdict = (n["machine_reason"] or "machine") if n["is_machine"] else "person"
            lines.append(f"  {mark} {_seconds(n['occurred_at'] - e['occurred_at']):>12} {n['kind']:<5}{link:<8}"
                         f" tag {n['addr_tag'] if n['addr_tag'] is not None else '-':>6}  {verdict}")  # fmt: skip
    return lines
