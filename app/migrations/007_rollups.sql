-- Exact rollups, kept by PostgreSQL in the transaction that inserts the events (docs/analytics.md).
--
-- Every number the API gives (stats, links, series, time to open) is a sum over a few rows of
-- the tables below, never a scan of a campaign's events. They are kept by one statement-level
-- trigger on `events` from its transition table, which holds only the rows the statement really
-- inserted: a replayed journal, a retried batch or a second pod's copy of the same event inserts
-- nothing (the primary key refuses it) and so counts nothing, and a SIGKILL rolls back the events
-- and their counts together.
--
-- Exact uniques are additive through recipient_touch: one row per (campaign, kind, link,
-- recipient) that engaged. A row that did not exist before the statement is exactly one new
-- unique; a row whose first_human_at was NULL and is set now is one new human unique. Its time
-- (the first event, or the first human event) puts the unique in one minute and one hour of the
-- series, so buckets add up to the campaign's uniques. A recipient's later events change nothing
-- in the row and are not upserted at all, so the common case, a recipient seen before, costs an
-- index lookup and no write.
--
-- Hot rows: many writers (one per pod) into one hot campaign would all update the same counter
-- rows and wait for each other until commit. Every counter row carries a `slot`, and each writing
-- transaction takes a slot no other running transaction holds (trackd_take_slot: a transaction
-- advisory lock per slot), so concurrent writers never update the same counter row; readers sum
-- over the slots (rows exist only for slots that were used: about as many as writers ran at once).
-- recipient_touch rows are per recipient, so writers meet there only when they hold events of
-- the same recipient at the same moment. Every upsert is sorted by its key, so two writers never
-- take the same rows in different orders (no deadlock).
--
-- Verdicts change (trackd_revise_verdicts), recipients are erased (trackd_erase_recipient), and
-- every rollup follows; trackd_rollup_drift recomputes them all from `events` (`trackd verify`).

