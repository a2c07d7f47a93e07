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

-- What each group role may do on each of trackd's tables: the whole truth, one row per table and
-- role. A later migration that adds a table adds its rows here and calls trackd_apply_grants().
-- docs/database-roles.md shows the same list; tests/test_roles.py checks both against the catalog.
CREATE TABLE trackd_grants (
    role       text NOT NULL CHECK (role IN ('trackd_service', 'trackd_reader')),
    relation   text NOT NULL,
    privileges text NOT NULL,  -- as GRANT takes them: 'SELECT, INSERT'
    why        text NOT NULL,
    PRIMARY KEY (role, relation)
);
COMMENT ON TABLE trackd_grants IS
    'trackd: the table privileges of the group roles trackd_service and trackd_reader, applied by trackd_apply_grants() at every migrate (docs/database-roles.md)';

INSERT INTO trackd_grants (role, relation, privileges, why) VALUES
    ('trackd_service', 'events', 'SELECT, INSERT',
     'record events (COPY and INSERT ... ON CONFLICT DO NOTHING through the parent: a partitioned table checks rights on the parent only), and read them for the stats API'),
    ('trackd_service', 'interactions_per_second', 'SELECT, INSERT, UPDATE',
     'kept by the trigger on events (as the inserting role) and by writers before migration 003 (INSERT ... ON CONFLICT DO UPDATE); read by the per-second API'),
    ('trackd_service', 'events_dead_letter', 'INSERT', 'rows PostgreSQL refused: written, never read by the service'),
    ('trackd_service', 'trackd_migrations', 'SELECT', '`trackd serve` checks that the schema is current before it starts writing'),
    ('trackd_reader', 'events', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'interactions_per_second', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'events_dead_letter', 'SELECT', 'analysts read everything trackd records'),
    ('trackd_reader', 'trackd_migrations', 'SELECT', 'analysts read everything trackd records');

-- Creates the group roles if they are missing and the migrating role may create roles (else a
-- NOTICE says what to run), then sets the grants of each role that exists to exactly those of
-- trackd_grants: everything the roles had on those tables is revoked first.
CREATE FUNCTION trackd_apply_grants() RETURNS void
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
        -- A role that may create objects in trackd's schema could plant functions or tables that
        -- trackd's own code would pick up (PostgreSQL 14 and older grant CREATE on public to PUBLIC).
        IF has_schema_privilege('trackd_service', current_schema(), 'CREATE') THEN
            RAISE NOTICE 'trackd: trackd_service may create objects in schema %: run REVOKE CREATE ON SCHEMA % FROM PUBLIC (docs/database-roles.md)',
                current_schema(), current_schema();
        END IF;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION trackd_apply_grants() FROM PUBLIC;

SELECT trackd_apply_grants();
