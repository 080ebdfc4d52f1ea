-- Anonymized exports (`governance export`): what left the database, by whom, measured how,
-- and which meters it included, so a data subject's request finds every export of theirs.
-- And two more facts of a meter's first sight, which exports and data-subject requests need
-- without reading the ledger: the device it was read through (its feeder's concentrator) and
-- the edge key its pseudonym was made with. Filled here from the first batch that stored
-- each meter's readings (one pass over the readings).
ALTER TABLE meters ADD COLUMN feeder text;
ALTER TABLE meters ADD COLUMN key_id text;
UPDATE meters m SET feeder = f.device, key_id = f.key_id
FROM (SELECT DISTINCT ON (r.meter_id) r.meter_id, b.devices[r.device_no] AS device,
             b.pseudonym_key_id AS key_id
      FROM meter_readings r JOIN batches b USING (batch_id)
      ORDER BY r.meter_id, r.batch_id) f
WHERE f.meter_id = m.meter_id;
CREATE TABLE exports (
    export_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset text NOT NULL,
    filter jsonb NOT NULL,
    k integer NOT NULL CHECK (k >= 2),
    l integer CHECK (l >= 2),
    measured_k integer NOT NULL,
    measured_l integer,
    area_level text NOT NULL,
    meters integer NOT NULL,
    suppressed integer NOT NULL,
    key_ids text[] NOT NULL,
    file_name text NOT NULL,
    file_sha256 bytea NOT NULL CHECK (length(file_sha256) = 32),
    made_by text NOT NULL DEFAULT session_user,
    made_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE export_meters (
    export_id bigint NOT NULL REFERENCES exports,
    meter_id integer NOT NULL REFERENCES meters,
    region_id smallint NOT NULL REFERENCES regions,
    PRIMARY KEY (export_id, meter_id)
);
CREATE INDEX export_meters_meter ON export_meters (meter_id);
CREATE POLICY region_scope ON export_meters USING ((SELECT visible_region_ids()) IS NULL
    OR region_id = ANY ((SELECT visible_region_ids())::smallint[]));
ALTER TABLE export_meters ENABLE ROW LEVEL SECURITY;
ALTER TABLE export_meters FORCE ROW LEVEL SECURITY;
