-- One row per running writer (a trackd process: a pod, or one worker of a pod), so that the
-- live page (/dashboard, GET /v1/fleet) served by any one pod shows the backlog of every pod, not
-- only its own. Each writer upserts its row every few seconds in a statement of its own, never in
-- the path that ships events (app/heartbeat.py). Rows are judged by `updated_at` against the
-- database's clock (not the pods'): older than 30 s is shown as "not reporting" (the pod is gone,
-- hung, or cannot reach PostgreSQL), and rows older than 15 minutes are deleted by any writer.
-- Nothing reads this table to decide anything: it is for people. Losing it loses no event.
CREATE TABLE writer_heartbeats (
    -- hostname:pid, e.g. trackd-3:1. A StatefulSet pod keeps its name across restarts, so a
    -- restarted pod takes over its own row.
    instance text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    version text NOT NULL,
    -- starting, running, retrying, draining or stopped (app/writer.py).
    writer_state text NOT NULL,
    -- Events in this process's journal (and adopted journals) not yet committed, and their bytes.
    backlog_rows bigint NOT NULL,
    backlog_bytes bigint NOT NULL,
    -- Age of the oldest event not yet committed when the row was written (NULL: none pending).
    oldest_pending_age_s double precision,
    -- When this writer last committed a batch (NULL: not since it started).
    last_commit_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE writer_heartbeats IS
    'trackd: one heartbeat per writer process, upserted every few seconds; stale after 30 s, deleted after 15 min (docs/runbook.md)';

-- The grants of migration 005, and the heartbeats: the service writes its own and reads them
-- all; the reader role reads them.
CREATE OR REPLACE FUNCTION trackd_apply_grants() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    may_create boolean;
    r text;
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
            END IF;
        END IF;
    END LOOP;

    IF to_regrole('trackd_service') IS NOT NULL THEN
        -- Connect, and make the writer's temporary stage table (trackd_stage, for replays).
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO trackd_service', current_database());
        -- Find trackd's tables; no CREATE: the service makes no table of its own.
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO trackd_service', current_schema());
        REVOKE ALL ON events, interactions_per_second, events_dead_letter, trackd_migrations,
            writer_heartbeats FROM trackd_service;
        -- Record events (COPY and INSERT ... ON CONFLICT DO NOTHING through the parent: a
        -- partitioned table checks rights on the parent only), and read them for the stats API.
        GRANT SELECT, INSERT ON events TO trackd_service;
        -- Kept by the trigger on events (as the inserting role) and by writers before
        -- migration 003 (INSERT ... ON CONFLICT DO UPDATE); read by the per-second API.
        GRANT SELECT, INSERT, UPDATE ON interactions_per_second TO trackd_service;
        -- Rows PostgreSQL refused: written, never read by the service.
        GRANT INSERT ON events_dead_letter TO trackd_service;
        -- `trackd serve` checks that the schema is current before it starts writing.
        GRANT SELECT ON trackd_migrations TO trackd_service;
        GRANT EXECUTE ON FUNCTION trackd_ensure_partitions(date[]) TO trackd_service;
        -- Each writer upserts its own heartbeat, the dashboard API reads them all, and any pod
        -- prunes the rows of pods long gone (migration 006).
        GRANT SELECT, INSERT, UPDATE, DELETE ON writer_heartbeats TO trackd_service;
    END IF;

    IF to_regrole('trackd_reader') IS NOT NULL THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO trackd_reader', current_database());
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO trackd_reader', current_schema());
        REVOKE ALL ON events, interactions_per_second, events_dead_letter, trackd_migrations,
            writer_heartbeats FROM trackd_reader;
        GRANT SELECT ON events, interactions_per_second, events_dead_letter, trackd_migrations,
            writer_heartbeats TO trackd_reader;
    END IF;
    -- A role that may create objects in trackd's schema could plant functions or tables that
    -- trackd's own code would pick up (PostgreSQL 14 and older grant CREATE on public to PUBLIC).
    IF to_regrole('trackd_service') IS NOT NULL
       AND has_schema_privilege('trackd_service', current_schema(), 'CREATE') THEN
        RAISE NOTICE 'trackd: trackd_service may create objects in schema %: run REVOKE CREATE ON SCHEMA % FROM PUBLIC (docs/database-roles.md)',
            current_schema(), current_schema();
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION trackd_apply_grants() FROM PUBLIC;

SELECT trackd_apply_grants();
