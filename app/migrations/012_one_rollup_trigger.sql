-- The writer's cost with every rollup (issue #13), cut where measurement showed it going; the
-- rollups themselves are unchanged (docs/benchmarks.md, "The writer's trigger, measured").
--
-- * One trigger, not two: the per-second table was kept by a trigger of its own (003, 007), a
--   second function call, slot and pass over the inserted rows per statement. Its counting moves
--   into trackd_rollup, from the rows the rollups count: an erased recipient's late events,
--   which the rollups never counted, are no longer counted per second either.
-- * recipient_touch is read by primary-key probes, never by a hash join over the whole table.
-- * No erasure probe per row while nothing was ever erased.
--
-- Writers of the previous version (a rolling upgrade) set trackd.per_second as before and are
-- counted by this trigger exactly once.

CREATE OR REPLACE FUNCTION trackd_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    -- Writers use slots 0..63 (revisions and erasures 64..71: never a row a writer holds).
    v_slot smallint := trackd_take_slot(0, 64);
    -- interactions_per_second is counted here too, for the writers that ask (SET LOCAL
    -- trackd.per_second = 'trigger': trackd's writers since migration 003; rows inserted by hand
    -- are not counted, as before).
    v_per_second boolean := current_setting('trackd.per_second', true) IS NOT DISTINCT FROM 'trigger';
BEGIN
    -- Erasures and revisions (trackd_erase_recipient, trackd_revise_verdicts) take this lock
    -- exclusively: they wait for writers that already counted rows, and writers after them see
    -- their tombstones and verdicts in the statements below.
    PERFORM pg_advisory_xact_lock_shared(hashtext('trackd_erasure'));
    -- Nothing erased yet (the common case): one look at an empty table, not a probe per row.
    IF EXISTS (SELECT 1 FROM erased_recipients) AND EXISTS (SELECT 1 FROM inserted i JOIN erased_recipients r
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
        -- One primary-key probe per key of the batch (LATERAL ... LIMIT 1 keeps the planner from
        -- a hash join, which reads the whole table for every batch: its cost grew with the
        -- table until the statistics tipped the plan; measured in docs/benchmarks.md).
        LEFT JOIN LATERAL (SELECT t.campaign_id, t.first_at, t.first_human_at, t.sent_at FROM recipient_touch t
             WHERE t.campaign_id = b.campaign_id AND t.kind = b.kind
             AND t.link_index = b.link AND t.recipient_id = b.recipient_id LIMIT 1) t ON true
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
    -- The per-second table (migration 003's trigger until now): from `ins`, so an erased
    -- recipient's late events are counted nowhere here either.
    per_second AS (
        INSERT INTO interactions_per_second AS t (second, campaign_id, kind, is_machine, slot, events, max_lag_ms)
        SELECT date_trunc('second', occurred_at), campaign_id, kind, is_machine, v_slot, count(*),
               least(2147483647, greatest(0, ceil(extract(epoch FROM clock_timestamp() - min(occurred_at)) * 1000)))::int
        FROM ins WHERE v_per_second GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (second, campaign_id, kind, is_machine, slot) DO UPDATE
        SET events = t.events + EXCLUDED.events, max_lag_ms = greatest(t.max_lag_ms, EXCLUDED.max_lag_ms)
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

-- Dropping a trigger takes ACCESS EXCLUSIVE on `events`. Queued behind a long reader (`trackd
-- verify`, the judge, an analyst's query), that request would hold up every writer and feed read
-- behind it for as long as the reader runs (the migrations run with no statement timeout). So it
-- asks for 2 s at a time and steps aside for 1 s between tries, which lets the queue drain
-- (writers' journals keep what arrives meanwhile); after 10 minutes it gives up, naming why.
DO $do$
BEGIN
    FOR attempt IN 1 .. 200 LOOP
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
            DROP TRIGGER events_count_per_second ON events;
            PERFORM pg_catalog.set_config('lock_timeout', '0', true);
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            IF attempt % 10 = 1 THEN
                RAISE NOTICE 'trackd: migration 012 is waiting for transactions that hold events (pg_stat_activity)';
            END IF;
            PERFORM pg_catalog.pg_sleep(1);
        END;
    END LOOP;
    RAISE EXCEPTION 'trackd: migration 012 could not lock events for 10 minutes: a long transaction holds it (see pg_stat_activity), try again when it is done';
END
$do$;
DROP FUNCTION trackd_count_per_second();

-- CREATE OR REPLACE resets the function's settings: its fixed search_path again (migration 007
-- says why).
DO $do$
BEGIN
    EXECUTE pg_catalog.format('ALTER FUNCTION trackd_rollup() SET search_path = pg_catalog, %I, pg_temp',
                              pg_catalog.current_schema());
END
$do$;
