-- Where an edge rotated its pseudonymization key: old pseudonym -> current one.
CREATE TABLE pseudonym_map (
    old_meter bytea PRIMARY KEY,
    new_meter bytea NOT NULL,
    old_key_id text NOT NULL,
    new_key_id text NOT NULL,
    agent_id text NOT NULL,
    batch_sequence bigint NOT NULL
);
CREATE VIEW meter_readings_continuous AS
    SELECT coalesce(p.new_meter, r.meter) AS meter_now, r.*
    FROM meter_readings r LEFT JOIN pseudonym_map p ON p.old_meter = r.meter;
