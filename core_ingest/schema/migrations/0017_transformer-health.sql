-- Transformer health (analytics): the asset registry, and one record per transformer and day
-- computed from its telemetry by `analytics health`, with its lineage (the input window, the
-- model and its version, who computed it and when).
CREATE TABLE transformer_assets (
    transformer_id text PRIMARY KEY,
    substation text NOT NULL,
    region text NOT NULL,
    rated_kva double precision NOT NULL CHECK (rated_kva > 0),
    cooling text NOT NULL DEFAULT 'ONAN',
    insulation text NOT NULL DEFAULT 'normal'
        CHECK (insulation IN ('normal', 'thermally_upgraded')),
    hot_spot_limit_c double precision NOT NULL DEFAULT 120 CHECK (hot_spot_limit_c > 0),
    top_oil_limit_c double precision NOT NULL DEFAULT 105 CHECK (top_oil_limit_c > 0),
    oil_time_constant_min double precision NOT NULL DEFAULT 180 CHECK (oil_time_constant_min > 0),
    winding_time_constant_min double precision NOT NULL DEFAULT 4
        CHECK (winding_time_constant_min > 0),
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE transformer_health (
    transformer_id text NOT NULL REFERENCES transformer_assets,
    day date NOT NULL,
    region text NOT NULL,
    samples integer NOT NULL CHECK (samples >= 0),
    hot_spot_max_c double precision,
    top_oil_max_c double precision,
    minutes_over_hot_spot_limit integer NOT NULL,
    minutes_over_top_oil_limit integer NOT NULL,
    ageing_days double precision,
    peak_ageing_rate double precision,
    gases_ppm jsonb,
    iec_fault text,
    duval_zone text,
    gas_alarm_at timestamptz,
    gas_alarm_reasons text[] NOT NULL DEFAULT '{}',
    model text NOT NULL,
    model_version text NOT NULL,
    input_from timestamptz NOT NULL,
    input_to timestamptz NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    computed_by text NOT NULL DEFAULT session_user,
    PRIMARY KEY (transformer_id, day)
);
CREATE POLICY region_scope ON transformer_assets USING ((SELECT visible_region_names()) IS NULL
    OR region = ANY ((SELECT visible_region_names())::text[]));
ALTER TABLE transformer_assets ENABLE ROW LEVEL SECURITY;
ALTER TABLE transformer_assets FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON transformer_health USING ((SELECT visible_region_names()) IS NULL
    OR region = ANY ((SELECT visible_region_names())::text[]));
ALTER TABLE transformer_health ENABLE ROW LEVEL SECURITY;
ALTER TABLE transformer_health FORCE ROW LEVEL SECURITY;
-- Each transformer's life used so far, from its daily records.
CREATE VIEW transformer_life AS
    SELECT a.transformer_id, a.region, a.substation, a.insulation,
           count(h.day) AS days_recorded, coalesce(sum(h.ageing_days), 0) AS life_used_days,
           max(h.hot_spot_max_c) AS hot_spot_max_c, max(h.day) AS last_day
    FROM transformer_assets a LEFT JOIN transformer_health h USING (transformer_id)
    GROUP BY a.transformer_id, a.region, a.substation, a.insulation;