-- Where every link count and human/machine count of a campaign lives. link_index -1 is the
-- campaign as a whole (every open, every click); 0.. is one link (clicks only). reason is '' for
-- people and the machine_reason (head, prefetch, scanner, honeypot, ...) for machines.
CREATE TABLE rollup_totals (
    campaign_id text    NOT NULL,
    kind        text    NOT NULL,
    link_index  int     NOT NULL,
    is_machine  boolean NOT NULL,
    reason      text    NOT NULL,
    slot        smallint NOT NULL,
    events      bigint  NOT NULL,
    -- The earliest and latest event counted here (not moved back by an erasure).
    first_at    timestamptz,
    last_at     timestamptz,
    PRIMARY KEY (campaign_id, kind, link_index, is_machine, reason, slot)
) WITH (fillfactor = 70);
COMMENT ON TABLE rollup_totals IS
    'trackd: events per campaign, kind, link (-1 = whole campaign) and verdict (reason '''' = a person); sum over slot';

-- Exact unique recipients: `uniques` counts recipients with at least one event of the kind (on
-- that link), `human_uniques` those with at least one event judged a person's.
CREATE TABLE rollup_uniques (
    campaign_id   text     NOT NULL,
    kind          text     NOT NULL,
    link_index    int      NOT NULL,
    slot          smallint NOT NULL,
    uniques       bigint   NOT NULL,
    human_uniques bigint   NOT NULL,
    PRIMARY KEY (campaign_id, kind, link_index, slot)
) WITH (fillfactor = 70);
COMMENT ON TABLE rollup_uniques IS
    'trackd: unique recipients per campaign, kind and link (-1 = whole campaign), all and people only; sum over slot';

-- The series: per minute and per hour (UTC), events and the uniques that are *new* in that bucket
-- (the recipient's first event, or first human event, falls in it), so that buckets add up.
CREATE TABLE rollup_minutes (
    campaign_id   text        NOT NULL,
    bucket        timestamptz NOT NULL,
    kind          text        NOT NULL,
    slot          smallint    NOT NULL,
    events        bigint      NOT NULL,
    human_events  bigint      NOT NULL,
    uniques       bigint      NOT NULL,
    human_uniques bigint      NOT NULL,
    PRIMARY KEY (campaign_id, bucket, kind, slot)
) WITH (fillfactor = 70);
COMMENT ON TABLE rollup_minutes IS
    'trackd: per campaign and minute (UTC): events, human events, new uniques, new human uniques; sum over slot';

CREATE TABLE rollup_hours (LIKE rollup_minutes INCLUDING ALL) WITH (fillfactor = 70);
COMMENT ON TABLE rollup_hours IS
    'trackd: per campaign and hour (UTC): events, human events, new uniques, new human uniques; sum over slot';

-- Time from send (the sent_at the link carried) to a recipient's first open or click, as a
-- histogram. Bucket b counts first events at most trackd_tto_bounds()[b+1] seconds after the send
-- (bucket 10: a week or more). Recipients whose links carried no send time are not in it.
CREATE TABLE rollup_time_to_first (
    campaign_id   text     NOT NULL,
    kind          text     NOT NULL,
    bucket        smallint NOT NULL,
    slot          smallint NOT NULL,
    recipients    bigint   NOT NULL,
    human_recipients bigint NOT NULL,
    PRIMARY KEY (campaign_id, kind, bucket, slot)
) WITH (fillfactor = 70);
COMMENT ON TABLE rollup_time_to_first IS
    'trackd: histogram of time from sent_at to each recipient''s first event of a kind (all, and first human event); bucket bounds in trackd_tto_bounds()';

CREATE FUNCTION trackd_tto_bounds() RETURNS int[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY[60, 300, 900, 3600, 7200, 21600, 43200, 86400, 172800, 604800];
COMMENT ON FUNCTION trackd_tto_bounds() IS
    'trackd: upper bounds in seconds of the time-to-first buckets 0..9 of rollup_time_to_first (bucket 10: longer)';

-- The bucket of a delay: the number of bounds strictly below it (a delay of exactly 60 s is in
-- bucket 0, "within a minute"); a negative delay (clock skew) is bucket 0. A plain CASE, so that
-- PostgreSQL inlines it (the trigger calls it for every new unique).
CREATE FUNCTION trackd_tto_bucket(delay interval) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN delay <= interval '60 seconds' THEN 0 WHEN delay <= interval '5 minutes' THEN 1
    WHEN delay <= interval '15 minutes' THEN 2 WHEN delay <= interval '1 hour' THEN 3
    WHEN delay <= interval '2 hours' THEN 4 WHEN delay <= interval '6 hours' THEN 5
    WHEN delay <= interval '12 hours' THEN 6 WHEN delay <= interval '24 hours' THEN 7
    WHEN delay <= interval '48 hours' THEN 8 WHEN delay <= interval '7 days' THEN 9
    ELSE 10 END::smallint;

-- One row per recipient and campaign, kind and link (-1: the campaign as a whole) that engaged:
-- the recipient's engagement history, and what makes uniques exact and additive.
CREATE TABLE recipient_touch (
    campaign_id    text        NOT NULL,
    kind           text        NOT NULL,
    link_index     int         NOT NULL,
    recipient_id   text        NOT NULL,
    first_at       timestamptz NOT NULL,
    first_human_at timestamptz,
    sent_at        timestamptz,
    -- What the row held before the last upsert that changed it: written by the trigger's ON
    -- CONFLICT DO UPDATE so that its RETURNING can tell what moved (PostgreSQL 15 has no
    -- RETURNING old.*). Internal.
    prev_first_at       timestamptz,
    prev_first_human_at timestamptz,
    prev_sent_at        timestamptz,
    PRIMARY KEY (campaign_id, kind, link_index, recipient_id)
) WITH (fillfactor = 90);
CREATE INDEX recipient_touch_recipient_idx ON recipient_touch (recipient_id);
COMMENT ON TABLE recipient_touch IS
    'trackd: one row per campaign, kind, link (-1 = whole campaign) and recipient that engaged: first event, first human event (NULL: only machines so far), earliest sent_at';
COMMENT ON COLUMN recipient_touch.prev_first_at IS 'internal: the value before the last change (read nothing into it)';

-- The first URL and name seen for each link of a campaign (links are counted by index).
CREATE TABLE campaign_links (
    campaign_id text NOT NULL,
    link_index  int  NOT NULL,
    url         text,
    link_name   text,
    PRIMARY KEY (campaign_id, link_index)
);
COMMENT ON TABLE campaign_links IS 'trackd: the URL and name first recorded for each link index of a campaign';

-- Messages a sender says went out (POST /v1/campaigns/{id}/sends): the denominator of open and
-- click rates. One row per report; a report carries an id so that a retried report counts once.
CREATE TABLE campaign_sends (
    campaign_id text        NOT NULL,
    report_id   text        NOT NULL,
    messages    bigint      NOT NULL CHECK (messages >= 0),
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, report_id)
);
COMMENT ON TABLE campaign_sends IS
    'trackd: messages sent per campaign as reported by the sender (sum over report_id); the denominator of open_rate and click_rate';

-- Erased recipients (DELETE /v1/recipients/{id}, trackd erase). Events of the recipient that
-- happened before the erasure and reach the table later (from a journal that was behind) are
-- deleted by the trigger as they arrive and counted nowhere.
CREATE TABLE erased_recipients (
    recipient_id text PRIMARY KEY,
    erased_at    timestamptz NOT NULL
);
COMMENT ON TABLE erased_recipients IS
    'trackd: recipients erased, and when: events that happened before erased_at are refused whenever they arrive';

-- The event feed (GET /v1/events) hands out events in the order of the transaction that
-- inserted them, and only from transactions older than every transaction still running
-- (pg_snapshot_xmin): a row can then never appear behind a cursor already handed out. Added
-- without a default first, so existing rows are not rewritten by a volatile default; old rows
-- get 0 (they come first). Not declared NOT NULL: writers' stage tables are made LIKE events
-- and filled without it (it comes from the default as rows move into events), and so are the
-- stage tables of writers of the previous version during a rolling upgrade.
ALTER TABLE events ADD COLUMN xid xid8;
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
UPDATE events SET xid = '0' WHERE xid IS NULL;
COMMENT ON COLUMN events.xid IS
    'the inserting transaction (feed order, with id); 0 for rows from before migration 007';

-- The campaign index served the old stats query (count DISTINCT over the campaign); reads now go
-- to the rollups. What events still needs an index for: the feed (all events, or one campaign's),
-- and finding one recipient's events (erasure, verdict revision). A hash index on recipient_id
-- is cheaper to keep than a B-tree for a key looked up only by equality.
-- A campaign's part of the feed is found through campaign_batches (below), not an index per
-- campaign: every index on events costs the writer, and this one cost about a fifth.
-- (events_campaign_idx itself is dropped at the end of migration 008, after the rollups of rows
-- already stored were built campaign by campaign through it.)
CREATE INDEX events_feed_idx ON events (xid, id);
CREATE INDEX events_recipient_idx ON events USING hash (recipient_id);

-- Which inserting transactions (batches) hold events of which campaign: one row per campaign per
-- batch, written by the trigger. A campaign's feed reads its next batches here, then their rows
-- through events_feed_idx. `day` is the batch's last day (UTC): the row goes when retention has
-- dropped every day the batch has events on.
CREATE TABLE campaign_batches (
    campaign_id text        NOT NULL,
    xid         xid8        NOT NULL,
    day         date        NOT NULL,
    PRIMARY KEY (campaign_id, xid)
);
COMMENT ON TABLE campaign_batches IS
    'trackd: the inserting transactions (events.xid) that hold events of each campaign, for the per-campaign event feed';

-- The start of the oldest day `events` still stores (NULL: none). Only trackd's daily partitions
-- count (a DEFAULT partition, or another made by hand, has no day). What retention dropped before
-- it can no longer be recounted: revisions keep what the rollups hold of it, verify leaves out
-- campaigns that reach back there, and a rebuild refuses them.
CREATE FUNCTION trackd_oldest_stored() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT min(split_part(b.bound, '''', 2)::timestamptz)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
    WHERE i.inhparent = 'events'::regclass
      AND b.bound ~ '^FOR VALUES FROM \(''[^'']*''\) TO \(''[^'']*''\)$'
