"""The read side of the analytics API (#13): the statements behind stats, links, series, the event
feed and a recipient's engagement, and the small functions that turn their rows into answers.

Every statement reads the rollups of migrations 007/008 (summed over `slot`) or walks an index;
none scans a campaign's events. The routes (app.api) stay thin: they validate with the parsers
here, run the named statement and hand the rows to the matching function.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncpg import Record
from pydantic import BaseModel, ConfigDict, Field

# Bounds in seconds of the time-to-first buckets 0..9 (bucket 10: longer): trackd_tto_bounds()
# of migration 007, repeated here so that a stats answer needs no extra round trip (a test
# checks that both agree).
TTO_BOUNDS: tuple[int, ...] = (60, 300, 900, 3600, 7200, 21600, 43200, 86400, 172800, 604800)
KINDS = {"open": "opens", "click": "clicks"}

FEED_DEFAULT_LIMIT = 1000
FEED_MAX_LIMIT = 10_000
# A campaign's feed reads at most this many of its batches per request. Their rows are found
# through events_feed_idx (xid, id), which does not know the campaign: a batch's rows of other
# campaigns are read and dropped, so this bounds a request's work to about this many batches. A
# quiet campaign among busy ones (one event per batch) gets up to this many events per request,
# and its cursor still moves on.
FEED_MAX_BATCHES = 100
RECIPIENT_MAX_ROWS = 10_000


class BadQuery(ValueError):
    """Input the API refuses, answered as an APIError with `status` and `code` (app.main)."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.status = code, status


# --- stats -----------------------------------------------------------------------------------

# One statement, so that every number comes from one snapshot: rows of four kinds (`part`),
# at most a few hundred for a campaign (16 slots x kinds x verdicts / links / buckets).
STATS_SQL = """
SELECT 'totals' AS part, kind, link_index AS idx, is_machine, reason, sum(events)::bigint AS n,
       NULL::bigint AS h, extract(epoch FROM min(first_at))::float8 AS first_at,
       extract(epoch FROM max(last_at))::float8 AS last_at
FROM rollup_totals WHERE campaign_id = $1 AND link_index = -1 GROUP BY kind, link_index, is_machine, reason
UNION ALL
SELECT 'uniques', kind, link_index, NULL, NULL, sum(uniques)::bigint, sum(human_uniques)::bigint, NULL, NULL
FROM rollup_uniques WHERE campaign_id = $1 GROUP BY kind, link_index
UNION ALL
SELECT 'time_to_first', kind, bucket, NULL, NULL, sum(recipients)::bigint, sum(human_recipients)::bigint, NULL, NULL
FROM rollup_time_to_first WHERE campaign_id = $1 GROUP BY kind, bucket
UNION ALL
SELECT 'sent', NULL, NULL, NULL, NULL, sum(messages)::bigint, count(*), NULL, NULL
FROM campaign_sends WHERE campaign_id = $1
"""


class TimeToFirstBucket(BaseModel):
    le_seconds: int | None = Field(description="upper bound (inclusive) of the delay; null: over a week")
    recipients: int = Field(description="recipients whose first event of the kind came within this delay")
    human_recipients: int = Field(description="the same for the first event judged a person's")


class TimeToFirst(BaseModel):
    buckets: list[TimeToFirstBucket]
    recipients: int = Field(description="recipients in the histogram (their links carried sent_at)")
    human_recipients: int


class CampaignStats(BaseModel):
    """A campaign's numbers, all exact, from the rollups. `human_*`: events judged a person's
    (final verdicts); unique = distinct recipients."""

    campaign_id: str
    opens: int = Field(description="every open recorded")
    unique_opens: int = Field(description="recipients with at least one open")
    clicks: int = Field(description="every click recorded")
    unique_clicks: int = Field(description="recipients with at least one click (unique clickers)")
    human_opens: int
    human_unique_opens: int = Field(description="recipients with at least one open judged a person's")
    human_clicks: int
    human_unique_clicks: int = Field(description="recipients with at least one click judged a person's")
    machine_opens: int
    machine_clicks: int
    first_at: float | None = Field(description="unix time of the first event recorded (not moved by an erasure)")
    last_at: float | None = Field(description="unix time of the last event recorded (not moved by an erasure)")
    sent: int | None = Field(description="messages sent, as reported to POST .../sends; null if never reported")
    open_rate: float | None = Field(description="human_unique_opens / sent; null when sent is unknown or 0")
    click_rate: float | None = Field(description="human_unique_clicks / sent; null when sent is unknown or 0")
    click_to_open_rate: float | None = Field(
        description="human_unique_clicks / human_unique_opens (a click does not imply an open, so it can exceed 1);"
        " null without human openers"
    )
    unique_link_clicks: int = Field(description="sum over links of the recipients who clicked that link")
    machine: dict[str, dict[str, int]] = Field(
        description='machine events by reason code (docs/engagement.md): {"opens": {"apple_mpp": n, ...},'
        ' "clicks": {"burst": n, ...}}; an event judged by several rules counts under each, so a kind\'s'
        " codes can add up to more than its machine_* total"
    )
    time_to_first_open: TimeToFirst = Field(description="histogram of first open time - sent_at, per recipient")
    time_to_first_click: TimeToFirst


