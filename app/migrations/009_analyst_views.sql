-- Views for analysts (docs/analytics.md): the rollups of migrations 007/008 read the way the API
-- reads them, summed over their slots, under names and columns that say what they are.
--
-- The campaign views read only rollup tables, so a query for one campaign (WHERE campaign_id =
-- ...) reads a few hundred rows whatever the size of `events`: the condition is pushed into each
-- view's GROUP BY down to the primary keys (tests/test_analyst_views.py checks every plan).
-- recipient_engagement is for one recipient (WHERE recipient_id = ...): recipient_touch through
-- its index, and that recipient's events through the hash index on events.recipient_id.
-- human_events is `events` itself, people only, for the questions no rollup answers.
--
-- Plain views (not materialized): they are as current as the rollups, which are current at the
-- commit of the events they count. They run with their owner's rights, so trackd_reader needs
-- SELECT on the views only.

-- Each part is referenced once, so PostgreSQL inlines it and a condition on campaign_id reaches
-- every table's primary key (a part referenced twice would be computed for every campaign first).
CREATE VIEW campaign_summary AS
WITH campaigns AS (
    SELECT campaign_id FROM rollup_totals UNION SELECT campaign_id FROM campaign_sends
),
totals AS (
    SELECT campaign_id,
           sum(events) FILTER (WHERE kind = 'open') AS opens,
           sum(events) FILTER (WHERE kind = 'open' AND NOT is_machine) AS human_opens,
           sum(events) FILTER (WHERE kind = 'open' AND is_machine) AS machine_opens,
           sum(events) FILTER (WHERE kind = 'click') AS clicks,
           sum(events) FILTER (WHERE kind = 'click' AND NOT is_machine) AS human_clicks,
           sum(events) FILTER (WHERE kind = 'click' AND is_machine) AS machine_clicks,
           min(first_at) AS first_event_at,
           max(last_at) AS last_event_at
    FROM rollup_totals WHERE link_index = -1
    GROUP BY campaign_id
),
uniq AS (
    SELECT campaign_id,
           sum(uniques) FILTER (WHERE kind = 'open' AND link_index = -1) AS unique_opens,
           sum(human_uniques) FILTER (WHERE kind = 'open' AND link_index = -1) AS human_unique_opens,
           sum(uniques) FILTER (WHERE kind = 'click' AND link_index = -1) AS unique_clicks,
           sum(human_uniques) FILTER (WHERE kind = 'click' AND link_index = -1) AS human_unique_clicks,
           sum(uniques) FILTER (WHERE kind = 'click' AND link_index >= 0) AS unique_link_clicks
    FROM rollup_uniques
    GROUP BY campaign_id
),
sends AS (
    SELECT campaign_id, sum(messages) AS sent FROM campaign_sends GROUP BY campaign_id
),
n AS (
    SELECT c.campaign_id,
           coalesce(t.opens, 0)::bigint AS opens,
           coalesce(u.unique_opens, 0)::bigint AS unique_opens,
           coalesce(t.human_opens, 0)::bigint AS human_opens,
           coalesce(u.human_unique_opens, 0)::bigint AS human_unique_opens,
           coalesce(t.clicks, 0)::bigint AS clicks,
           coalesce(u.unique_clicks, 0)::bigint AS unique_clicks,
           coalesce(t.human_clicks, 0)::bigint AS human_clicks,
           coalesce(u.human_unique_clicks, 0)::bigint AS human_unique_clicks,
           coalesce(u.unique_link_clicks, 0)::bigint AS unique_link_clicks,
           coalesce(t.machine_opens, 0)::bigint AS machine_opens,
           coalesce(t.machine_clicks, 0)::bigint AS machine_clicks,
           s.sent::bigint AS sent,
           t.first_event_at, t.last_event_at
    FROM campaigns c
    LEFT JOIN totals t ON t.campaign_id = c.campaign_id
    LEFT JOIN uniq u ON u.campaign_id = c.campaign_id
    LEFT JOIN sends s ON s.campaign_id = c.campaign_id
)
SELECT campaign_id, opens, unique_opens, human_opens, human_unique_opens, clicks, unique_clicks,
       human_clicks, human_unique_clicks, unique_link_clicks, machine_opens, machine_clicks, sent,
       -- Rates are of people only, and NULL while no send was reported (or none engaged, for
       -- click_to_open_rate): an unknown denominator is not a rate of zero.
       human_unique_opens::float8 / nullif(sent, 0) AS open_rate,
       human_unique_clicks::float8 / nullif(sent, 0) AS click_rate,
       human_unique_clicks::float8 / nullif(human_unique_opens, 0) AS click_to_open_rate,
       first_event_at, last_event_at
