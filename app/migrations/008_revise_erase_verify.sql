-- What changes rows after they were written, keeping every rollup of migration 007 exact, and
-- the recomputation that proves it (docs/analytics.md, "How the numbers stay exact").
--
--   trackd_revise_verdicts(...)    an event's is_machine / machine_reason is judged again
--                                  (deferred verdicts: bursts, address bursts, honeypot hits)
--   trackd_erase_recipient(id)     a recipient is erased everywhere (DELETE /v1/recipients/{id})
--   trackd_rollup_expected(c)      every rollup as recomputed from `events` (the reference)
--   trackd_rollup_drift(c)         where the rollups differ from it (`trackd verify`)
--   trackd_rebuild_rollups(c)      the rollups of a campaign made again from `events`
--
-- All of them run with their owner's rights (SECURITY DEFINER, fixed search_path), like the
-- trigger: the service role calls them but cannot write a rollup row itself.

-- Revise the verdicts of events, given by their primary key (occurred_at, id), to is_machine
-- and reason (ignored for a person). Returns how many events changed. Only what changes is
-- counted again: totals move between verdicts, human events between minutes, and for every
-- recipient whose human status changed the human unique, its minute, hour and time to first
-- are moved to where a recomputation from `events` puts them (e.g. a recipient's only human open
-- judged a machine's: human unique opens drop by one).
CREATE FUNCTION trackd_revise_verdicts(
    p_occurred_at timestamptz[], p_id uuid[], p_is_machine boolean[], p_reason text[]
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    -- Slots 64..71: never a counter row a writer (slots 0..63) holds while it waits for a touch row.
    v_slot smallint := trackd_take_slot(64, 8);
    v_changed bigint;
    k_campaign text[];
    k_kind text[];
    k_link int[];
    k_recipient text[];
    v_oldest timestamptz := trackd_oldest_stored();
BEGIN
    -- Exclusive, as an erasure takes it: no writer is between counting its rows and committing
    -- while a revision runs (a writer skips touch rows its events change nothing in, read without
    -- a lock; a revision may move them), and revisions and erasures never hold each other's rows.
    -- Writers wait for a revision (milliseconds for a batch of them), not the other way round.
    PERFORM pg_advisory_xact_lock(hashtext('trackd_erasure'));
    -- 1. The events, locked, changed; totals and human events per minute follow.
    WITH want AS (
        SELECT DISTINCT ON (w.occurred_at, w.id) w.occurred_at, w.id, w.is_machine,
               CASE WHEN w.is_machine THEN coalesce(w.reason, 'machine') END AS reason
        FROM unnest(p_occurred_at, p_id, p_is_machine, p_reason) AS w(occurred_at, id, is_machine, reason)
        WHERE w.is_machine IS NOT NULL
        ORDER BY w.occurred_at, w.id
    ),
    old AS (
        SELECT e.occurred_at, e.id, e.campaign_id, e.kind, e.link_index, e.recipient_id,
               e.is_machine AS was_machine,
               CASE WHEN e.is_machine THEN coalesce(e.machine_reason, 'machine') ELSE '' END AS was_reason,
               w.is_machine, w.reason
        FROM events e JOIN want w ON e.occurred_at = w.occurred_at AND e.id = w.id
        WHERE e.is_machine <> w.is_machine
           OR (w.is_machine AND coalesce(e.machine_reason, 'machine') <> w.reason)
        ORDER BY e.occurred_at, e.id
        FOR UPDATE OF e
    ),
    changed AS (
        UPDATE events e SET is_machine = o.is_machine, machine_reason = o.reason
        FROM old o WHERE e.occurred_at = o.occurred_at AND e.id = o.id
        RETURNING o.*
    ),
    per_link AS (
        SELECT c.*, l.link FROM changed c
        CROSS JOIN LATERAL (VALUES (-1), (c.link_index)) AS l(link) WHERE l.link IS NOT NULL
    ),
    deltas AS (
        SELECT campaign_id, kind, link, was_machine AS is_machine, was_reason AS reason, -1 AS n,
               NULL::timestamptz AS occurred_at FROM per_link
        UNION ALL
        SELECT campaign_id, kind, link, is_machine, coalesce(reason, ''), 1, occurred_at FROM per_link
    ),
    totals AS (
        INSERT INTO rollup_totals AS r (campaign_id, kind, link_index, is_machine, reason, slot, events, first_at, last_at)
        SELECT campaign_id, kind, link, is_machine, reason, v_slot, sum(n), min(occurred_at), max(occurred_at)
        FROM deltas GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (campaign_id, kind, link_index, is_machine, reason, slot)
        DO UPDATE SET events = r.events + EXCLUDED.events, first_at = least(r.first_at, EXCLUDED.first_at),
                      last_at = greatest(r.last_at, EXCLUDED.last_at)
    ),
    flips AS (
        SELECT campaign_id, kind, date_trunc('minute', occurred_at) AS minute,
               sum(CASE WHEN is_machine THEN -1 ELSE 1 END) AS hev
        FROM changed WHERE is_machine <> was_machine GROUP BY 1, 2, 3
    ),
    minutes AS (
        INSERT INTO rollup_minutes AS r (campaign_id, bucket, kind, slot, events, human_events, uniques, human_uniques)
        SELECT campaign_id, minute, kind, v_slot, 0, sum(hev), 0, 0
        FROM flips GROUP BY 1, 2, 3 HAVING sum(hev) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, bucket, kind, slot) DO UPDATE SET human_events = r.human_events + EXCLUDED.human_events
    ),
    hours AS (
        INSERT INTO rollup_hours AS r (campaign_id, bucket, kind, slot, events, human_events, uniques, human_uniques)
        SELECT campaign_id, date_trunc('hour', minute), kind, v_slot, 0, sum(hev), 0, 0
        FROM flips GROUP BY 1, 2, 3 HAVING sum(hev) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, bucket, kind, slot) DO UPDATE SET human_events = r.human_events + EXCLUDED.human_events
    ),
    keys AS (
        SELECT DISTINCT campaign_id, kind, link AS link_index, recipient_id
        FROM per_link WHERE is_machine <> was_machine
    )
    SELECT (SELECT count(*) FROM changed),
           array_agg(campaign_id ORDER BY campaign_id, kind, link_index, recipient_id),
           array_agg(kind ORDER BY campaign_id, kind, link_index, recipient_id),
           array_agg(link_index ORDER BY campaign_id, kind, link_index, recipient_id),
           array_agg(recipient_id ORDER BY campaign_id, kind, link_index, recipient_id)
    INTO v_changed, k_campaign, k_kind, k_link, k_recipient
    FROM keys;

    IF k_campaign IS NULL THEN
        RETURN v_changed;
    END IF;

    -- 2. Lock the recipients' touch rows (in key order, as the trigger does) in a statement of
    -- its own: the recount below then starts after any writer that held them has committed,
    -- and sees its events.
    PERFORM 1 FROM recipient_touch t
    JOIN unnest(k_campaign, k_kind, k_link, k_recipient) AS k(campaign_id, kind, link_index, recipient_id)
      ON t.campaign_id = k.campaign_id AND t.kind = k.kind AND t.link_index = k.link_index AND t.recipient_id = k.recipient_id
    ORDER BY t.campaign_id, t.kind, t.link_index, t.recipient_id
    FOR UPDATE OF t;

    -- 3. Recount their human events from `events` and move each human unique to where it now is.
    WITH k AS (
        SELECT * FROM unnest(k_campaign, k_kind, k_link, k_recipient) AS k(campaign_id, kind, link_index, recipient_id)
    ),
    cur AS (
        -- A first human event on a day retention dropped cannot be recounted: it stays.
        SELECT t.campaign_id, t.kind, t.link_index, t.recipient_id, t.first_human_at, t.sent_at,
               CASE WHEN t.first_human_at < v_oldest THEN t.first_human_at ELSE f.fh END AS fh
        FROM recipient_touch t
        JOIN k ON t.campaign_id = k.campaign_id AND t.kind = k.kind AND t.link_index = k.link_index AND t.recipient_id = k.recipient_id
        CROSS JOIN LATERAL (
            SELECT min(e.occurred_at) FILTER (WHERE NOT e.is_machine) AS fh
            FROM events e
            WHERE e.recipient_id = k.recipient_id AND e.campaign_id = k.campaign_id AND e.kind = k.kind
              AND (k.link_index = -1 OR e.link_index = k.link_index)
        ) AS f
    ),
    touch AS (
        UPDATE recipient_touch t SET first_human_at = c.fh
        FROM cur c
        WHERE t.campaign_id = c.campaign_id AND t.kind = c.kind AND t.link_index = c.link_index AND t.recipient_id = c.recipient_id
        RETURNING c.*
    ),
    moves AS MATERIALIZED (
        SELECT campaign_id, kind, link_index, first_human_at AS at, sent_at AS sent, -1 AS hu FROM touch
        WHERE first_human_at IS NOT NULL AND fh IS DISTINCT FROM first_human_at
        UNION ALL
        SELECT campaign_id, kind, link_index, fh, sent_at, 1 FROM touch
        WHERE fh IS NOT NULL AND fh IS DISTINCT FROM first_human_at
    ),
    uniques AS (
        INSERT INTO rollup_uniques AS r (campaign_id, kind, link_index, slot, uniques, human_uniques)
        SELECT campaign_id, kind, link_index, v_slot, 0, sum(hu)
        FROM moves GROUP BY 1, 2, 3 HAVING sum(hu) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, kind, link_index, slot) DO UPDATE SET human_uniques = r.human_uniques + EXCLUDED.human_uniques
    ),
    minutes AS (
        INSERT INTO rollup_minutes AS r (campaign_id, bucket, kind, slot, events, human_events, uniques, human_uniques)
        SELECT campaign_id, date_trunc('minute', at), kind, v_slot, 0, 0, 0, sum(hu)
        FROM moves WHERE link_index = -1 GROUP BY 1, 2, 3 HAVING sum(hu) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, bucket, kind, slot) DO UPDATE SET human_uniques = r.human_uniques + EXCLUDED.human_uniques
    ),
    hours AS (
        INSERT INTO rollup_hours AS r (campaign_id, bucket, kind, slot, events, human_events, uniques, human_uniques)
        SELECT campaign_id, date_trunc('hour', at), kind, v_slot, 0, 0, 0, sum(hu)
        FROM moves WHERE link_index = -1 GROUP BY 1, 2, 3 HAVING sum(hu) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, bucket, kind, slot) DO UPDATE SET human_uniques = r.human_uniques + EXCLUDED.human_uniques
    )
    INSERT INTO rollup_time_to_first AS r (campaign_id, kind, bucket, slot, recipients, human_recipients)
    SELECT campaign_id, kind, trackd_tto_bucket(at - sent), v_slot, 0, sum(hu)
    FROM moves WHERE link_index = -1 AND sent IS NOT NULL
    GROUP BY 1, 2, 3 HAVING sum(hu) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (campaign_id, kind, bucket, slot) DO UPDATE SET human_recipients = r.human_recipients + EXCLUDED.human_recipients;

    RETURN v_changed;
