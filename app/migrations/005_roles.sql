-- Least privilege (docs/database-roles.md). Three kinds of database users from here on:
--
--   * the owner: whoever runs `trackd migrate`. It owns every table and function, and is the
--     only one that can change the schema (ALTER, DROP, TRUNCATE, retention of old partitions);
--   * trackd_service: a NOLOGIN group role. `trackd serve` logs in as a role that is a member of
--     it (e.g. CREATE ROLE trackd_app LOGIN PASSWORD '...' IN ROLE trackd_service) and can do
--     exactly what the service does: record events, keep the per-second counts, keep dead
--     letters, read what the API answers, and create the daily partitions of `events`;
--   * trackd_reader: a NOLOGIN group role for analysts and dashboards: SELECT only.
--
-- The grants live in trackd_apply_grants(), which this migration runs and `trackd migrate` runs
-- again every time, so that a role created later (by a DBA, when the migrating role may not
-- create roles) gets its grants from the next `trackd migrate`. Later migrations that add tables
-- replace that function with one that grants on them too. No ALTER DEFAULT PRIVILEGES: a table
-- nobody reviewed must not become writable by the service on its own.

-- The daily partitions are created by the writer (the service role), which has no right to
-- change `events`: this function runs with its owner's rights (SECURITY DEFINER), and nothing
-- else the service can do creates or changes a table. Made safe for that: a fixed search_path
-- (trackd's schema, then pg_temp last, so no temporary object of the caller can stand in for
-- `events` or a partition), and its only input is dates, which become names through to_char and
-- bounds through %L quoting. The partitions it creates are owned by the owner, so the service
-- cannot drop or alter them either; it reads and writes them only through `events`.
-- Written with trackd's schema spelled out, and run with search_path = pg_catalog, pg_temp: as
-- SECURITY DEFINER it runs with the owner's rights, so no name in it may resolve to an object
-- a caller could create. pg_catalog first (and pg_temp, which is never searched for functions,
-- last): a caller's `public.to_char(date, text)`, an exact match, would otherwise beat the
-- built-in that needs a cast, whatever the order of the path.
DO $do$
BEGIN
    EXECUTE pg_catalog.format($f$
CREATE OR REPLACE FUNCTION %1$I.trackd_ensure_partitions(days date[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d date;
    name text;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('trackd_partitions'));
    FOREACH d IN ARRAY days LOOP
        name := 'events_' || pg_catalog.to_char(d::pg_catalog.timestamp, 'YYYYMMDD');
        IF pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %1$L, name)) IS NULL THEN
            EXECUTE pg_catalog.format(
                'CREATE TABLE %%I.%%I PARTITION OF %%I.events FOR VALUES FROM (%%L) TO (%%L)',
                %1$L, name, %1$L,
                (d::pg_catalog.timestamp AT TIME ZONE 'UTC'),
                ((d + 1)::pg_catalog.timestamp AT TIME ZONE 'UTC')
            );
        END IF;
    END LOOP;
END
$$
$f$, pg_catalog.current_schema());
END
$do$;

-- Functions are executable by everyone (PUBLIC) unless revoked. The partition function is the
-- service's only; the trigger function needs no EXECUTE right of whoever fires the trigger.
REVOKE EXECUTE ON FUNCTION trackd_ensure_partitions(date[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION trackd_count_per_second() FROM PUBLIC;

-- Creates the group roles if they are missing and the migrating role may create roles (else a
-- NOTICE says what to run), then sets the grants of each role that exists to exactly these:
-- everything the roles had on trackd's tables is revoked first, so this list is the whole truth.
-- docs/database-roles.md shows the same list; tests/test_roles.py checks both against the catalog.
CREATE FUNCTION trackd_apply_grants() RETURNS void
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
        REVOKE ALL ON events, interactions_per_second, events_dead_letter, trackd_migrations
            FROM trackd_service;
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
    END IF;

    IF to_regrole('trackd_reader') IS NOT NULL THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO trackd_reader', current_database());
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO trackd_reader', current_schema());
        REVOKE ALL ON events, interactions_per_second, events_dead_letter, trackd_migrations
            FROM trackd_reader;
        GRANT SELECT ON events, interactions_per_second, events_dead_letter, trackd_migrations
            TO trackd_reader;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION trackd_apply_grants() FROM PUBLIC;

SELECT trackd_apply_grants();