FROM n;

COMMENT ON VIEW campaign_summary IS
    'trackd: one row per campaign (with events or a reported send): totals, exact uniques, rates (docs/analytics.md); reads rollups only';
COMMENT ON COLUMN campaign_summary.campaign_id IS 'the campaign';
COMMENT ON COLUMN campaign_summary.opens IS 'every open recorded (people and machines)';
COMMENT ON COLUMN campaign_summary.unique_opens IS 'recipients with at least one open (people or machines)';
COMMENT ON COLUMN campaign_summary.human_opens IS 'opens judged a person''s (is_machine false)';
COMMENT ON COLUMN campaign_summary.human_unique_opens IS 'recipients with at least one open judged a person''s';
COMMENT ON COLUMN campaign_summary.clicks IS 'every click recorded (people and machines)';
COMMENT ON COLUMN campaign_summary.unique_clicks IS 'unique clickers: recipients with at least one click on any link';
COMMENT ON COLUMN campaign_summary.human_clicks IS 'clicks judged a person''s';
COMMENT ON COLUMN campaign_summary.human_unique_clicks IS 'recipients with at least one click judged a person''s';
COMMENT ON COLUMN campaign_summary.unique_link_clicks IS 'sum over links of the recipients who clicked that link (a recipient clicking 3 links counts 3)';
COMMENT ON COLUMN campaign_summary.machine_opens IS 'opens judged a machine''s (opens - human_opens); by reason: rollup_totals';
COMMENT ON COLUMN campaign_summary.machine_clicks IS 'clicks judged a machine''s (clicks - human_clicks)';
COMMENT ON COLUMN campaign_summary.sent IS 'messages the sender reported sent (POST /v1/campaigns/{id}/sends, sum of campaign_sends); NULL if none reported';
COMMENT ON COLUMN campaign_summary.open_rate IS 'human_unique_opens / sent (NULL without sent)';
COMMENT ON COLUMN campaign_summary.click_rate IS 'human_unique_clicks / sent (NULL without sent)';
COMMENT ON COLUMN campaign_summary.click_to_open_rate IS 'human_unique_clicks / human_unique_opens (NULL when no person opened); clicks do not imply opens, so it can exceed 1';
COMMENT ON COLUMN campaign_summary.first_event_at IS 'the earliest event counted (not moved by an erasure)';
COMMENT ON COLUMN campaign_summary.last_event_at IS 'the latest event counted (not moved by an erasure)';

CREATE VIEW link_summary AS
WITH totals AS (
    SELECT campaign_id, link_index, sum(events) AS clicks,
           sum(events) FILTER (WHERE NOT is_machine) AS human_clicks
    FROM rollup_totals WHERE kind = 'click' AND link_index >= 0
    GROUP BY campaign_id, link_index
),
uniq AS (
    SELECT campaign_id, link_index, sum(uniques) AS unique_clicks, sum(human_uniques) AS human_unique_clicks
    FROM rollup_uniques WHERE kind = 'click' AND link_index >= 0
    GROUP BY campaign_id, link_index
)
SELECT t.campaign_id, t.link_index, l.url, l.link_name,
       t.clicks::bigint AS clicks,
       coalesce(u.unique_clicks, 0)::bigint AS unique_clicks,
       coalesce(t.human_clicks, 0)::bigint AS human_clicks,
       coalesce(u.human_unique_clicks, 0)::bigint AS human_unique_clicks,
       t.clicks::float8 / nullif(sum(t.clicks) OVER (PARTITION BY t.campaign_id), 0) AS click_share
FROM totals t
LEFT JOIN uniq u ON u.campaign_id = t.campaign_id AND u.link_index = t.link_index
LEFT JOIN campaign_links l ON l.campaign_id = t.campaign_id AND l.link_index = t.link_index;

COMMENT ON VIEW link_summary IS
    'trackd: per campaign and link (index in the message): clicks, exact unique clickers, people only; reads rollups only';