END
$$;
COMMENT ON FUNCTION trackd_revise_verdicts(timestamptz[], uuid[], boolean[], text[]) IS
    'trackd: judge events again (by occurred_at, id) as machine (with a reason) or person; every rollup follows. Returns the events changed';

-- Erase a recipient everywhere: their events in every campaign, their touch rows, and what both
-- added to every rollup. A tombstone keeps events that happened before now and are still on their
-- way (a journal that was behind) from coming back: the trigger deletes them as they arrive.
-- Returns the events deleted. Totals and series counted from events that retention already
-- dropped stay (they no longer say who): only the events still stored can be subtracted.
CREATE FUNCTION trackd_erase_recipient(p_recipient text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    -- Slots 64..71: never a counter row a writer (slots 0..63) holds while it waits for a touch row.
    v_slot smallint := trackd_take_slot(64, 8);
    v_events bigint;
BEGIN
    -- Exclusive: waits for every writer that has already counted rows in a transaction still
    -- open (they hold it shared), and writers after this one see the tombstone.
    PERFORM pg_advisory_xact_lock(hashtext('trackd_erasure'));
    INSERT INTO erased_recipients AS r (recipient_id, erased_at) VALUES (p_recipient, now())
    ON CONFLICT (recipient_id) DO UPDATE SET erased_at = greatest(r.erased_at, EXCLUDED.erased_at);
    PERFORM 1 FROM recipient_touch WHERE recipient_id = p_recipient
    ORDER BY campaign_id, kind, link_index, recipient_id FOR UPDATE;

    WITH ev AS (
        DELETE FROM events WHERE recipient_id = p_recipient
        RETURNING campaign_id, kind, link_index, occurred_at, is_machine,
                  CASE WHEN is_machine THEN coalesce(machine_reason, 'machine') ELSE '' END AS reason
    ),
    per_link AS (
        SELECT ev.*, l.link FROM ev
        CROSS JOIN LATERAL (VALUES (-1), (ev.link_index)) AS l(link) WHERE l.link IS NOT NULL
    ),
    totals AS (
        INSERT INTO rollup_totals AS r (campaign_id, kind, link_index, is_machine, reason, slot, events)
        SELECT campaign_id, kind, link, is_machine, reason, v_slot, -count(*)
        FROM per_link GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (campaign_id, kind, link_index, is_machine, reason, slot)
        DO UPDATE SET events = r.events + EXCLUDED.events
    ),
    touch AS (
        DELETE FROM recipient_touch WHERE recipient_id = p_recipient
        RETURNING campaign_id, kind, link_index, first_at, first_human_at, sent_at
    ),
    moves AS MATERIALIZED (
        SELECT t.campaign_id, t.kind, t.link_index, m.at, t.sent_at AS sent, m.u, m.hu
        FROM touch t CROSS JOIN LATERAL (VALUES
            (t.first_at, -1, 0, true),
            (t.first_human_at, 0, -1, t.first_human_at IS NOT NULL)
        ) AS m(at, u, hu, keep)
        WHERE m.keep
    ),
    uniques AS (
        INSERT INTO rollup_uniques AS r (campaign_id, kind, link_index, slot, uniques, human_uniques)
        SELECT campaign_id, kind, link_index, v_slot, sum(u), sum(hu)
        FROM moves GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, kind, link_index, slot)
        DO UPDATE SET uniques = r.uniques + EXCLUDED.uniques, human_uniques = r.human_uniques + EXCLUDED.human_uniques
    ),
    series AS (
        SELECT campaign_id, kind, date_trunc('minute', occurred_at) AS minute,
               -count(*) AS ev, -count(*) FILTER (WHERE NOT is_machine) AS hev, 0 AS u, 0 AS hu
        FROM ev GROUP BY 1, 2, 3
        UNION ALL
        SELECT campaign_id, kind, date_trunc('minute', at), 0, 0, u, hu FROM moves WHERE link_index = -1
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
    tto AS (
        INSERT INTO rollup_time_to_first AS r (campaign_id, kind, bucket, slot, recipients, human_recipients)
        SELECT campaign_id, kind, trackd_tto_bucket(at - sent), v_slot, sum(u), sum(hu)
        FROM moves WHERE link_index = -1 AND sent IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, kind, bucket, slot) DO UPDATE SET
            recipients = r.recipients + EXCLUDED.recipients, human_recipients = r.human_recipients + EXCLUDED.human_recipients
    )
    SELECT count(*) INTO v_events FROM ev;
    RETURN v_events;