$$;

-- A slot for this transaction's counter rows that no other running transaction has: the lowest
-- of `first`, first+1, ... (of `count` slots) whose transaction advisory lock is free. The lowest,
-- so that a key's rows stay as few as the writers that ever ran at once (readers sum them), not
-- spread over every slot as processes come and go. With more writers at once than slots, the
-- last one is shared (they wait for each other, nothing worse).
CREATE FUNCTION trackd_take_slot(first int, count int) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    k int;
BEGIN
    FOR i IN 0 .. count - 1 LOOP
        k := first + i;
        IF pg_try_advisory_xact_lock(hashtext('trackd_slot'), k) THEN
            RETURN k;
        END IF;
    END LOOP;
    RETURN k;
END
$$;

-- interactions_per_second was itself a hot row: every writer's batch of a campaign upserted the
-- same (second, campaign, kind, verdict) rows, so writers of one hot campaign waited for each
-- other's commits (measured: most of four writers' time). Its rows get a slot too; readers sum.
-- Writers from before migration 003 (which upserted these rows themselves on the old key) can no
-- longer write to it: upgrade from them through a version with migrations 003..006 first.
ALTER TABLE interactions_per_second ADD COLUMN slot smallint NOT NULL DEFAULT 0;
ALTER TABLE interactions_per_second DROP CONSTRAINT interactions_per_second_pkey;
ALTER TABLE interactions_per_second ADD PRIMARY KEY (second, campaign_id, kind, is_machine, slot);
COMMENT ON COLUMN interactions_per_second.slot IS 'the writing transaction''s slot (no two running writers share one): sum over it';

