-- Day-ahead load forecasts (`analytics forecast predict`): per substation and per region, one
-- row per hour with the point and the 80 % band, and what made it (the model and its version,
-- the training window, who and when). A day forecast again replaces its rows.
CREATE TABLE load_forecasts (
    series text NOT NULL,
    region text NOT NULL,
    hour timestamptz NOT NULL,
    point_kwh double precision NOT NULL,
    lower_kwh double precision NOT NULL,
    upper_kwh double precision NOT NULL,
    model text NOT NULL,
    model_version text NOT NULL,
    training_from timestamptz NOT NULL,
    training_to timestamptz NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    computed_by text NOT NULL DEFAULT session_user,
    PRIMARY KEY (series, hour),
    CHECK (lower_kwh <= point_kwh AND point_kwh <= upper_kwh)
);
CREATE POLICY region_scope ON load_forecasts USING ((SELECT visible_region_names()) IS NULL
    OR region = ANY ((SELECT visible_region_names())::text[]));
ALTER TABLE load_forecasts ENABLE ROW LEVEL SECURITY;
ALTER TABLE load_forecasts FORCE ROW LEVEL SECURITY;