END
$$;
COMMENT ON FUNCTION trackd_erase_recipient(text) IS
    'trackd: erase a recipient''s events in every campaign and their part in every rollup; late events from before now are refused. Returns the events deleted';

-- Every rollup number, recomputed from `events` (campaign NULL: every campaign): the reference
-- the rollups must equal while the campaign's events are all still stored. One row per number:
-- (rollup, campaign, key, value), keys spelled as in trackd_rollup_actual.
CREATE FUNCTION trackd_rollup_expected(p_campaign text)
RETURNS TABLE (rollup text, campaign_id text, key text, value bigint)
LANGUAGE sql STABLE AS $$
    WITH ev AS (
        SELECT * FROM events WHERE p_campaign IS NULL OR events.campaign_id = p_campaign
    ),
    per_link AS (
        SELECT ev.*, l.link FROM ev
        CROSS JOIN LATERAL (VALUES (-1), (ev.link_index)) AS l(link) WHERE l.link IS NOT NULL
    ),
    firsts AS (
        SELECT ev.campaign_id, ev.kind, ev.recipient_id, min(occurred_at) AS f,
               min(occurred_at) FILTER (WHERE NOT is_machine) AS fh, min(sent_at) AS s
        FROM ev GROUP BY 1, 2, 3
    ),
    series AS (
        SELECT ev.campaign_id, ev.kind, occurred_at AS at, 1 AS ev, (NOT is_machine)::int AS hev, 0 AS u, 0 AS hu FROM ev
        UNION ALL SELECT firsts.campaign_id, firsts.kind, f, 0, 0, 1, 0 FROM firsts
        UNION ALL SELECT firsts.campaign_id, firsts.kind, fh, 0, 0, 0, 1 FROM firsts WHERE fh IS NOT NULL
    ),
    tto AS (
        SELECT firsts.campaign_id, firsts.kind, trackd_tto_bucket(f - s) AS b, 1 AS u, 0 AS hu FROM firsts WHERE s IS NOT NULL
        UNION ALL SELECT firsts.campaign_id, firsts.kind, trackd_tto_bucket(fh - s), 0, 1 FROM firsts WHERE s IS NOT NULL AND fh IS NOT NULL
    )
    SELECT 'totals', per_link.campaign_id,
           concat_ws('/', kind, link, CASE WHEN is_machine THEN coalesce(machine_reason, 'machine') ELSE '' END), count(*)
    FROM per_link GROUP BY 2, 3
    UNION ALL
    SELECT 'uniques', u.campaign_id, concat_ws('/', kind, link, w), n
    FROM (SELECT per_link.campaign_id, kind, link, count(DISTINCT recipient_id) AS a,
                 count(DISTINCT recipient_id) FILTER (WHERE NOT is_machine) AS h
          FROM per_link GROUP BY 1, 2, 3) u
    CROSS JOIN LATERAL (VALUES ('all', u.a), ('human', u.h)) AS v(w, n)
    UNION ALL
    SELECT 'minutes', s.campaign_id, concat_ws('/', s.kind, to_char(s.b AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI'), v.w), v.n
    FROM (SELECT series.campaign_id, kind, date_trunc('minute', at) AS b, sum(ev) AS ev, sum(hev) AS hev,
                 sum(u) AS u, sum(hu) AS hu FROM series GROUP BY 1, 2, 3) s
    CROSS JOIN LATERAL (VALUES ('events', s.ev), ('human_events', s.hev), ('uniques', s.u), ('human_uniques', s.hu)) AS v(w, n)
    UNION ALL
    SELECT 'hours', s.campaign_id, concat_ws('/', s.kind, to_char(s.b AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), v.w), v.n
    FROM (SELECT series.campaign_id, kind, date_trunc('hour', at) AS b, sum(ev) AS ev, sum(hev) AS hev,
                 sum(u) AS u, sum(hu) AS hu FROM series GROUP BY 1, 2, 3) s
    CROSS JOIN LATERAL (VALUES ('events', s.ev), ('human_events', s.hev), ('uniques', s.u), ('human_uniques', s.hu)) AS v(w, n)
    UNION ALL
    SELECT 'time_to_first', t.campaign_id, concat_ws('/', t.kind, t.b, v.w), v.n
    FROM (SELECT tto.campaign_id, kind, b, sum(u) AS u, sum(hu) AS hu FROM tto GROUP BY 1, 2, 3) t
    CROSS JOIN LATERAL (VALUES ('all', t.u), ('human', t.hu)) AS v(w, n)
    UNION ALL
    -- The touch rows: how many differ from the recipient's events is what matters.
    SELECT 'touch', t.campaign_id, concat_ws('/', t.kind, t.link, t.recipient_id), t.digest
    FROM (SELECT per_link.campaign_id, kind, link, recipient_id,
                 hashtextextended(format('%s|%s|%s', min(occurred_at), min(occurred_at) FILTER (WHERE NOT is_machine),
                                         min(sent_at)), 0) AS digest
          FROM per_link GROUP BY 1, 2, 3, 4) t
$$;

-- The same numbers as the rollups hold them (summed over slots).
CREATE FUNCTION trackd_rollup_actual(p_campaign text)
RETURNS TABLE (rollup text, campaign_id text, key text, value bigint)
LANGUAGE sql STABLE AS $$
    SELECT 'totals', r.campaign_id, concat_ws('/', kind, link_index, reason), sum(events)::bigint
    FROM rollup_totals r WHERE p_campaign IS NULL OR r.campaign_id = p_campaign GROUP BY 2, 3
    UNION ALL
    SELECT 'uniques', u.campaign_id, concat_ws('/', kind, link_index, v.w), v.n
    FROM (SELECT r.campaign_id, kind, link_index, sum(uniques)::bigint AS a, sum(human_uniques)::bigint AS h
          FROM rollup_uniques r WHERE p_campaign IS NULL OR r.campaign_id = p_campaign GROUP BY 1, 2, 3) u
    CROSS JOIN LATERAL (VALUES ('all', u.a), ('human', u.h)) AS v(w, n)
    UNION ALL
    SELECT 'minutes', s.campaign_id, concat_ws('/', s.kind, to_char(s.bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI'), v.w), v.n
    FROM (SELECT r.campaign_id, kind, bucket, sum(events)::bigint AS ev, sum(human_events)::bigint AS hev,
                 sum(uniques)::bigint AS u, sum(human_uniques)::bigint AS hu
          FROM rollup_minutes r WHERE p_campaign IS NULL OR r.campaign_id = p_campaign GROUP BY 1, 2, 3) s
    CROSS JOIN LATERAL (VALUES ('events', s.ev), ('human_events', s.hev), ('uniques', s.u), ('human_uniques', s.hu)) AS v(w, n)
    UNION ALL
    SELECT 'hours', s.campaign_id, concat_ws('/', s.kind, to_char(s.bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), v.w), v.n
    FROM (SELECT r.campaign_id, kind, bucket, sum(events)::bigint AS ev, sum(human_events)::bigint AS hev,
                 sum(uniques)::bigint AS u, sum(human_uniques)::bigint AS hu
          FROM rollup_hours r WHERE p_campaign IS NULL OR r.campaign_id = p_campaign GROUP BY 1, 2, 3) s
    CROSS JOIN LATERAL (VALUES ('events', s.ev), ('human_events', s.hev), ('uniques', s.u), ('human_uniques', s.hu)) AS v(w, n)
    UNION ALL
    SELECT 'time_to_first', t.campaign_id, concat_ws('/', t.kind, t.bucket, v.w), v.n
    FROM (SELECT r.campaign_id, kind, bucket, sum(recipients)::bigint AS u, sum(human_recipients)::bigint AS hu
          FROM rollup_time_to_first r WHERE p_campaign IS NULL OR r.campaign_id = p_campaign GROUP BY 1, 2, 3) t
    CROSS JOIN LATERAL (VALUES ('all', t.u), ('human', t.hu)) AS v(w, n)
    UNION ALL
    SELECT 'touch', t.campaign_id, concat_ws('/', t.kind, t.link_index, t.recipient_id),
           hashtextextended(format('%s|%s|%s', first_at, first_human_at, sent_at), 0)
    FROM recipient_touch t WHERE p_campaign IS NULL OR t.campaign_id = p_campaign
$$;

-- Where the rollups differ from the recomputation. A number that is 0 on one side and missing on
-- the other is no drift. Campaigns with rollups from before the oldest stored partition (their
-- early events dropped by retention) cannot be recomputed and are left out.
CREATE FUNCTION trackd_rollup_drift(p_campaign text)
RETURNS TABLE (rollup text, campaign_id text, key text, expected bigint, actual bigint)
LANGUAGE sql STABLE AS $$
    WITH oldest AS (SELECT trackd_oldest_stored() AS at),
    cut AS (
        SELECT DISTINCT h.campaign_id FROM rollup_hours h, oldest
        WHERE (p_campaign IS NULL OR h.campaign_id = p_campaign)
          AND (oldest.at IS NULL OR h.bucket < date_trunc('hour', oldest.at))
    ),
    e AS (SELECT * FROM trackd_rollup_expected(p_campaign) x WHERE x.campaign_id NOT IN (SELECT campaign_id FROM cut)),
    a AS (SELECT * FROM trackd_rollup_actual(p_campaign) x WHERE x.campaign_id NOT IN (SELECT campaign_id FROM cut))
    SELECT coalesce(e.rollup, a.rollup), coalesce(e.campaign_id, a.campaign_id), coalesce(e.key, a.key),
           e.value, a.value
    FROM e FULL JOIN a ON e.rollup = a.rollup AND e.campaign_id = a.campaign_id AND e.key = a.key
    WHERE (coalesce(e.value, 0) <> coalesce(a.value, 0)
           OR (coalesce(e.rollup, a.rollup) = 'touch' AND (e.value IS NULL) <> (a.value IS NULL)))
    ORDER BY 1, 2, 3
$$;
COMMENT ON FUNCTION trackd_rollup_drift(text) IS
    'trackd: every rollup number that differs from its recomputation from events (NULL: all campaigns); empty when exact';

-- The rollups of one campaign made again from `events` (after a drift was found and its cause
-- fixed, or for rows inserted before migration 007). Holds writers off while it runs.
CREATE FUNCTION trackd_rebuild_rollups(p_campaign text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rollup_hours WHERE campaign_id = p_campaign
               AND bucket < date_trunc('hour', coalesce(trackd_oldest_stored(), '-infinity'))) THEN
        RAISE EXCEPTION 'trackd: campaign % has rollups from days retention dropped; a rebuild from the events left would lose them', p_campaign
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('trackd_erasure'));
    DELETE FROM rollup_totals WHERE campaign_id = p_campaign;
    DELETE FROM rollup_uniques WHERE campaign_id = p_campaign;
    DELETE FROM rollup_minutes WHERE campaign_id = p_campaign;
    DELETE FROM rollup_hours WHERE campaign_id = p_campaign;
    DELETE FROM rollup_time_to_first WHERE campaign_id = p_campaign;
    DELETE FROM recipient_touch WHERE campaign_id = p_campaign;
    DELETE FROM campaign_links WHERE campaign_id = p_campaign;
    DELETE FROM campaign_batches WHERE campaign_id = p_campaign;
    -- The campaign's events go out and back in (keeping their feed position, xid), so that the
    -- trigger counts them exactly as it counts every insert.
    CREATE TEMP TABLE trackd_rebuild ON COMMIT DROP AS SELECT * FROM events WHERE campaign_id = p_campaign;
    DELETE FROM events WHERE campaign_id = p_campaign;
    INSERT INTO events SELECT * FROM pg_temp.trackd_rebuild ORDER BY occurred_at, id;
    DROP TABLE pg_temp.trackd_rebuild;
END
$$;
COMMENT ON FUNCTION trackd_rebuild_rollups(text) IS
    'trackd: make one campaign''s rollups again from its events (trackd verify --repair)';

DO $do$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['trackd_revise_verdicts(timestamptz[], uuid[], boolean[], text[])',
                             'trackd_erase_recipient(text)', 'trackd_rebuild_rollups(text)'] LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f,
                                  pg_catalog.current_schema());
    END LOOP;
    -- Nothing of trackd's is executable by everyone (PUBLIC); trackd_apply_grants() says who may.
    FOREACH f IN ARRAY ARRAY['trackd_revise_verdicts(timestamptz[], uuid[], boolean[], text[])',
                             'trackd_erase_recipient(text)', 'trackd_rebuild_rollups(text)',
                             'trackd_tto_bounds()', 'trackd_tto_bucket(interval)', 'trackd_rollup_expected(text)',
                             'trackd_rollup_actual(text)', 'trackd_rollup_drift(text)', 'trackd_take_slot(integer, integer)',
                             'trackd_oldest_stored()'] LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$do$;

-- Events recorded before migration 007 have no rollups yet: count them now.
SELECT trackd_rebuild_rollups(c.campaign_id) FROM (SELECT DISTINCT campaign_id FROM events) c;
-- Reads go to the rollups now; the campaign index served the old stats query and the rebuild
-- above. Every index on events costs the writer (this one about a fifth).
DROP INDEX events_campaign_idx;

INSERT INTO trackd_grants (role, relation, privileges, why) VALUES
    ('trackd_service', 'rollup_totals', 'SELECT', 'the stats and links API; written only by the trigger and functions (owner''s rights)'),
    ('trackd_service', 'rollup_uniques', 'SELECT', 'the stats and links API'),
    ('trackd_service', 'rollup_minutes', 'SELECT', 'the series API (interval=minute)'),
    ('trackd_service', 'rollup_hours', 'SELECT', 'the series API (interval=hour, day)'),
    ('trackd_service', 'rollup_time_to_first', 'SELECT', 'the stats API (time to first open / click)'),
    ('trackd_service', 'recipient_touch', 'SELECT', 'the recipient API'),
    ('trackd_service', 'campaign_links', 'SELECT', 'the links API'),
    ('trackd_service', 'campaign_sends', 'SELECT, INSERT', 'POST /v1/campaigns/{id}/sends records a report once (ON CONFLICT DO NOTHING), the stats API sums them'),
    ('trackd_service', 'campaign_batches', 'SELECT', 'the per-campaign event feed'),
    ('trackd_reader', 'campaign_batches', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_service', 'erased_recipients', 'SELECT', 'the erasure API answers whether a recipient was erased; tombstones are written by trackd_erase_recipient'),
    ('trackd_reader', 'rollup_totals', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'rollup_uniques', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'rollup_minutes', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'rollup_hours', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'rollup_time_to_first', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'recipient_touch', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'campaign_links', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'campaign_sends', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'erased_recipients', 'SELECT', 'analysts read everything trackd records');

-- The grants of migration 005, and EXECUTE on the two functions the service calls.
CREATE OR REPLACE FUNCTION trackd_apply_grants() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    may_create boolean;
    r text;
    g record;
BEGIN
    SELECT rolsuper OR rolcreaterole INTO may_create FROM pg_roles WHERE rolname = current_user;
    FOREACH r IN ARRAY ARRAY['trackd_service', 'trackd_reader'] LOOP
        IF to_regrole(r) IS NULL THEN
            IF may_create THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                RAISE NOTICE 'trackd: created role %', r;
            ELSE
                RAISE NOTICE 'trackd: role % does not exist and % may not create roles: '
                    'have a DBA run CREATE ROLE % NOLOGIN, then run trackd migrate again '
                    '(docs/database-roles.md)', r, current_user, r;
                CONTINUE;
            END IF;
        END IF;
        -- Connect and find trackd's tables; no CREATE: the roles make no table of their own.
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), r);
        FOR g IN SELECT DISTINCT relation FROM trackd_grants ORDER BY relation LOOP
            EXECUTE format('REVOKE ALL ON %I FROM %I', g.relation, r);
        END LOOP;
        FOR g IN SELECT relation, privileges FROM trackd_grants WHERE role = r ORDER BY relation LOOP
            EXECUTE format('GRANT %s ON %I TO %I', g.privileges, g.relation, r);
        END LOOP;
    END LOOP;

    IF to_regrole('trackd_service') IS NOT NULL THEN
        -- The writer's temporary stage table (trackd_stage, for replays), and partitions made
        -- through the owner's function.
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO trackd_service', current_database());
        GRANT EXECUTE ON FUNCTION trackd_ensure_partitions(date[]) TO trackd_service;
        -- Deferred verdicts and the erasure API (migration 008), with the owner's rights.
        GRANT EXECUTE ON FUNCTION trackd_revise_verdicts(timestamptz[], uuid[], boolean[], text[]) TO trackd_service;
        GRANT EXECUTE ON FUNCTION trackd_erase_recipient(text) TO trackd_service;
    END IF;
    -- Read-only helpers (they run with the caller's rights): the time-to-first buckets, and the
    -- recomputation of the rollups from events (`trackd verify` as either role).
    FOREACH r IN ARRAY ARRAY['trackd_service', 'trackd_reader'] LOOP
        CONTINUE WHEN to_regrole(r) IS NULL;
        EXECUTE format('GRANT EXECUTE ON FUNCTION trackd_tto_bounds(), trackd_tto_bucket(interval),'
                       ' trackd_rollup_expected(text), trackd_rollup_actual(text), trackd_rollup_drift(text),'
                       ' trackd_oldest_stored() TO %I', r);
    END LOOP;
    IF to_regrole('trackd_service') IS NOT NULL THEN
        -- A role that may create objects in trackd's schema could plant functions or tables that
        -- trackd's own code would pick up (PostgreSQL 14 and older grant CREATE on public to PUBLIC).
        IF has_schema_privilege('trackd_service', current_schema(), 'CREATE') THEN
            RAISE NOTICE 'trackd: trackd_service may create objects in schema %: run REVOKE CREATE ON SCHEMA % FROM PUBLIC (docs/database-roles.md)',
                current_schema(), current_schema();
        END IF;
    END IF;
END
$$;
SELECT trackd_apply_grants();
