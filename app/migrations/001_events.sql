-- One row per recorded interaction, partitioned by day so that old days can be detached or
-- dropped cheaply and inserts touch only a small, hot index.
CREATE TABLE events (
    id             uuid        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('open', 'click')),
    campaign_id    text        NOT NULL,
    recipient_id   text        NOT NULL,
    link_index     int,
    url            text,
    ip             inet,
    user_agent     text,
    is_machine     boolean     NOT NULL DEFAULT false,
    machine_reason text,
    sent_at        timestamptz,
    -- Replays of the journal and retried batches are harmless: the id is made at receipt.
    PRIMARY KEY (occurred_at, id)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX events_campaign_idx ON events (campaign_id, kind, occurred_at);

COMMENT ON TABLE events IS 'trackd: one row per recorded open or click (partitioned by day, UTC)';
COMMENT ON COLUMN events.is_machine IS 'true for HEAD requests, security scanners, privacy prefetch and bots';
COMMENT ON COLUMN events.sent_at IS 'send time carried by the signed link';

-- Creates the daily partitions covering the given days (UTC), if missing. Called by the writer
-- for days it has not seen yet; the advisory lock keeps concurrent writers from racing.
CREATE FUNCTION trackd_ensure_partitions(days date[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('trackd_partitions'));
    FOREACH d IN ARRAY days LOOP
        name := 'events_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                name,
                (d::timestamp AT TIME ZONE 'UTC'),
                ((d + 1)::timestamp AT TIME ZONE 'UTC')
            );
        END IF;
    END LOOP;
END
$$;
