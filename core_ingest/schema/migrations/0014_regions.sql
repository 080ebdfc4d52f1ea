-- Regions enforced by the database. Every reading, telemetry point, quality record and rollup
-- belongs to one region, set by the core from the enrolled agent (never from the batch); a
-- login given a region scope (`governance access grant --region`) sees those regions' rows
-- only, whatever it queries: row-level security on the tables, forced so that the views
-- (owned by the schema's owner) filter too. The policies ask who connected (session_user),
-- not whose rights a view runs with. Logins without a scope see every region; the core's
-- login bypasses the policies (it writes every region, by COPY).
CREATE TABLE regions (
    region_id smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO regions (name) VALUES ('unassigned');
INSERT INTO regions (name)
    SELECT region FROM agents
    UNION SELECT region FROM meters
    UNION SELECT region FROM batches WHERE region IS NOT NULL
    UNION SELECT region FROM substation_hourly
    EXCEPT SELECT 'unassigned'
    ORDER BY 1;
ALTER TABLE agents ADD FOREIGN KEY (region) REFERENCES regions (name);
ALTER TABLE meters ADD FOREIGN KEY (region) REFERENCES regions (name);
-- A region is never renamed or renumbered: the ledger and the rollups carry its name, the
-- scopes its number, and a rename would move rows between scopes.
CREATE FUNCTION regions_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'regions are never renamed, renumbered or removed: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'enroll agents in a new region instead';
END
$$;
CREATE TRIGGER regions_fixed BEFORE UPDATE OR DELETE ON regions
    FOR EACH ROW EXECUTE FUNCTION regions_refuse_change();

-- Which regions a login may see: no row, every region; a row, exactly those (none if empty).
CREATE TABLE region_scopes (
    login name PRIMARY KEY,
    region_ids smallint[] NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION visible_region_ids() RETURNS smallint[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT region_ids FROM region_scopes WHERE login = session_user
$$;
CREATE FUNCTION visible_region_names() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT ARRAY(SELECT r.name FROM regions r WHERE r.region_id = ANY (s.region_ids))
    FROM region_scopes s WHERE s.login = session_user
$$;

-- The region column of what is written per batch, filled from each batch's agent.
ALTER TABLE meter_readings ADD COLUMN region_id smallint;
UPDATE meter_readings r SET region_id = g.region_id
    FROM batches b JOIN regions g ON g.name = b.region WHERE b.batch_id = r.batch_id;
ALTER TABLE transformer_telemetry ADD COLUMN region_id smallint;
UPDATE transformer_telemetry t SET region_id = g.region_id
    FROM batches b JOIN regions g ON g.name = b.region
    WHERE b.agent_id = t.agent_id AND b.sequence = t.batch_sequence;
ALTER TABLE reading_quarantine ADD COLUMN region_id smallint;
UPDATE reading_quarantine q SET region_id = g.region_id
    FROM batches b JOIN regions g ON g.name = b.region WHERE b.batch_id = q.batch_id;
ALTER TABLE reading_corrections ADD COLUMN region_id smallint;
UPDATE reading_corrections c SET region_id = g.region_id
    FROM batches b JOIN regions g ON g.name = b.region WHERE b.batch_id = c.batch_id;
ALTER TABLE refused_values ADD COLUMN region_id smallint;
UPDATE refused_values v SET region_id = g.region_id
    FROM batches b JOIN regions g ON g.name = b.region WHERE b.batch_id = v.batch_id;
ALTER TABLE pseudonym_map ADD COLUMN region_id smallint;
UPDATE pseudonym_map p SET region_id = g.region_id
    FROM agents a JOIN regions g ON g.name = a.region WHERE a.agent_id = p.agent_id;
-- Rows no batch or agent places (written before batches had a region) stay unassigned (1).
UPDATE meter_readings SET region_id = 1 WHERE region_id IS NULL;
UPDATE transformer_telemetry SET region_id = 1 WHERE region_id IS NULL;
UPDATE reading_quarantine SET region_id = 1 WHERE region_id IS NULL;
UPDATE reading_corrections SET region_id = 1 WHERE region_id IS NULL;
UPDATE refused_values SET region_id = 1 WHERE region_id IS NULL;
UPDATE pseudonym_map SET region_id = 1 WHERE region_id IS NULL;
UPDATE batches SET region = 'unassigned' WHERE region IS NULL;
ALTER TABLE meter_readings ALTER COLUMN region_id SET NOT NULL;
ALTER TABLE transformer_telemetry ALTER COLUMN region_id SET NOT NULL;
ALTER TABLE reading_quarantine ALTER COLUMN region_id SET NOT NULL;
ALTER TABLE reading_corrections ALTER COLUMN region_id SET NOT NULL;
ALTER TABLE refused_values ALTER COLUMN region_id SET NOT NULL;
ALTER TABLE pseudonym_map ALTER COLUMN region_id SET NOT NULL;

-- The policies: one per table, for every command. The scope is read once per query (the
-- sub-selects become init plans; the casts keep ANY an array test, not a sub-query's), then
-- each row costs one array test.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['meter_readings', 'transformer_telemetry', 'reading_quarantine',
                             'reading_corrections', 'refused_values', 'pseudonym_map'] LOOP
        EXECUTE format('CREATE POLICY region_scope ON %I USING ((SELECT visible_region_ids())'
                       ' IS NULL OR region_id = ANY ((SELECT visible_region_ids())::smallint[]))', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['agents', 'meters', 'batches', 'substation_hourly',
                             'substation_daily'] LOOP
        EXECUTE format('CREATE POLICY region_scope ON %I USING ((SELECT visible_region_names())'
                       ' IS NULL OR region = ANY ((SELECT visible_region_names())::text[]))', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

-- Chunks are read past the policies (they are tables of their own), so nobody but the owner
-- may read one directly: TimescaleDB copies a hypertable's grants onto each new chunk
-- (timescale/timescaledb#7830), and this takes them off again, in the transaction that
-- created the chunk, before anyone else can see it. Native partitions never get grants.
CREATE FUNCTION restrict_chunks(hypertable regclass, created_after timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    chunk regclass;
    grantee text;
    revoked integer := 0;
BEGIN
    FOR chunk IN SELECT show_chunks(hypertable, created_after => created_after) LOOP
        FOR grantee IN
            SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                 ELSE a.grantee::regrole::text END  -- quoted where needed
            FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = chunk AND a.grantee <> c.relowner
        LOOP
            EXECUTE format('REVOKE ALL ON %s FROM %s', chunk, grantee);
            revoked := revoked + 1;
        END LOOP;
    END LOOP;
    RETURN revoked;
END
$$;
REVOKE ALL ON FUNCTION restrict_chunks(regclass, timestamptz) FROM PUBLIC;
CREATE FUNCTION restrict_new_chunks() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM restrict_chunks(TG_RELID::regclass, now() - interval '1 second');
    RETURN NULL;
END
$$;
${restrict_chunks}
