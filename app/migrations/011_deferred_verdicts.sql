-- Deferred verdicts (docs/analytics.md, "Verdicts judged later"): what only later events reveal,
-- judged in PostgreSQL, where every pod's events meet.
--
-- The hot path judges each request on its own (HEAD, prefetch headers, user agents, networks:
-- the real-time reason codes). Some patterns exist only across events, and often across pods (a
-- scanner's five clicks land on whichever pods the load balancer picks):
--
--   burst            two or more clicks of one recipient in one campaign, each within
--                    p_burst_s (1 s) of the next: every click of the chain is a machine's
--                    (docs/research/machine-traffic.md §3 row 15, Marketo's "proximity pattern").
--                    Clicks the hot path already judged a machine's (HEAD, a prefetch, Office's
--                    link probe, a scanner network, ...) are not part of a chain: such a request
--                    often comes just before the person's own click (Office probes a link, then
--                    opens the browser; Safe Links checks it at click time), so it must not
--                    take that click with it.
--   address_burst    one link of one recipient (or the recipient's pixel) fetched from
--                    p_address_count (3) or more different addresses (ip and addr_tag) within
--                    p_address_window_s (30 s): every event of that window (row 16)
--   honeypot_scan    the other events of a honeypot hit's scan: the same recipient and campaign,
--                    from the hit's address within p_scan_window_s (60 s) of it, or from any
--                    address within p_burst_s of it (row 19)
--   scan             the other events of a burst's scan: the same recipient and campaign, from
--                    the address of one of the burst's clicks, within p_scan_window_s of it (a
--                    gateway fetches the pixel a median 9 s after delivery and bursts the links
--                    ~30 s later, from the same address; research §7.2)
--   probable_network the address is in a *probable* vendor network (evidence bit 32: browser
--                    isolation can carry a person) and the event came within
--                    p_probable_window_s (600 s) of the send: machine only near delivery (§6)
--   honeypot         a honeypot hit (evidence bit 64) the hot path did not already call one
--
-- A person's own later click from another address (more than p_burst_s after the scan) matches
-- none of them and stays a person's. Verdicts only ever add reasons: a machine is never turned
-- back into a person, and the reason codes already there stay first (machine_reason becomes
-- e.g. 'scanner_network,burst').
--
-- Which events, and when: trackd_judge_verdicts() takes the events committed since the last call
-- in commit order (events.xid, as the event feed does: only transactions older than every one
-- still running, so no event can appear behind the watermark later), looks at every event of the
-- same recipient and campaign around them, and revises what changed through
-- trackd_revise_verdicts (migration 008), which keeps every rollup exact. Every rule is
-- monotone (more events can only add machines), so judging each event once, when the last event
-- of its pattern has committed, is enough: an event that arrives late (a pod's journal replayed
-- after an outage, hours later) is judged with its neighbours, whenever they were written.
-- The service calls it every TRACKD_VERDICT_INTERVAL_S from every pod (app/verdicts/deferred.py);
-- one call at a time does the work.

