-- The model each forecast series uses (`analytics forecast train`): chosen by a rolling-origin
-- backtest of every candidate over recent days, with each candidate's MAPE, the days it was
-- judged on and the history it learned from. `analytics forecast predict` forecasts each series
-- with its chosen model (gradient boosting for a series never trained).
CREATE TABLE forecast_models (
    series text PRIMARY KEY,
    region text NOT NULL,
    model text NOT NULL,
    model_version text NOT NULL,
    mape jsonb NOT NULL,
    backtest_from date NOT NULL,
    backtest_days integer NOT NULL CHECK (backtest_days > 0),
    training_from timestamptz NOT NULL,
    training_to timestamptz NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    computed_by text NOT NULL DEFAULT session_user,
    CHECK (mape ? model)
);
CREATE POLICY region_scope ON forecast_models USING ((SELECT visible_region_names()) IS NULL
    OR region = ANY ((SELECT visible_region_names())::text[]));
ALTER TABLE forecast_models ENABLE ROW LEVEL SECURITY;
ALTER TABLE forecast_models FORCE ROW LEVEL SECURITY;

-- The daily report finds the batches carrying a day's readings by their newest interval end,
-- however late they were committed (an agent catching up after weeks offline counts too).
-- Built inside the migration's transaction: new batches wait while it builds (as in migration 16).
CREATE INDEX batches_by_newest_interval_end ON batches (newest_interval_end);

-- substation_day_losses, same columns, found from the day instead of from every day: the
-- feeder heads' readings of a substation's day are read by their interval ends (an index range,
-- one day's chunk), where migration 9's view grouped each feeder head's whole history by day
-- before a day could be picked (10 s for one day of a year's database, now milliseconds). A day
-- appears when the substation has both its customers' rollup and feeder-head readings (before,
-- a day with feeder-head readings only appeared with empty customer figures). Days are 24 hours
-- whatever the session's time zone.
CREATE OR REPLACE VIEW substation_day_losses AS
    SELECT d.substation, d.region, d.day,
           h.feeder_head_wh, d.energy_wh AS customer_wh,
           h.feeder_head_wh - d.energy_wh AS losses_wh,
           (h.feeder_head_wh - d.energy_wh)::float8 / nullif(h.feeder_head_wh, 0) AS losses_share,
           h.readings::float8 / nullif(96 * h.feeder_heads, 0) AS feeder_head_completeness,
           (d.received + d.estimated)::float8 / nullif(96 * c.meters, 0) AS customer_completeness,
           d.estimated AS customer_estimated
    FROM substation_daily d
    CROSS JOIN LATERAL (
        SELECT sum(r.energy_wh)::bigint AS feeder_head_wh, count(*) AS readings,
               count(DISTINCT m.meter_id) AS feeder_heads
        FROM meters m JOIN meter_readings r ON r.meter_id = m.meter_id
        WHERE m.role = 'feeder_head' AND m.substation = d.substation
          AND r.interval_end > d.day AND r.interval_end <= d.day + interval '24 hours') h
    LEFT JOIN (SELECT substation, count(*) AS meters FROM meters WHERE role = 'customer'
               GROUP BY substation) c ON c.substation = d.substation
    WHERE h.readings > 0;
-- The feeder heads of a substation, found without reading the whole meters dimension per day.
CREATE INDEX meters_feeder_heads ON meters (substation) WHERE role = 'feeder_head';
