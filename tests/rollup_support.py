"""Events made up for the rollup tests, inserted the way the writer inserts them (one statement
per batch, so the trigger sees a batch at a time), and the check every such test ends with: the
rollups equal a recomputation from `events` (trackd_rollup_drift is empty)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import asyncpg

BASE = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)  # in the past: erasure refuses what happened before it
REASONS = ("head", "prefetch", "scanner", "honeypot")

INSERT = """
INSERT INTO events (id, occurred_at, kind, campaign_id, recipient_id, link_index, url, is_machine,
                    machine_reason, sent_at, link_name, part)
SELECT id, occurred_at, kind, campaign_id, recipient_id, link_index,
       CASE WHEN link_index IS NULL THEN NULL ELSE 'https://example.com/' || link_index END,
       is_machine, machine_reason, sent_at,
       CASE WHEN link_index IS NULL THEN NULL ELSE 'link-' || link_index END,
       CASE WHEN link_index IS NULL THEN NULL ELSE 'html' END
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bool[],
            $8::text[], $9::timestamptz[])
     AS u(id, occurred_at, kind, campaign_id, recipient_id, link_index, is_machine, machine_reason, sent_at)
ORDER BY occurred_at, id
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class Ev:
    campaign: str
    kind: str
    recipient: str
    link: int | None
    at: dt.datetime
    sent: dt.datetime | None
    machine: bool
    reason: str | None
    id: uuid.UUID = field(default_factory=uuid.uuid4)


async def insert(conn: asyncpg.Connection, events: list[Ev]) -> str:
    """One INSERT ... ON CONFLICT DO NOTHING for the whole list (like the writer's replay path)."""
    days = sorted({e.at.date() for e in events})
    if days:
        await conn.execute("SELECT trackd_ensure_partitions($1::date[])", days)
    return await conn.execute(
        INSERT,
        [e.id for e in events], [e.at for e in events], [e.kind for e in events],
        [e.campaign for e in events], [e.recipient for e in events], [e.link for e in events],
        [e.machine for e in events], [e.reason for e in events], [e.sent for e in events],
    )  # fmt: skip


async def insert_counted(conn: asyncpg.Connection, events: list[Ev]) -> None:
    """`insert` in a transaction that asks to be counted per second, as trackd's writer does."""
    async with conn.transaction():
        await conn.execute("SET LOCAL trackd.per_second = 'trigger'")
        await insert(conn, events)


async def drift(conn: asyncpg.Connection, campaign: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM trackd_rollup_drift($1)", campaign)


async def assert_exact(conn: asyncpg.Connection, campaign: str | None = None) -> None:
    rows = await drift(conn, campaign)
    assert not rows, "rollups differ from events:\n" + "\n".join(str(dict(r)) for r in rows[:20])