def _ratio(numerator: int, denominator: int | None) -> float | None:
    return None if not denominator else numerator / denominator


def stats(campaign_id: str, rows: Iterable[Record]) -> dict[str, Any]:
    """The answer of GET /v1/campaigns/{id}/stats from the rows of STATS_SQL."""
    events = {(k, m): 0 for k in KINDS for m in (False, True)}
    machine: dict[str, dict[str, int]] = {plural: {} for plural in KINDS.values()}
    uniques: dict[str, tuple[int, int]] = {}
    unique_link_clicks = 0
    tto = {k: [[0, 0] for _ in range(len(TTO_BOUNDS) + 1)] for k in KINDS}
    first: list[float] = []
    last: list[float] = []
    sent: int | None = None
    for r in rows:
        kind, part = r["kind"], r["part"]
        if part == "totals" and kind in KINDS:
            events[kind, r["is_machine"]] += r["n"]
            if r["is_machine"] and r["n"]:
                # An event judged by several rules (`burst,scan`) counts under each of them.
                reasons = machine[KINDS[kind]]
                for code in r["reason"].split(","):
                    reasons[code] = reasons.get(code, 0) + r["n"]
            if r["n"]:
                first += [r["first_at"]] if r["first_at"] is not None else []
                last += [r["last_at"]] if r["last_at"] is not None else []
        elif part == "uniques" and r["idx"] == -1:
            uniques[kind] = (r["n"], r["h"])
        elif part == "uniques" and kind == "click":
            unique_link_clicks += r["n"]
        elif part == "time_to_first" and kind in KINDS and 0 <= r["idx"] < len(TTO_BOUNDS) + 1:
            tto[kind][r["idx"]] = [r["n"], r["h"]]
        elif part == "sent" and r["h"]:
            sent = r["n"]
    opens_u, opens_hu = uniques.get("open", (0, 0))
    clicks_u, clicks_hu = uniques.get("click", (0, 0))
    return {
        "campaign_id": campaign_id,
        "opens": events["open", False] + events["open", True],
        "unique_opens": opens_u,
        "clicks": events["click", False] + events["click", True],
        "unique_clicks": clicks_u,
        "human_opens": events["open", False],
        "human_unique_opens": opens_hu,
        "human_clicks": events["click", False],
        "human_unique_clicks": clicks_hu,
        "machine_opens": events["open", True],
        "machine_clicks": events["click", True],
        "first_at": min(first) if first else None,
        "last_at": max(last) if last else None,
        "sent": sent,
        "open_rate": _ratio(opens_hu, sent),
        "click_rate": _ratio(clicks_hu, sent),
        "click_to_open_rate": _ratio(clicks_hu, opens_hu),
        "unique_link_clicks": unique_link_clicks,
        "machine": {plural: dict(sorted(reasons.items())) for plural, reasons in machine.items()},
        "time_to_first_open": _time_to_first(tto["open"]),
        "time_to_first_click": _time_to_first(tto["click"]),
    }


def _time_to_first(buckets: list[list[int]]) -> dict[str, Any]:
    bounds: list[int | None] = [*TTO_BOUNDS, None]
    return {
        "buckets": [
            {"le_seconds": b, "recipients": n, "human_recipients": h} for b, (n, h) in zip(bounds, buckets, strict=True)
        ],
        "recipients": sum(n for n, _ in buckets),
        "human_recipients": sum(h for _, h in buckets),
    }


# --- links -----------------------------------------------------------------------------------