COMMENT ON COLUMN link_summary.campaign_id IS 'the campaign';
COMMENT ON COLUMN link_summary.link_index IS 'the link''s index in the message (the signed link carries it)';
COMMENT ON COLUMN link_summary.url IS 'the URL first recorded for this link index';
COMMENT ON COLUMN link_summary.link_name IS 'the name first recorded for this link index (NULL if the link had none)';
COMMENT ON COLUMN link_summary.clicks IS 'every click on the link (people and machines)';
COMMENT ON COLUMN link_summary.unique_clicks IS 'recipients with at least one click on the link';
COMMENT ON COLUMN link_summary.human_clicks IS 'clicks on the link judged a person''s';
COMMENT ON COLUMN link_summary.human_unique_clicks IS 'recipients with at least one click on the link judged a person''s';
COMMENT ON COLUMN link_summary.click_share IS 'clicks / the campaign''s clicks (all links; people and machines)';

-- The series views hide buckets whose numbers all net to zero (an erasure leaves such rows).
CREATE VIEW campaign_hourly AS
SELECT campaign_id, bucket AS hour, kind,
       sum(events)::bigint AS events, sum(human_events)::bigint AS human_events,
       sum(uniques)::bigint AS new_uniques, sum(human_uniques)::bigint AS new_human_uniques
FROM rollup_hours
GROUP BY campaign_id, bucket, kind
HAVING sum(events) <> 0 OR sum(human_events) <> 0 OR sum(uniques) <> 0 OR sum(human_uniques) <> 0;

COMMENT ON VIEW campaign_hourly IS
    'trackd: per campaign, UTC hour and kind: events and the uniques new in that hour (hours add up to the campaign''s uniques); reads rollup_hours';
COMMENT ON COLUMN campaign_hourly.campaign_id IS 'the campaign';
COMMENT ON COLUMN campaign_hourly.hour IS 'the start of the hour (UTC; a timestamptz)';
COMMENT ON COLUMN campaign_hourly.kind IS 'open or click';
COMMENT ON COLUMN campaign_hourly.events IS 'events in the hour (people and machines)';
COMMENT ON COLUMN campaign_hourly.human_events IS 'events in the hour judged a person''s';
COMMENT ON COLUMN campaign_hourly.new_uniques IS 'recipients whose first event of the kind is in this hour';
COMMENT ON COLUMN campaign_hourly.new_human_uniques IS 'recipients whose first event of the kind judged a person''s is in this hour';

CREATE VIEW campaign_daily AS
SELECT campaign_id, (bucket AT TIME ZONE 'UTC')::date AS day, kind,
       sum(events)::bigint AS events, sum(human_events)::bigint AS human_events,
       sum(uniques)::bigint AS new_uniques, sum(human_uniques)::bigint AS new_human_uniques
FROM rollup_hours
GROUP BY campaign_id, (bucket AT TIME ZONE 'UTC')::date, kind
HAVING sum(events) <> 0 OR sum(human_events) <> 0 OR sum(uniques) <> 0 OR sum(human_uniques) <> 0;

COMMENT ON VIEW campaign_daily IS
    'trackd: per campaign, UTC day and kind: events and the uniques new that day (days add up to the campaign''s uniques); reads rollup_hours';
COMMENT ON COLUMN campaign_daily.campaign_id IS 'the campaign';
COMMENT ON COLUMN campaign_daily.day IS 'the UTC day (a date)';
COMMENT ON COLUMN campaign_daily.kind IS 'open or click';
COMMENT ON COLUMN campaign_daily.events IS 'events that day (people and machines)';
COMMENT ON COLUMN campaign_daily.human_events IS 'events that day judged a person''s';
COMMENT ON COLUMN campaign_daily.new_uniques IS 'recipients whose first event of the kind is that day';
COMMENT ON COLUMN campaign_daily.new_human_uniques IS 'recipients whose first event of the kind judged a person''s is that day';