CREATE OR REPLACE FUNCTION trackd_count_per_second() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_slot smallint;
BEGIN
    IF current_setting('trackd.per_second', true) IS DISTINCT FROM 'trigger' THEN
        RETURN NULL;
    END IF;
    v_slot := trackd_take_slot(0, 64);
    INSERT INTO interactions_per_second AS t (second, campaign_id, kind, is_machine, slot, events, max_lag_ms)
    SELECT date_trunc('second', occurred_at), campaign_id, kind, is_machine, v_slot, count(*),
           least(2147483647, greatest(0, ceil(extract(epoch FROM clock_timestamp() - min(occurred_at)) * 1000)))::int
    FROM inserted GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (second, campaign_id, kind, is_machine, slot) DO UPDATE
    SET events = t.events + EXCLUDED.events, max_lag_ms = greatest(t.max_lag_ms, EXCLUDED.max_lag_ms);
    RETURN NULL;
END
$$;
-- With its owner's rights now (it takes a slot, which only trackd's own functions may).
ALTER FUNCTION trackd_count_per_second() SECURITY DEFINER;

-- The trigger: everything the rows of one INSERT or COPY add to the rollups, in one statement.
CREATE FUNCTION trackd_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    -- Writers use slots 0..63 (revisions and erasures 64..71: never a row a writer holds).
    v_slot smallint := trackd_take_slot(0, 64);