-- Where judging has got to: one row. The watermark is the last event judged, in feed order
-- (xid, id); events after it are judged by the next call.
CREATE TABLE verdict_progress (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    watermark_xid xid8        NOT NULL,
    watermark_id  uuid        NOT NULL,
    -- The last call that did the work, and the last one that found nothing more to judge: every
    -- event committed before caught_up_at had been judged by then (the judge's lag is now minus it).
    judged_at     timestamptz,
    caught_up_at  timestamptz,
    -- Since the migration: events judged, and events whose verdict a judgement changed.
    examined      bigint      NOT NULL DEFAULT 0,
    revised       bigint      NOT NULL DEFAULT 0
);
COMMENT ON TABLE verdict_progress IS
    'trackd: how far the deferred verdicts (trackd_judge_verdicts) have got: one row; events after (watermark_xid, watermark_id) in feed order are not judged yet';
COMMENT ON COLUMN verdict_progress.watermark_xid IS 'the inserting transaction (events.xid) of the last event judged';
COMMENT ON COLUMN verdict_progress.watermark_id IS 'the id of the last event judged (events within one transaction go by id)';
COMMENT ON COLUMN verdict_progress.judged_at IS 'when a call last judged (took the lock and looked)';
COMMENT ON COLUMN verdict_progress.caught_up_at IS 'when a call last found every committed event judged: the judge''s lag is now() minus this';
COMMENT ON COLUMN verdict_progress.examined IS 'events judged since migration 011';
COMMENT ON COLUMN verdict_progress.revised IS 'events whose verdict the deferred rules changed since migration 011';

-- Start from now: events recorded before this migration keep their verdicts (judging the whole
-- table at the first call would hold a pod for as long as the table is large). Just below the
-- oldest transaction still running, so that events a writer is committing right now are judged.
INSERT INTO verdict_progress (watermark_xid, watermark_id, caught_up_at)
VALUES (((pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1)::text)::xid8,
        'ffffffff-ffff-ffff-ffff-ffffffffffff', now());

-- Judge the next p_limit events committed since the watermark (and their neighbours). Returns:
--   judged        false: another call (another pod) is judging right now; this one did nothing
--   examined      events taken from after the watermark
--   revised       events (of those and their neighbours) whose verdict changed
--   watermark     the new watermark (xid)
--   more          examined = p_limit: more may be waiting, call again at once
--   caught_up_at  as in verdict_progress (also when judged is false)
--   newest_at     the latest occurred_at among the events examined (NULL when none)
-- Idempotent: judging the same events again finds every reason already there and changes nothing.
CREATE FUNCTION trackd_judge_verdicts(
    p_limit int DEFAULT 50000,
    p_burst_s float8 DEFAULT 1.0,
    p_address_window_s float8 DEFAULT 30,
    p_address_count int DEFAULT 3,
    p_scan_window_s float8 DEFAULT 60,
    p_probable_window_s float8 DEFAULT 600
) RETURNS TABLE (judged boolean, examined bigint, revised bigint, watermark xid8, more boolean,
                 caught_up_at timestamptz, newest_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_burst interval := make_interval(secs => p_burst_s);
    v_addr interval := make_interval(secs => p_address_window_s);
    v_scan interval := make_interval(secs => p_scan_window_s);
    v_probable interval := make_interval(secs => p_probable_window_s);
    -- How far around an event its patterns reach: a scan's events are within p_scan_window_s of
    -- a burst click, whose partner is within p_burst_s of it.
    v_span interval := make_interval(secs => greatest(p_burst_s, p_address_window_s, p_scan_window_s + p_burst_s));
    v_xid xid8;
    v_id uuid;
    v_xmin xid8;
    v_examined bigint;
    v_last_xid xid8;
    v_last_id uuid;
    v_newest timestamptz;
    v_revised bigint := 0;
    v_work_mem text;
    k_revise_slice constant int := 1000;
    a_at timestamptz[];
    a_id uuid[];
    a_reason text[];
BEGIN
    IF p_limit < 1 OR p_burst_s < 0 OR p_address_window_s < 0 OR p_address_count < 2
       OR p_scan_window_s < 0 OR p_probable_window_s < 0 THEN
        RAISE EXCEPTION 'trackd: trackd_judge_verdicts: a limit or window out of range'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One judge at a time, across every pod: a second caller returns at once, having done
    -- nothing (the first one judges its events too). Released at commit.
    IF NOT pg_try_advisory_xact_lock(hashtext('trackd_verdicts')) THEN
        RETURN QUERY SELECT false, 0::bigint, 0::bigint, p.watermark_xid, false, p.caught_up_at,
                            NULL::timestamptz FROM verdict_progress p;
        RETURN;
    END IF;
    -- No FOR UPDATE (the lock above is what serializes callers): a row lock would give this
    -- transaction an xid from its start, holding back pg_snapshot_xmin, and with it the event
    -- feed, for the whole call; it gets one only when it revises, near its end.
    SELECT p.watermark_xid, p.watermark_id INTO v_xid, v_id FROM verdict_progress p;
    -- Transactions below this one have all ended: every event they wrote is visible from here
    -- on, and none can still appear below it (the event feed's rule, app/analytics.py).
    v_xmin := pg_snapshot_xmin(pg_current_snapshot());

    -- The neighbourhoods are sorted in memory (tens of MB for 50,000 events; one caller at a
    -- time). Only for this statement: the revision's own plans are made with the usual setting.
    v_work_mem := current_setting('work_mem');
    PERFORM set_config('work_mem', '64MB', true);
    WITH batch AS MATERIALIZED (
        -- The next events in commit order (events_feed_idx).
        SELECT e.xid, e.id, e.occurred_at, e.campaign_id, e.recipient_id
        FROM events e
        WHERE (e.xid, e.id) > (v_xid, v_id) AND e.xid < v_xmin
        ORDER BY e.xid, e.id
        LIMIT p_limit
    ),
    keys AS MATERIALIZED (
        SELECT b.campaign_id, b.recipient_id, min(b.occurred_at) - v_span AS lo, max(b.occurred_at) + v_span AS hi
        FROM batch b GROUP BY 1, 2
    ),
    hood AS MATERIALIZED (
        -- Their neighbourhoods: every event of the same recipient and campaign within the widest
        -- window (through the hash index on recipient_id, in the partitions of those days only;
        -- whatever pod wrote it, whenever), and how many there are (most recipients: one).
        SELECT n.* FROM keys k
        CROSS JOIN LATERAL (
            SELECT e.occurred_at, e.id, e.kind, e.campaign_id, e.recipient_id, coalesce(e.link_index, -1) AS link,
                   -- One address: the stored address (or network) and the tag together. The
                   -- tag has fewer bits when the row keeps an IPv4 /24 (docs/engagement.md), so
                   -- two addresses are the same only when both agree.
                   CASE WHEN e.addr_tag IS NOT NULL
                        THEN hashtextextended(coalesce(e.ip::text, '') || '#' || e.addr_tag, 0) END AS addr_tag,
                   e.sent_at, coalesce(e.evidence, 0) AS evidence,
                   CASE WHEN e.is_machine THEN coalesce(e.machine_reason, 'machine') END AS old_reason,
                   CASE WHEN e.is_machine THEN string_to_array(coalesce(e.machine_reason, 'machine'), ',')
                        ELSE '{}'::text[] END AS old_codes,
                   count(*) OVER () AS n_key
            FROM events e
            WHERE e.recipient_id = k.recipient_id AND e.campaign_id = k.campaign_id
              AND e.occurred_at >= k.lo AND e.occurred_at <= k.hi
        ) n
    ),
    h0 AS (
        SELECT h.*,
               -- a honeypot hit: the evidence says so, or (rows without evidence) the hot path did
               (h.evidence & 64 <> 0 OR 'honeypot' = ANY(h.old_codes)) AS is_hit,
               (h.evidence & 32 <> 0 AND h.occurred_at >= h.sent_at AND h.occurred_at <= h.sent_at + v_probable)
                   AS is_probable,
               -- judged a machine's at receipt (a code that is not a deferred one)
               NOT (h.old_codes <@ ARRAY['burst', 'address_burst', 'scan', 'honeypot_scan', 'probable_network'])
                   AS at_receipt
        FROM hood h
    ),
    -- Every rule but the last two needs two events of one recipient: the others (most of them)
    -- skip the windows below. Windows only, no joins: each rule is a frame around each event.
    m1 AS (
        SELECT h.*,
               -- burst: a click within p_burst_s of the recipient's previous or next click, among
               -- the clicks not judged at receipt
               h.kind = 'click' AND NOT h.at_receipt AND coalesce(
                   h.occurred_at - lag(h.occurred_at) OVER w_kind <= v_burst
                   OR lead(h.occurred_at) OVER w_kind - h.occurred_at <= v_burst, false) AS in_burst,
               count(*) OVER w_link AS n_link
        FROM h0 h WHERE h.n_key > 1
        WINDOW w_kind AS (PARTITION BY h.campaign_id, h.recipient_id, h.kind, h.at_receipt ORDER BY h.occurred_at, h.id),
               w_link AS (PARTITION BY h.campaign_id, h.recipient_id, h.kind, h.link)
    ),
    m2 AS (
        SELECT m.*,
               -- the clicks of bursts, this time or judged so earlier
               m.kind = 'click' AND (m.in_burst OR 'burst' = ANY(m.old_codes)) AS burst_click
        FROM m1 m
    ),
    m3 AS (
        SELECT m.*,
               -- scan / honeypot_scan: a burst click or a hit from this address within p_scan_window_s
               CASE WHEN m.addr_tag IS NOT NULL THEN count(*) FILTER (WHERE m.burst_click) OVER w_addr END AS bursts_by_addr,
               CASE WHEN m.addr_tag IS NOT NULL THEN count(*) FILTER (WHERE m.is_hit) OVER w_addr END AS hits_by_addr,
               -- honeypot_scan: a hit from any address within p_burst_s
               count(*) FILTER (WHERE m.is_hit) OVER w_near AS hits_near,
               -- address_burst: the addresses of this link (or pixel) from here to p_address_window_s on
               CASE WHEN m.n_link >= p_address_count THEN array_agg(m.addr_tag) OVER w_ahead END AS addrs_ahead
        FROM m2 m
        WINDOW w_addr AS (PARTITION BY m.campaign_id, m.recipient_id, m.addr_tag ORDER BY m.occurred_at
                          RANGE BETWEEN v_scan PRECEDING AND v_scan FOLLOWING),
               w_near AS (PARTITION BY m.campaign_id, m.recipient_id ORDER BY m.occurred_at
                          RANGE BETWEEN v_burst PRECEDING AND v_burst FOLLOWING),
               w_ahead AS (PARTITION BY m.campaign_id, m.recipient_id, m.kind, m.link ORDER BY m.occurred_at
                           RANGE BETWEEN CURRENT ROW AND v_addr FOLLOWING)
    ),
    m4 AS (
        SELECT m.*,
               -- a window starting here holds p_address_count different addresses (any window that
               -- does and holds an event can be moved right to start at an event: these are all)
               m.addrs_ahead IS NOT NULL
               AND (SELECT count(DISTINCT a) FROM unnest(m.addrs_ahead) AS a) >= p_address_count AS addr_start
        FROM m3 m
    ),
    m5 AS (
        SELECT m.*,
               -- address_burst: inside such a window (one starting at most p_address_window_s before)
               coalesce(bool_or(m.addr_start) OVER w_behind, false) AS in_addr_window
        FROM m4 m
        WINDOW w_behind AS (PARTITION BY m.campaign_id, m.recipient_id, m.kind, m.link ORDER BY m.occurred_at
                            RANGE BETWEEN v_addr PRECEDING AND CURRENT ROW)
    ),
    flags AS (
        SELECT m.occurred_at, m.id, m.old_reason, m.old_codes, m.in_burst AS f_burst, m.in_addr_window AS f_address,
               NOT m.burst_click AND coalesce(m.bursts_by_addr, 0) > 0 AS f_scan, m.is_hit AS f_hit,
               NOT m.is_hit AND (coalesce(m.hits_by_addr, 0) > 0 OR m.hits_near > 0) AS f_hit_scan,
               m.is_probable AS f_probable
        FROM m5 m
        UNION ALL
        SELECT h.occurred_at, h.id, h.old_reason, h.old_codes, false, false, false, h.is_hit, false, h.is_probable
        FROM h0 h WHERE h.n_key = 1 AND (h.is_hit OR h.is_probable)
    ),
    verdict AS (
        -- The new reason: the codes already there, then the new ones in a fixed order.
        SELECT f.occurred_at, f.id, f.old_reason,
               concat_ws(',', f.old_reason, nullif(concat_ws(',',
                   CASE WHEN f.f_burst AND 'burst' <> ALL(f.old_codes) THEN 'burst' END,
                   CASE WHEN f.f_address AND 'address_burst' <> ALL(f.old_codes) THEN 'address_burst' END,
                   CASE WHEN f.f_scan AND 'scan' <> ALL(f.old_codes) THEN 'scan' END,
                   CASE WHEN f.f_hit AND 'honeypot' <> ALL(f.old_codes) THEN 'honeypot' END,
                   CASE WHEN f.f_hit_scan AND 'honeypot_scan' <> ALL(f.old_codes) THEN 'honeypot_scan' END,
                   CASE WHEN f.f_probable AND 'probable_network' <> ALL(f.old_codes) THEN 'probable_network' END
               ), '')) AS reason
        FROM flags f
        WHERE f.f_burst OR f.f_address OR f.f_scan OR f.f_hit OR f.f_hit_scan OR f.f_probable
    ),
    changes AS MATERIALIZED (
        SELECT j.occurred_at, j.id, j.reason FROM verdict j
        WHERE j.reason IS DISTINCT FROM j.old_reason
        ORDER BY j.occurred_at, j.id
    )
    SELECT (SELECT count(*) FROM batch),
           (SELECT b.xid FROM batch b ORDER BY b.xid DESC, b.id DESC LIMIT 1),
           (SELECT b.id FROM batch b ORDER BY b.xid DESC, b.id DESC LIMIT 1),
           (SELECT max(b.occurred_at) FROM batch b),
           (SELECT array_agg(c.occurred_at ORDER BY c.occurred_at, c.id) FROM changes c),
           (SELECT array_agg(c.id ORDER BY c.occurred_at, c.id) FROM changes c),
           (SELECT array_agg(c.reason ORDER BY c.occurred_at, c.id) FROM changes c)
    INTO v_examined, v_last_xid, v_last_id, v_newest, a_at, a_id, a_reason;
    PERFORM set_config('work_mem', v_work_mem, true);

    -- Only what changes, once: every rollup follows (migration 008). In slices of
    -- k_revise_slice events: for a few thousand recipients at once the revision's plan reads all
    -- of recipient_touch instead of looking each one up (seconds, and growing with the table).
    FOR i IN 0 .. coalesce(cardinality(a_id), 0) - 1 BY k_revise_slice LOOP
        v_revised := v_revised + trackd_revise_verdicts(
            a_at[i + 1 : i + k_revise_slice], a_id[i + 1 : i + k_revise_slice],
            array_fill(true, ARRAY[least(k_revise_slice, cardinality(a_id) - i)]),
            a_reason[i + 1 : i + k_revise_slice]);
    END LOOP;

    RETURN QUERY
    UPDATE verdict_progress p SET
        watermark_xid = coalesce(v_last_xid, p.watermark_xid),
        watermark_id = coalesce(v_last_id, p.watermark_id),
        judged_at = now(),
        -- Caught up: less than a batch was left, and no committed event waits behind a
        -- transaction still running (those have xid >= xmin; while one is open, events committed
        -- after it are not judged, and the lag must show it, not read 0).
        caught_up_at = CASE WHEN v_examined < p_limit
                             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.xid >= v_xmin)
                            THEN now() ELSE p.caught_up_at END,
        examined = p.examined + v_examined,
        revised = p.revised + v_revised
    RETURNING true, v_examined, v_revised, p.watermark_xid, v_examined >= p_limit, p.caught_up_at, v_newest;
END
$$;
COMMENT ON FUNCTION trackd_judge_verdicts(int, float8, float8, int, float8, float8) IS
    'trackd: judge the events committed since the last call by the deferred rules (burst, address_burst, scan, honeypot_scan, probable_network); verdicts only add reasons, every rollup follows';

DO $do$
BEGIN
    EXECUTE pg_catalog.format('ALTER FUNCTION trackd_judge_verdicts(int, float8, float8, int, float8, float8)'
                              ' SET search_path = pg_catalog, %I, pg_temp', pg_catalog.current_schema());
END
$do$;
-- Nothing of trackd's is executable by everyone (PUBLIC); trackd_apply_grants() says who may.
REVOKE EXECUTE ON FUNCTION trackd_judge_verdicts(int, float8, float8, int, float8, float8) FROM PUBLIC;

-- Analysts and the service may see how far judging has got (written only by the function).
INSERT INTO trackd_grants (role, relation, privileges, why) VALUES
    ('trackd_service', 'verdict_progress', 'SELECT', 'the judge''s lag (written only by trackd_judge_verdicts, owner''s rights)'),
    ('trackd_reader', 'verdict_progress', 'SELECT', 'analysts read everything trackd records');

-- The grants of migration 008, and EXECUTE on the judge for the service.
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
        -- The deferred rules themselves (migration 011), called by every pod's judge task.
        GRANT EXECUTE ON FUNCTION trackd_judge_verdicts(int, float8, float8, int, float8, float8) TO trackd_service;
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
