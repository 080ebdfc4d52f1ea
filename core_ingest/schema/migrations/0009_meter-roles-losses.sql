-- Meter roles: feeder heads are kept out of consumption and compared with it.
ALTER TABLE meters ADD COLUMN role text NOT NULL DEFAULT 'customer'
    CHECK (role IN ('customer', 'feeder_head', 'transformer'));
CREATE OR REPLACE VIEW region_day_quality AS
    SELECT d.region, d.day, d.received, 96 * coalesce(m.meters, 0) AS expected, d.estimated,
           d.suspect AS flagged, coalesce(m.meters, 0) AS meters
    FROM region_daily d
    LEFT JOIN (SELECT region, count(*) AS meters FROM meters WHERE role = 'customer'
               GROUP BY region) m USING (region);
CREATE VIEW substation_day_losses AS
    SELECT h.substation, h.region, h.day,
           h.feeder_head_wh, d.energy_wh AS customer_wh,
           h.feeder_head_wh - d.energy_wh AS losses_wh,
           (h.feeder_head_wh - d.energy_wh)::float8 / nullif(h.feeder_head_wh, 0) AS losses_share,
           h.readings::float8 / (96 * h.feeder_heads) AS feeder_head_completeness,
           (d.received + d.estimated)::float8 / nullif(96 * c.meters, 0) AS customer_completeness,
           d.estimated AS customer_estimated
    FROM (SELECT m.substation, min(m.region) AS region, f.day, sum(f.energy_wh)::bigint
                 AS feeder_head_wh, sum(f.readings)::bigint AS readings,
                 count(DISTINCT m.meter_id) AS feeder_heads
          FROM meters m
          CROSS JOIN LATERAL (
              SELECT date_trunc('day', r.interval_end - interval '15 minutes', 'UTC') AS day,
                     sum(r.energy_wh) AS energy_wh, count(*) AS readings
              FROM meter_readings r WHERE r.meter_id = m.meter_id GROUP BY 1) f
          WHERE m.role = 'feeder_head'
          GROUP BY m.substation, f.day) h
    LEFT JOIN substation_daily d ON d.substation = h.substation AND d.day = h.day
    LEFT JOIN (SELECT substation, count(*) AS meters FROM meters WHERE role = 'customer'
               GROUP BY substation) c ON c.substation = h.substation;
