-- Values refused one by one, so one bad value never costs the batch's good ones.
CREATE TABLE refused_values (
    batch_id bigint NOT NULL REFERENCES batches (batch_id),
    kind text NOT NULL CHECK (kind IN ('meter_reading', 'telemetry')),
    position integer NOT NULL,
    reason text NOT NULL,
    raw jsonb NOT NULL,
    PRIMARY KEY (batch_id, kind, position)
);