LINKS_SQL = """
SELECT l.link_index AS index, l.link_name AS name, l.url,
       coalesce(t.clicks, 0)::bigint AS clicks, coalesce(t.human_clicks, 0)::bigint AS human_clicks,
       coalesce(u.uniques, 0)::bigint AS unique_clicks,
       coalesce(u.human_uniques, 0)::bigint AS human_unique_clicks
FROM campaign_links l
LEFT JOIN (SELECT link_index, sum(events) AS clicks, sum(events) FILTER (WHERE NOT is_machine) AS human_clicks
           FROM rollup_totals WHERE campaign_id = $1 AND kind = 'click' AND link_index >= 0
           GROUP BY link_index) t USING (link_index)
LEFT JOIN (SELECT link_index, sum(uniques) AS uniques, sum(human_uniques) AS human_uniques
           FROM rollup_uniques WHERE campaign_id = $1 AND kind = 'click' AND link_index >= 0
           GROUP BY link_index) u USING (link_index)
WHERE l.campaign_id = $1
ORDER BY l.link_index
"""


def links(campaign_id: str, rows: Iterable[Record]) -> dict[str, Any]:
    """GET /v1/campaigns/{id}/links: every link clicked at least once (by index; name and URL as
    first recorded), with its clicks and unique clickers, all and people only. A link whose
    clicks were all erased stays, with zeros."""
    return {
        "campaign_id": campaign_id,
        "links": [dict(r) for r in rows],
    }


# --- series ----------------------------------------------------------------------------------

_SERIES_TEMPLATE = """
SELECT to_char(start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS start, opens, unique_opens, clicks,
       unique_clicks, human_opens, human_clicks, human_unique_opens, human_unique_clicks
FROM (
    SELECT {start} AS start,
           coalesce(sum(events::int4) FILTER (WHERE kind = 'open'), 0) AS opens,
           coalesce(sum(uniques::int4) FILTER (WHERE kind = 'open'), 0) AS unique_opens,
           coalesce(sum(events::int4) FILTER (WHERE kind = 'click'), 0) AS clicks,
           coalesce(sum(uniques::int4) FILTER (WHERE kind = 'click'), 0) AS unique_clicks,
           coalesce(sum(human_events::int4) FILTER (WHERE kind = 'open'), 0) AS human_opens,
           coalesce(sum(human_events::int4) FILTER (WHERE kind = 'click'), 0) AS human_clicks,
           coalesce(sum(human_uniques::int4) FILTER (WHERE kind = 'open'), 0) AS human_unique_opens,
           coalesce(sum(human_uniques::int4) FILTER (WHERE kind = 'click'), 0) AS human_unique_clicks
    FROM {table}
    WHERE campaign_id = $1 AND bucket >= $2 AND bucket < $3
    GROUP BY 1
    HAVING sum(events::int4) <> 0
) buckets
ORDER BY buckets.start
"""
# Written for a 1,440-bucket answer in a few milliseconds: each row (one slot's minute or hour of
# one kind) fits an int4, whose sum PostgreSQL keeps in a bigint (a bigint's sum is a numeric, several
# times slower); `start` is made ISO 8601 by PostgreSQL, so Python only passes rows on.
# Minutes and hours are the buckets the rows already have: grouped in the primary key's order,
# no sort; days are hours truncated (UTC).
SERIES_MINUTES_SQL = _SERIES_TEMPLATE.format(table="rollup_minutes", start="bucket")
# interval=hour and interval=day: the hours, grouped by UTC day for the latter.
SERIES_HOURS_SQL = _SERIES_TEMPLATE.format(table="rollup_hours", start="bucket")
SERIES_DAYS_SQL = _SERIES_TEMPLATE.format(table="rollup_hours", start="date_trunc('day', bucket, 'UTC')")


@dataclass(frozen=True)
class Interval:
    name: str
    step: dt.timedelta
    default_span: dt.timedelta
    max_span: dt.timedelta  # what bounds the answer: at most max_span / step buckets
    sql: str


INTERVALS = {
    "minute": Interval("minute", dt.timedelta(minutes=1), dt.timedelta(days=1), dt.timedelta(days=31),
                       SERIES_MINUTES_SQL),
    "hour": Interval("hour", dt.timedelta(hours=1), dt.timedelta(days=31), dt.timedelta(days=366), SERIES_HOURS_SQL),
    "day": Interval("day", dt.timedelta(days=1), dt.timedelta(days=366), dt.timedelta(days=3660), SERIES_DAYS_SQL),
}  # fmt: skip