-- Every bucket of a (campaign, kind) that has a histogram, zeros included, so that a chart or a
-- cumulative sum needs no gap filling.
CREATE VIEW time_to_first AS
-- The bounds are trackd_tto_bounds() spelled out (a function in a view runs with the caller's
-- rights; tests/test_analyst_views.py checks both agree).
WITH buckets (bucket, upper_bound_seconds, label) AS (
    VALUES (0, 60, '<1m'), (1, 300, '<5m'), (2, 900, '<15m'), (3, 3600, '<1h'), (4, 7200, '<2h'),
           (5, 21600, '<6h'), (6, 43200, '<12h'), (7, 86400, '<24h'), (8, 172800, '<48h'),
           (9, 604800, '<7d'), (10, NULL, '>=7d')
),
keys AS (
    SELECT DISTINCT campaign_id, kind FROM rollup_time_to_first
),
counts AS (
    SELECT campaign_id, kind, bucket, sum(recipients) AS recipients, sum(human_recipients) AS human_recipients
    FROM rollup_time_to_first
    GROUP BY campaign_id, kind, bucket
)
SELECT k.campaign_id, k.kind, b.bucket::smallint AS bucket,
       b.upper_bound_seconds::int AS upper_bound_seconds, b.label,
       coalesce(c.recipients, 0)::bigint AS recipients,
       coalesce(c.human_recipients, 0)::bigint AS human_recipients
FROM keys k
CROSS JOIN buckets b
LEFT JOIN counts c ON c.campaign_id = k.campaign_id AND c.kind = k.kind AND c.bucket = b.bucket;

COMMENT ON VIEW time_to_first IS
    'trackd: histogram of the time from sent_at to each recipient''s first open / click (all, and first judged a person''s); reads rollup_time_to_first';
COMMENT ON COLUMN time_to_first.campaign_id IS 'the campaign';
COMMENT ON COLUMN time_to_first.kind IS 'open or click';
COMMENT ON COLUMN time_to_first.bucket IS '0..10, in order of delay';
COMMENT ON COLUMN time_to_first.upper_bound_seconds IS 'the longest delay in the bucket, in seconds, included (NULL for the last: longer than 7 days)';
COMMENT ON COLUMN time_to_first.label IS 'the bucket for people: <1m (at most 60 s), <5m, ... <7d, >=7d (more than 7 days)';
COMMENT ON COLUMN time_to_first.recipients IS 'recipients whose first event of the kind came that long after the send (links without sent_at are not counted)';
COMMENT ON COLUMN time_to_first.human_recipients IS 'recipients whose first event of the kind judged a person''s came that long after the send';

CREATE VIEW human_events AS
SELECT id, occurred_at, kind, campaign_id, recipient_id, link_index, url, link_name, part, message_id,
       sent_at, ip, user_agent, xid
FROM events
WHERE NOT is_machine;

COMMENT ON VIEW human_events IS
    'trackd: the raw events judged a person''s (events WHERE NOT is_machine); scans events: filter on occurred_at (partitions) or recipient_id (index)';
COMMENT ON COLUMN human_events.id IS 'the event''s id, made at receipt (with occurred_at, the primary key)';
COMMENT ON COLUMN human_events.occurred_at IS 'when trackd received the request (UTC; the partition key)';
COMMENT ON COLUMN human_events.kind IS 'open or click';
COMMENT ON COLUMN human_events.campaign_id IS 'the campaign the signed link names';
COMMENT ON COLUMN human_events.recipient_id IS 'the recipient the signed link names';
COMMENT ON COLUMN human_events.link_index IS 'the link''s index in the message (clicks; NULL for opens)';
COMMENT ON COLUMN human_events.url IS 'where the click went (NULL for opens)';
COMMENT ON COLUMN human_events.link_name IS 'the link''s name, if the sender gave one';
COMMENT ON COLUMN human_events.part IS 'where the link was: api, html or text';
COMMENT ON COLUMN human_events.message_id IS 'the sender''s message id, if the link carried one';
COMMENT ON COLUMN human_events.sent_at IS 'the send time the signed link carried';
COMMENT ON COLUMN human_events.ip IS 'the client address (anonymised unless configured otherwise)';
COMMENT ON COLUMN human_events.user_agent IS 'the client''s User-Agent (cut to TRACKD_USER_AGENT_MAX_BYTES)';
COMMENT ON COLUMN human_events.xid IS 'the inserting transaction: the event feed''s order (with id)';

-- recipient_touch keeps each recipient's first (and first human) event per campaign, kind and
-- link, for ever; counts and last times come from the recipient's stored events, through the hash
-- index on events.recipient_id (one probe per daily partition for each row of the view).
CREATE VIEW recipient_engagement AS
SELECT t.campaign_id, t.recipient_id,
       coalesce(e.opens, 0) AS opens, coalesce(e.human_opens, 0) AS human_opens,
       t.first_open_at, t.first_human_open_at, e.last_open_at,
       coalesce(e.clicks, 0) AS clicks, coalesce(e.human_clicks, 0) AS human_clicks,
       t.first_click_at, t.first_human_click_at, e.last_click_at,
       t.links_clicked, t.sent_at