BEGIN
    -- Erasures and revisions (trackd_erase_recipient, trackd_revise_verdicts) take this lock
    -- exclusively: they wait for writers that already counted rows, and writers after them see
    -- their tombstones and verdicts in the statements below.
    PERFORM pg_advisory_xact_lock_shared(hashtext('trackd_erasure'));
    IF EXISTS (SELECT 1 FROM inserted i JOIN erased_recipients r
               ON r.recipient_id = i.recipient_id AND i.occurred_at <= r.erased_at) THEN
        DELETE FROM events e USING inserted i, erased_recipients r
        WHERE r.recipient_id = i.recipient_id AND i.occurred_at <= r.erased_at
          AND e.occurred_at = i.occurred_at AND e.id = i.id;
    END IF;

    WITH ins AS MATERIALIZED (
        SELECT i.campaign_id, i.kind, i.link_index, i.recipient_id, i.occurred_at, i.sent_at,
               i.is_machine, CASE WHEN i.is_machine THEN coalesce(i.machine_reason, 'machine') ELSE '' END AS reason,
               i.url, i.link_name, i.xid
        FROM inserted i
        WHERE NOT EXISTS (SELECT 1 FROM erased_recipients r
                          WHERE r.recipient_id = i.recipient_id AND i.occurred_at <= r.erased_at)
    ),
    -- Each event counts for its campaign (-1) and, for a click, for its link.
    -- Narrow: only what the groupings below need (a wide row costs in every scan of it).
    per_link AS (
        SELECT ins.campaign_id, ins.kind, l.link, ins.recipient_id, ins.occurred_at, ins.sent_at,
               ins.is_machine, ins.reason
        FROM ins CROSS JOIN LATERAL (VALUES (-1), (ins.link_index)) AS l(link)
        WHERE l.link IS NOT NULL
    ),
    batch AS (
        SELECT campaign_id, kind, link, recipient_id, min(occurred_at) AS first_at,
               min(occurred_at) FILTER (WHERE NOT is_machine) AS first_h, min(sent_at) AS sent_at
        FROM per_link GROUP BY 1, 2, 3, 4
    ),
    -- Most events are of recipients seen before whose row they change nothing in: read the rows
    -- (no lock, no write) and upsert only what is new or moves earlier. Safe against the rows
    -- changing meanwhile: another writer only moves them earlier (still nothing to do), and
    -- revisions and erasures, which may move them later, wait for this transaction (the lock
    -- taken above) and it for them.
    changes AS (
        SELECT b.* FROM batch b
        LEFT JOIN recipient_touch t ON t.campaign_id = b.campaign_id AND t.kind = b.kind
             AND t.link_index = b.link AND t.recipient_id = b.recipient_id
        WHERE t.campaign_id IS NULL
           OR b.first_at < t.first_at
           OR (b.first_h IS NOT NULL AND (t.first_human_at IS NULL OR b.first_h < t.first_human_at))
           OR (b.sent_at IS NOT NULL AND (t.sent_at IS NULL OR b.sent_at < t.sent_at))
    ),
    touch AS (
        INSERT INTO recipient_touch AS t (campaign_id, kind, link_index, recipient_id, first_at, first_human_at, sent_at)
        SELECT campaign_id, kind, link, recipient_id, first_at, first_h, sent_at
        FROM changes ORDER BY campaign_id, kind, link, recipient_id
        ON CONFLICT (campaign_id, kind, link_index, recipient_id) DO UPDATE SET
            prev_first_at = t.first_at, prev_first_human_at = t.first_human_at, prev_sent_at = t.sent_at,
            first_at = least(t.first_at, EXCLUDED.first_at),
            first_human_at = least(t.first_human_at, EXCLUDED.first_human_at),
            sent_at = least(t.sent_at, EXCLUDED.sent_at)
        WHERE EXCLUDED.first_at < t.first_at
           OR EXCLUDED.first_human_at < t.first_human_at
           OR (t.first_human_at IS NULL AND EXCLUDED.first_human_at IS NOT NULL)
           OR EXCLUDED.sent_at < t.sent_at
           OR (t.sent_at IS NULL AND EXCLUDED.sent_at IS NOT NULL)
        RETURNING t.campaign_id, t.kind, t.link_index, t.first_at, t.first_human_at, t.sent_at,
                  t.prev_first_at, t.prev_first_human_at, t.prev_sent_at, (t.prev_first_at IS NULL) AS created
    ),
    -- Where each unique was counted before this statement and where it is counted now: +1 for a
    -- new place, -1 for the old one (an earlier event arrived late, or the first human event).
    moves AS MATERIALIZED (
        SELECT campaign_id, kind, link_index, first_at AS at, sent_at AS sent, 1 AS u, 0 AS hu FROM touch
        WHERE created OR prev_first_at <> first_at OR prev_sent_at IS DISTINCT FROM sent_at
        UNION ALL
        SELECT campaign_id, kind, link_index, prev_first_at, prev_sent_at, -1, 0 FROM touch
        WHERE NOT created AND (prev_first_at <> first_at OR prev_sent_at IS DISTINCT FROM sent_at)
        UNION ALL
        SELECT campaign_id, kind, link_index, first_human_at, sent_at, 0, 1 FROM touch
        WHERE first_human_at IS NOT NULL AND (created OR prev_first_human_at IS NULL
              OR prev_first_human_at <> first_human_at OR prev_sent_at IS DISTINCT FROM sent_at)
        UNION ALL
        SELECT campaign_id, kind, link_index, prev_first_human_at, prev_sent_at, 0, -1 FROM touch
        WHERE NOT created AND prev_first_human_at IS NOT NULL
              AND (prev_first_human_at <> first_human_at OR prev_sent_at IS DISTINCT FROM sent_at)
    ),
    totals AS (
        INSERT INTO rollup_totals AS r (campaign_id, kind, link_index, is_machine, reason, slot, events, first_at, last_at)
        SELECT campaign_id, kind, link, is_machine, reason, v_slot, count(*), min(occurred_at), max(occurred_at)
        FROM per_link GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (campaign_id, kind, link_index, is_machine, reason, slot)
        DO UPDATE SET events = r.events + EXCLUDED.events, first_at = least(r.first_at, EXCLUDED.first_at),
                      last_at = greatest(r.last_at, EXCLUDED.last_at)
    ),
    uniques AS (
        INSERT INTO rollup_uniques AS r (campaign_id, kind, link_index, slot, uniques, human_uniques)
        SELECT campaign_id, kind, link_index, v_slot, sum(u), sum(hu)
        FROM moves GROUP BY 1, 2, 3 HAVING sum(u) <> 0 OR sum(hu) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, kind, link_index, slot)
        DO UPDATE SET uniques = r.uniques + EXCLUDED.uniques, human_uniques = r.human_uniques + EXCLUDED.human_uniques
    ),
    series AS (
        SELECT campaign_id, kind, date_trunc('minute', occurred_at) AS minute,
               count(*) AS ev, count(*) FILTER (WHERE NOT is_machine) AS hev, 0 AS u, 0 AS hu
        FROM ins GROUP BY 1, 2, 3
        UNION ALL
        SELECT campaign_id, kind, date_trunc('minute', at), 0, 0, sum(u), sum(hu)
        FROM moves WHERE link_index = -1 GROUP BY 1, 2, 3
    ),
    minutes AS (
        INSERT INTO rollup_minutes AS r (campaign_id, bucket, kind, slot, events, human_events, uniques, human_uniques)
        SELECT campaign_id, minute, kind, v_slot, sum(ev), sum(hev), sum(u), sum(hu)
        FROM series GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, bucket, kind, slot) DO UPDATE SET
            events = r.events + EXCLUDED.events, human_events = r.human_events + EXCLUDED.human_events,
            uniques = r.uniques + EXCLUDED.uniques, human_uniques = r.human_uniques + EXCLUDED.human_uniques
    ),
    hours AS (
        INSERT INTO rollup_hours AS r (campaign_id, bucket, kind, slot, events, human_events, uniques, human_uniques)
        SELECT campaign_id, date_trunc('hour', minute), kind, v_slot, sum(ev), sum(hev), sum(u), sum(hu)
        FROM series GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, bucket, kind, slot) DO UPDATE SET
            events = r.events + EXCLUDED.events, human_events = r.human_events + EXCLUDED.human_events,
            uniques = r.uniques + EXCLUDED.uniques, human_uniques = r.human_uniques + EXCLUDED.human_uniques
    ),
    links AS (
        INSERT INTO campaign_links (campaign_id, link_index, url, link_name)
        SELECT DISTINCT ON (campaign_id, link_index) campaign_id, link_index, url, link_name
        FROM ins WHERE link_index IS NOT NULL ORDER BY campaign_id, link_index, occurred_at
        ON CONFLICT (campaign_id, link_index) DO NOTHING
    ),
    batches AS (
        INSERT INTO campaign_batches AS b (campaign_id, xid, day)
        SELECT campaign_id, xid, (max(occurred_at) AT TIME ZONE 'UTC')::date FROM ins GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (campaign_id, xid) DO UPDATE SET day = greatest(b.day, EXCLUDED.day)
    )
    INSERT INTO rollup_time_to_first AS r (campaign_id, kind, bucket, slot, recipients, human_recipients)
    SELECT campaign_id, kind, trackd_tto_bucket(at - sent), v_slot, sum(u), sum(hu)
    FROM moves WHERE link_index = -1 AND sent IS NOT NULL
    GROUP BY 1, 2, 3 HAVING sum(u) <> 0 OR sum(hu) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (campaign_id, kind, bucket, slot) DO UPDATE SET
        recipients = r.recipients + EXCLUDED.recipients, human_recipients = r.human_recipients + EXCLUDED.human_recipients;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_rollup
AFTER INSERT ON events
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION trackd_rollup();

-- SECURITY DEFINER: the service role records events but may not write rollups itself (it could
-- then make them say anything); the trigger writes them with its owner's rights. Made safe for
-- that with a fixed search_path: built-ins first, then trackd's schema, pg_temp last.
DO $do$
BEGIN
    EXECUTE pg_catalog.format('ALTER FUNCTION trackd_rollup() SET search_path = pg_catalog, %I, pg_temp',
                              pg_catalog.current_schema());
    EXECUTE pg_catalog.format('ALTER FUNCTION trackd_count_per_second() SET search_path = pg_catalog, %I, pg_temp',
                              pg_catalog.current_schema());
END
$do$;
REVOKE EXECUTE ON FUNCTION trackd_rollup() FROM PUBLIC;