@dataclass(frozen=True)
class Window:
    interval: Interval
    since: dt.datetime  # inclusive, on a bucket boundary
    until: dt.datetime  # exclusive, on a bucket boundary


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def instant(name: str, value: str | float | None, default: float) -> dt.datetime:
    """A query parameter given as unix seconds or an ISO 8601 time (UTC when it names no zone)."""
    if value is None:
        seconds = default
    else:
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(str(value))
            except ValueError:
                raise BadQuery("invalid_request", f"{name} must be unix seconds or an ISO 8601 time") from None
            aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            seconds = (aware - _EPOCH).total_seconds()
    if not (math.isfinite(seconds) and 0 <= seconds < 2**32):
        raise BadQuery("invalid_request", f"{name} must be unix seconds between 0 and 2^32")
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC)


def _floor(at: dt.datetime, step: dt.timedelta) -> dt.datetime:
    return _EPOCH + (at - _EPOCH) // step * step


def series_window(interval: str, since: str | None, until: str | None, now: float) -> Window:
    """The buckets asked for: since rounded down and until rounded up to whole buckets (defaults:
    until now, since the interval's default span before until), at most the interval's span."""
    spec = INTERVALS.get(interval)
    if spec is None:
        raise BadQuery("invalid_request", f"interval must be one of {', '.join(INTERVALS)}")
    end = instant("until", until, now)
    start = instant("since", since, max(0.0, (end - spec.default_span - _EPOCH).total_seconds()))
    if start > end:
        raise BadQuery("invalid_range", "since must not be after until")
    start, end_floor = _floor(start, spec.step), _floor(end, spec.step)
    end = end_floor if end_floor == end else end_floor + spec.step
    if end - start > spec.max_span:
        raise BadQuery("invalid_range", f"interval={interval} covers at most {spec.max_span.days} days per request")
    return Window(spec, start, end)


def series_args(campaign_id: str, window: Window) -> tuple[object, ...]:
    return campaign_id, window.since, window.until


