-- A record of every stored estimate a real reading replaced.
CREATE TABLE reading_corrections (
    meter_id integer NOT NULL REFERENCES meters (meter_id),
    interval_end timestamptz NOT NULL,
    estimated_energy_wh bigint NOT NULL,
    estimated_register_wh bigint NOT NULL,
    estimated_quality_flags integer NOT NULL,
    estimated_batch_id bigint NOT NULL REFERENCES batches (batch_id),
    energy_wh bigint NOT NULL,
    quality_flags integer NOT NULL,
    batch_id bigint NOT NULL REFERENCES batches (batch_id),
    corrected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, interval_end)
);
CREATE INDEX reading_corrections_batch ON reading_corrections (batch_id);