FROM (
    SELECT campaign_id, recipient_id,
           min(first_at) FILTER (WHERE kind = 'open' AND link_index = -1) AS first_open_at,
           min(first_human_at) FILTER (WHERE kind = 'open' AND link_index = -1) AS first_human_open_at,
           min(first_at) FILTER (WHERE kind = 'click' AND link_index = -1) AS first_click_at,
           min(first_human_at) FILTER (WHERE kind = 'click' AND link_index = -1) AS first_human_click_at,
           count(*) FILTER (WHERE kind = 'click' AND link_index >= 0) AS links_clicked,
           min(sent_at) AS sent_at
    FROM recipient_touch
    GROUP BY campaign_id, recipient_id
) t
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE ev.kind = 'open') AS opens,
           count(*) FILTER (WHERE ev.kind = 'open' AND NOT ev.is_machine) AS human_opens,
           max(ev.occurred_at) FILTER (WHERE ev.kind = 'open') AS last_open_at,
           count(*) FILTER (WHERE ev.kind = 'click') AS clicks,
           count(*) FILTER (WHERE ev.kind = 'click' AND NOT ev.is_machine) AS human_clicks,
           max(ev.occurred_at) FILTER (WHERE ev.kind = 'click') AS last_click_at
    FROM events ev
    WHERE ev.recipient_id = t.recipient_id AND ev.campaign_id = t.campaign_id
) e ON true;

COMMENT ON VIEW recipient_engagement IS
    'trackd: per recipient and campaign they engaged with: first times (recipient_touch, kept), counts and last times (their stored events); filter on recipient_id';
COMMENT ON COLUMN recipient_engagement.campaign_id IS 'the campaign';
COMMENT ON COLUMN recipient_engagement.recipient_id IS 'the recipient';
COMMENT ON COLUMN recipient_engagement.opens IS 'the recipient''s stored opens (people and machines; retention drops old events)';
COMMENT ON COLUMN recipient_engagement.human_opens IS 'the recipient''s stored opens judged a person''s';
COMMENT ON COLUMN recipient_engagement.first_open_at IS 'the first open (NULL: never opened)';
COMMENT ON COLUMN recipient_engagement.first_human_open_at IS 'the first open judged a person''s (NULL: none)';
COMMENT ON COLUMN recipient_engagement.last_open_at IS 'the latest stored open';
COMMENT ON COLUMN recipient_engagement.clicks IS 'the recipient''s stored clicks (people and machines; retention drops old events)';
COMMENT ON COLUMN recipient_engagement.human_clicks IS 'the recipient''s stored clicks judged a person''s';
COMMENT ON COLUMN recipient_engagement.first_click_at IS 'the first click (NULL: never clicked)';
COMMENT ON COLUMN recipient_engagement.first_human_click_at IS 'the first click judged a person''s (NULL: none)';
COMMENT ON COLUMN recipient_engagement.last_click_at IS 'the latest stored click';
COMMENT ON COLUMN recipient_engagement.links_clicked IS 'how many different links of the campaign the recipient clicked';
COMMENT ON COLUMN recipient_engagement.sent_at IS 'the earliest send time the recipient''s links carried (NULL: none did)';

INSERT INTO trackd_grants (role, relation, privileges, why) VALUES
    ('trackd_reader', 'campaign_summary', 'SELECT', 'analysts: the documented views (docs/analytics.md)'),
    ('trackd_reader', 'link_summary', 'SELECT', 'analysts: the documented views (docs/analytics.md)'),
    ('trackd_reader', 'campaign_hourly', 'SELECT', 'analysts: the documented views (docs/analytics.md)'),
    ('trackd_reader', 'campaign_daily', 'SELECT', 'analysts: the documented views (docs/analytics.md)'),
    ('trackd_reader', 'time_to_first', 'SELECT', 'analysts: the documented views (docs/analytics.md)'),
    ('trackd_reader', 'human_events', 'SELECT', 'analysts: the documented views (docs/analytics.md)'),
    ('trackd_reader', 'recipient_engagement', 'SELECT', 'analysts: the documented views (docs/analytics.md)');

SELECT trackd_apply_grants();
