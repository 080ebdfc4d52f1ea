-- Rollups and quality records the core keeps as batches commit, the alert table, lineage.
CREATE TABLE substation_hourly (
    substation text NOT NULL,
    region text NOT NULL,
    hour timestamptz NOT NULL,
    energy_wh bigint NOT NULL,
    received bigint NOT NULL,
    estimated bigint NOT NULL,
    suspect bigint NOT NULL,
    PRIMARY KEY (substation, hour)
);
CREATE TABLE substation_daily (LIKE substation_hourly);
ALTER TABLE substation_daily RENAME COLUMN hour TO day;
ALTER TABLE substation_daily ADD PRIMARY KEY (substation, day);
INSERT INTO substation_hourly
    SELECT b.substation, max(b.region), date_bin('1 hour', r.interval_end - interval '15 minutes',
           timestamptz '2000-01-01 00:00+00') AS hour, sum(r.energy_wh),
           count(*) FILTER (WHERE r.quality_flags & ${estimated} = 0),
           count(*) FILTER (WHERE r.quality_flags & ${estimated} <> 0),
           count(*) FILTER (WHERE r.quality_flags & ${suspect} <> 0)
    FROM meter_readings r JOIN batches b USING (batch_id) GROUP BY b.substation, hour;
INSERT INTO substation_daily
    SELECT substation, max(region), date_bin('1 day', hour, timestamptz '2000-01-01 00:00+00')
           AS day, sum(energy_wh), sum(received), sum(estimated), sum(suspect)
    FROM substation_hourly GROUP BY substation, day;
CREATE INDEX substation_hourly_region ON substation_hourly (region, hour);
CREATE INDEX substation_daily_region ON substation_daily (region, day);
CREATE VIEW region_hourly AS
    SELECT region, hour, sum(energy_wh)::bigint AS energy_wh, sum(received)::bigint AS received,
           sum(estimated)::bigint AS estimated, sum(suspect)::bigint AS suspect
    FROM substation_hourly GROUP BY region, hour;
CREATE VIEW region_daily AS
    SELECT region, day, sum(energy_wh)::bigint AS energy_wh, sum(received)::bigint AS received,
           sum(estimated)::bigint AS estimated, sum(suspect)::bigint AS suspect
    FROM substation_daily GROUP BY region, day;
CREATE VIEW region_day_quality AS
    SELECT d.region, d.day, d.received, 96 * coalesce(m.meters, 0) AS expected, d.estimated,
           d.suspect AS flagged, coalesce(m.meters, 0) AS meters
    FROM region_daily d
    LEFT JOIN (SELECT region, count(*) AS meters FROM meters GROUP BY region) m USING (region);
CREATE VIEW meter_day_quality AS
    SELECT meter_id, ((interval_end - interval '15 minutes') AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE quality_flags & ${estimated} = 0) AS received,
           96 AS expected,
           count(*) FILTER (WHERE quality_flags & ${estimated} <> 0) AS estimated,
           count(*) FILTER (WHERE quality_flags & ${suspect} <> 0) AS flagged
    FROM meter_readings GROUP BY 1, 2;
CREATE TABLE quality_alerts (
    alert_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    received bigint NOT NULL,
    flagged bigint NOT NULL,
    threshold double precision NOT NULL,
    raised_at timestamptz NOT NULL DEFAULT now(),
    raised_by text NOT NULL
);
CREATE INDEX quality_alerts_kind_time ON quality_alerts (kind, raised_at);
CREATE VIEW reading_lineage AS
    SELECT m.pseudonym AS meter, r.interval_end, s.step_no, s.step, s.at, s.actor, s.detail
    FROM meter_readings r
    JOIN meters m USING (meter_id)
    JOIN batches b USING (batch_id)
    CROSS JOIN LATERAL (VALUES
        (1, 'acquire', r.poll_time, b.devices[r.device_no],
         jsonb_build_object('register_wh', r.register_wh, 'energy_wh', r.energy_wh,
                            'register_map_version', b.register_map_version,
                            'read', r.quality_flags & ${estimated} = 0)),
        (2, CASE WHEN r.quality_flags & ${estimated} = 0 THEN 'validate' ELSE 'estimate' END,
         r.poll_time, 'edge-agent ' || b.agent_id,
         jsonb_build_object('ruleset', b.validation_ruleset, 'quality_flags', r.quality_flags)),
        (3, 'pseudonymize', r.poll_time, 'edge-agent ' || b.agent_id,
         jsonb_build_object('key_id', b.pseudonym_key_id)),
        (4, 'sign', b.created_at, 'edge-agent ' || b.agent_id,
         jsonb_build_object('sequence', b.sequence, 'software_version', b.software_version,
                            'payload_sha256', encode(b.payload_sha256, 'hex'))),
        (5, 'transmit', b.received_at, 'core-ingest ' || b.core_version,
         jsonb_build_object('agent_id', b.agent_id, 'sequence', b.sequence)),
        (6, 'ingest', b.committed_at, 'core-ingest ' || b.core_version,
         jsonb_build_object('batch_id', b.batch_id, 'substation', b.substation,
                            'region', b.region, 'table', 'meter_readings'))
    ) AS s(step_no, step, at, actor, detail);
