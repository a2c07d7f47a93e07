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

-- The service writes its own heartbeat, the dashboard API reads them all, and any pod prunes
-- the rows of pods long gone; analysts read them (grants: migration 005).
INSERT INTO trackd_grants (role, relation, privileges, why) VALUES
    ('trackd_service', 'writer_heartbeats', 'SELECT, INSERT, UPDATE, DELETE',
     'each writer upserts its own heartbeat, the dashboard API reads them all, and any pod prunes the rows of pods long gone'),
    ('trackd_reader', 'writer_heartbeats', 'SELECT', 'analysts read everything trackd records');

SELECT trackd_apply_grants();
