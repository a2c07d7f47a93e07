-- interactions_per_second is kept by PostgreSQL itself from now on: a statement-level trigger
-- adds the rows each INSERT or COPY into `events` actually inserted (its transition table holds
-- only those: rows skipped by ON CONFLICT DO NOTHING are not in it), in the same transaction.
-- The writer can then COPY straight into `events` and still never count a replay twice.
--
-- It counts only for transactions that ask for it (SET LOCAL trackd.per_second = 'trigger', as
-- trackd's writer does): during a rolling upgrade, or after a rollback, writers of the previous
-- version still add their rows to interactions_per_second themselves, and must not be counted
-- twice. Rows inserted by hand are not counted, as before.
CREATE FUNCTION trackd_count_per_second() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('trackd.per_second', true) IS DISTINCT FROM 'trigger' THEN
        RETURN NULL;
    END IF;
    INSERT INTO interactions_per_second AS t (second, campaign_id, kind, is_machine, events, max_lag_ms)
    SELECT date_trunc('second', occurred_at), campaign_id, kind, is_machine, count(*),
           least(2147483647, greatest(0, ceil(extract(epoch FROM clock_timestamp() - min(occurred_at)) * 1000)))::int
    FROM inserted GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (second, campaign_id, kind, is_machine) DO UPDATE
    SET events = t.events + EXCLUDED.events, max_lag_ms = greatest(t.max_lag_ms, EXCLUDED.max_lag_ms);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_count_per_second
AFTER INSERT ON events
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION trackd_count_per_second();
