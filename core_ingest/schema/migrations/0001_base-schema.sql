-- The base schema: agents, the batch ledger, readings and telemetry.
-- Time-partitioned by day: TimescaleDB hypertables or native range partitions (${storage}).
CREATE TABLE storage_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    storage text NOT NULL CHECK (storage IN ('timescaledb', 'native-partitioning'))
);
CREATE TABLE agents (
    agent_id text PRIMARY KEY CHECK (length(agent_id) BETWEEN 1 AND 64),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    enrolled_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE TABLE batches (
    agent_id text NOT NULL REFERENCES agents,
    sequence bigint NOT NULL CHECK (sequence > 0),
    payload_sha256 bytea NOT NULL,
    schema_version integer NOT NULL,
    pseudonym_key_id text NOT NULL,
    software_version text NOT NULL,
    register_map_version integer NOT NULL,
    devices text[] NOT NULL,
    created_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    meter_readings integer NOT NULL,
    telemetry_points integer NOT NULL,
    core_version text NOT NULL,
    PRIMARY KEY (agent_id, sequence)
);
CREATE TABLE meter_readings (
    meter bytea NOT NULL,
    interval_end timestamptz NOT NULL,
    energy_wh bigint NOT NULL,
    register_wh bigint NOT NULL,
    quality_flags integer NOT NULL,
    poll_time timestamptz NOT NULL,
    device text NOT NULL,
    agent_id text NOT NULL,
    batch_sequence bigint NOT NULL
) ${partition_by_interval_end};
CREATE TABLE transformer_telemetry (
    transformer_id text NOT NULL,
    time timestamptz NOT NULL,
    metric text NOT NULL,
    value double precision NOT NULL,
    quality_flags integer NOT NULL,
    agent_id text NOT NULL,
    batch_sequence bigint NOT NULL
) ${partition_by_time};
${hypertables}
CREATE INDEX meter_readings_meter_time ON meter_readings (meter, interval_end);
CREATE INDEX meter_readings_batch ON meter_readings (agent_id, batch_sequence);
CREATE INDEX transformer_telemetry_device_time ON transformer_telemetry (transformer_id, time);
INSERT INTO storage_settings (storage) VALUES ('${storage}');