def iso(at: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as every time in the analytics answers is given."""
    if at is None:
        return None
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def series(campaign_id: str, window: Window, rows: Iterable[Record]) -> dict[str, Any]:
    """GET /v1/campaigns/{id}/series: one entry per bucket with events, in time order. unique_* are
    the recipients whose first event (human_unique_*: first person's event) of the kind falls in
    the bucket, so that buckets add up to the campaign's uniques."""
    return {
        "campaign_id": campaign_id,
        "interval": window.interval.name,
        "since": iso(window.since),
        "until": iso(window.until),
        "series": [dict(r) for r in rows],  # start (ISO 8601) and the counts, as selected
    }


# --- the event feed --------------------------------------------------------------------------

# A position in the feed's order (xid, id): version byte, xid (8 bytes), id (16 bytes), base64url.
_CURSOR_VERSION = 1
_CURSOR_BYTES = 25
START = (0, uuid.UUID(int=0))
_LAST_ID = uuid.UUID(int=2**128 - 1)


def encode_cursor(xid: int, event_id: uuid.UUID) -> str:
    raw = bytes((_CURSOR_VERSION,)) + xid.to_bytes(8, "big") + event_id.bytes
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None) -> tuple[int, uuid.UUID]:
    """The position after which the feed goes on (the start without a cursor)."""
    if cursor is None:
        return START
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _CURSOR_BYTES or raw[0] != _CURSOR_VERSION or encode_cursor(*_split(raw)) != cursor:
        raise BadQuery("invalid_cursor", "after must be a cursor given as `next` by GET /v1/events")
    return _split(raw)


def _split(raw: bytes) -> tuple[int, uuid.UUID]:
    return int.from_bytes(raw[1:9], "big"), uuid.UUID(bytes=raw[9:25])


def feed_limit(limit: int | None) -> int:
    if limit is None:
        return FEED_DEFAULT_LIMIT
    if not 1 <= limit <= FEED_MAX_LIMIT:
        raise BadQuery("invalid_request", f"limit must be between 1 and {FEED_MAX_LIMIT}")
    return limit


# Only rows of transactions older than every one still running (pg_snapshot_xmin of this
# statement's snapshot) are handed out: they are all visible to it, and no transaction can add a
# row behind them later, so a cursor once given never skips a row that commits afterwards.
_EVENT_COLUMNS = """e.xid::text AS xid, e.id, e.occurred_at, e.kind, e.campaign_id, e.recipient_id, e.link_index,
       e.link_name, e.url, e.part, e.message_id, e.is_machine, e.machine_reason, e.sent_at, e.user_agent,
       abbrev(e.ip) AS ip"""

# All events: a range scan of events_feed_idx (xid, id) in every partition, merged in order.
FEED_SQL = f"""
SELECT {_EVENT_COLUMNS}
FROM events e
WHERE (e.xid, e.id) > ($1::text::xid8, $2::uuid)
  AND e.xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
ORDER BY e.xid, e.id
LIMIT $3
"""

# One campaign: its next batches (inserting transactions) from campaign_batches' primary key...
FEED_BATCHES_SQL = """
SELECT b.xid::text AS xid, b.day
FROM campaign_batches b
WHERE b.campaign_id = $1 AND b.xid >= $2::text::xid8
  AND b.xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
ORDER BY b.xid
LIMIT $3
"""

# ... then their rows through events_feed_idx. `day` is the UTC day of the batch's first event of
# the campaign: partitions before it are pruned (a day of slack for a writer session that was not
# in UTC when the trigger took the date).
FEED_CAMPAIGN_SQL = f"""
SELECT {_EVENT_COLUMNS}
FROM events e
WHERE e.xid = ANY($2::text[]::xid8[]) AND e.campaign_id = $1
  AND (e.xid, e.id) > ($3::text::xid8, $4::uuid)
  AND e.occurred_at >= ($5::date - 1)::timestamp AT TIME ZONE 'UTC'
ORDER BY e.xid, e.id
LIMIT $6
"""


def feed_batches_args(campaign_id: str, after: tuple[int, uuid.UUID], limit: int) -> tuple[object, ...]:
    return campaign_id, str(after[0]), min(limit + 1, FEED_MAX_BATCHES)


def feed_campaign_args(campaign_id: str, batches: Sequence[Record], after: tuple[int, uuid.UUID],
                       limit: int) -> tuple[object, ...]:  # fmt: skip
    return (campaign_id, [b["xid"] for b in batches], str(after[0]), after[1],
            min(b["day"] for b in batches), limit)  # fmt: skip


def feed(rows: Sequence[Record], after: tuple[int, uuid.UUID], limit: int,
         batches: Sequence[Record] | None = None) -> dict[str, Any]:  # fmt: skip
    """GET /v1/events: the events after the cursor in (xid, id) order, and `next`, the cursor to
    resume from: the last event's, or the one given when there is nothing new. For one campaign,
    when fewer than `limit` rows came, every row of the batches read was handed out: `next` then
    moves past the last of them, so that batches whose events were all erased cannot hold the
    feed in place."""
    position = after
    if rows:
        position = (int(rows[-1]["xid"]), rows[-1]["id"])
    if batches and len(rows) < limit and (rows or int(batches[-1]["xid"]) > after[0]):
        position = max(position, (int(batches[-1]["xid"]), _LAST_ID))
    return {"events": [_event(r) for r in rows], "next": encode_cursor(*position)}


def _event(r: Record) -> dict[str, Any]:
    return {
        "id": str(r["id"]), "occurred_at": iso(r["occurred_at"]), "kind": r["kind"], "campaign_id": r["campaign_id"],
        "recipient_id": r["recipient_id"], "link_index": r["link_index"], "link_name": r["link_name"],
        "url": r["url"], "part": r["part"], "message_id": r["message_id"], "is_machine": r["is_machine"],
        "machine_reason": r["machine_reason"], "sent_at": iso(r["sent_at"]), "user_agent": r["user_agent"],
        "ip": r["ip"],
    }  # fmt: skip


# --- sends -----------------------------------------------------------------------------------


class SendsReport(BaseModel):
    """POST /v1/campaigns/{id}/sends: `messages` went out. A retried report with the same
    `report_id` counts once; without one, every report counts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # At most a trillion a report: the sum of many must still fit a bigint (no 503 for a typo).
    messages: int = Field(ge=0, le=10**12, description="messages sent in this report (at most 10^12)")
    report_id: str | None = Field(default=None, min_length=1, max_length=255,
                                  description="the sender's id of this report; default a new one")  # fmt: skip


# The report, once per (campaign, report_id), and the campaign's total after it. The new row is
# not visible to the same statement's sum, so it is added from the insert's RETURNING.
SENDS_SQL = """
WITH ins AS (
    INSERT INTO campaign_sends (campaign_id, report_id, messages) VALUES ($1, $2, $3)
    ON CONFLICT (campaign_id, report_id) DO NOTHING
    RETURNING messages
)
SELECT (SELECT count(*) FROM ins) AS recorded,
       (coalesce((SELECT sum(messages) FROM campaign_sends WHERE campaign_id = $1), 0)
        + coalesce((SELECT sum(messages) FROM ins), 0))::bigint AS sent
"""


def sends(campaign_id: str, report_id: str, row: Record) -> dict[str, Any]:
    return {"campaign_id": campaign_id, "report_id": report_id, "sent": row["sent"], "recorded": bool(row["recorded"])}


# --- recipients ------------------------------------------------------------------------------

ERASE_SQL = "SELECT trackd_erase_recipient($1) AS erased_events"

# The recipient's touch rows (recipient_touch_recipient_idx): one per campaign, kind and link they
# engaged with (-1: the campaign as a whole), with first / first person's event and sent_at, kept
# as long as the rollups; and their counts and last event from their stored events
# (events_recipient_idx), which retention drops.
RECIPIENT_SQL = """
WITH touch AS (
    SELECT campaign_id, kind, link_index, first_at, first_human_at, sent_at
    FROM recipient_touch WHERE recipient_id = $1
    ORDER BY campaign_id, kind, link_index LIMIT $2
),
counted AS (
    SELECT e.campaign_id, e.kind, l.link AS link_index, count(*) AS events,
           count(*) FILTER (WHERE NOT e.is_machine) AS human_events, max(e.occurred_at) AS last_at
    FROM events e CROSS JOIN LATERAL (VALUES (-1), (e.link_index)) AS l(link)
    WHERE e.recipient_id = $1 AND l.link IS NOT NULL
    GROUP BY 1, 2, 3
)
SELECT t.campaign_id, t.kind, t.link_index, coalesce(c.events, 0) AS events,
       coalesce(c.human_events, 0) AS human_events, t.first_at, t.first_human_at, c.last_at, t.sent_at,
       l.link_name, l.url, (SELECT erased_at FROM erased_recipients WHERE recipient_id = $1) AS erased_at
FROM (SELECT NULL) AS one
LEFT JOIN touch t ON true
LEFT JOIN counted c USING (campaign_id, kind, link_index)
LEFT JOIN campaign_links l ON l.campaign_id = t.campaign_id AND l.link_index = t.link_index
ORDER BY t.campaign_id, t.kind, t.link_index
"""


def recipient_args(recipient_id: str) -> tuple[object, ...]:
    return recipient_id, RECIPIENT_MAX_ROWS + 1


def recipient(recipient_id: str, rows: Sequence[Record]) -> dict[str, Any]:
    """GET /v1/recipients/{id}: per campaign, the recipient's opens and clicks (`engagement`: first
    and first person's event, kept with the rollups; events, human events and last event, from
    the events still stored) and the links they clicked. `erased_at` when the recipient was
    erased; `truncated` when there were more rows than one answer holds."""
    campaigns: dict[str, dict[str, Any]] = {}
    sent_at: dict[str, dt.datetime | None] = {}
    for r in rows[:RECIPIENT_MAX_ROWS]:
        if r["campaign_id"] is None:
            continue
        c = campaigns.setdefault(r["campaign_id"], {"campaign_id": r["campaign_id"], "sent_at": None,
                                                    "engagement": [], "links": []})  # fmt: skip
        touch = {"events": r["events"], "human_events": r["human_events"], "first_at": iso(r["first_at"]),
                 "first_human_at": iso(r["first_human_at"]), "last_at": iso(r["last_at"])}  # fmt: skip
        if r["link_index"] == -1:
            c["engagement"].append({"kind": r["kind"], **touch})
            sent = [s for s in (r["sent_at"], sent_at.get(r["campaign_id"])) if s is not None]
            sent_at[r["campaign_id"]] = min(sent) if sent else None
            c["sent_at"] = iso(sent_at[r["campaign_id"]])
        else:
            c["links"].append({"index": r["link_index"], "name": r["link_name"], "url": r["url"],
                               "clicks": r["events"], "human_clicks": r["human_events"], **{
                                   k: touch[k] for k in ("first_at", "first_human_at", "last_at")}})  # fmt: skip
    return {
        "recipient_id": recipient_id,
        "erased_at": iso(rows[0]["erased_at"]) if rows else None,
        "campaigns": list(campaigns.values()),
        "truncated": len(rows) > RECIPIENT_MAX_ROWS,
    }
