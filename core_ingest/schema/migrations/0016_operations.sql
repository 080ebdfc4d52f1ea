-- Operations: what a central operator asks from psql. Which agents are silent, how late the
-- data arrives and how far each agent is behind, which agents' batches are refused, what sits
-- in quarantine, how complete each region's day is.
--
-- Each batch's oldest and newest interval end, set by the core from the readings it carries:
-- the newest one's age at commit is the data's latency, the oldest one's says how far back an
-- agent is catching up. NULL for telemetry-only batches and for batches stored before this.
ALTER TABLE batches ADD COLUMN oldest_interval_end timestamptz;
ALTER TABLE batches ADD COLUMN newest_interval_end timestamptz;
-- An agent's latest batches, found without reading the others (silence, the last hour).
CREATE INDEX batches_agent_committed ON batches (agent_id, committed_at);

-- Batches the core refused, per enrolled agent and reason: the agent keeps them, and this is
-- how the center sees it without the agent's log. One row per (agent, reason), counted.
CREATE TABLE batch_refusals (
    agent_id text NOT NULL REFERENCES agents ON DELETE CASCADE,
    reason text NOT NULL,
    refusals bigint NOT NULL CHECK (refusals > 0),
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    last_sequence bigint NOT NULL,
    last_detail text NOT NULL,
    region text NOT NULL,
    PRIMARY KEY (agent_id, reason)
);
CREATE POLICY region_scope ON batch_refusals USING ((SELECT visible_region_names()) IS NULL
    OR region = ANY ((SELECT visible_region_names())::text[]));
ALTER TABLE batch_refusals ENABLE ROW LEVEL SECURITY;
ALTER TABLE batch_refusals FORCE ROW LEVEL SECURITY;

-- One row per agent: when it was last heard, how late its data arrives, what it was refused.
CREATE VIEW agent_activity AS
    SELECT a.agent_id, a.region, a.substation, a.revoked_at IS NOT NULL AS revoked,
           last.committed_at AS last_committed_at,
           last.newest_interval_end,
           hour.batches AS batches_last_hour,
           hour.readings AS readings_last_hour,
           hour.latency_p50_s, hour.latency_p95_s, hour.oldest_reading_age_s,
           recent.sequence_gaps,
           coalesce(refused.batches, 0) AS refused_batches,
           refused.last_at AS last_refused_at
    FROM agents a
    LEFT JOIN LATERAL (
        SELECT b.committed_at, b.newest_interval_end FROM batches b
        WHERE b.agent_id = a.agent_id ORDER BY b.committed_at DESC LIMIT 1
    ) last ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS batches, coalesce(sum(b.meter_readings), 0) AS readings,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM b.committed_at - b.newest_interval_end))
                   AS latency_p50_s,
               percentile_cont(0.95) WITHIN GROUP (
                   ORDER BY extract(epoch FROM b.committed_at - b.newest_interval_end))
                   AS latency_p95_s,
               max(extract(epoch FROM b.committed_at - b.oldest_interval_end))
                   AS oldest_reading_age_s
        FROM batches b
        WHERE b.agent_id = a.agent_id AND b.committed_at > now() - interval '1 hour'
    ) hour ON true
    LEFT JOIN LATERAL (
        SELECT max(s.sequence) - min(s.sequence) + 1 - count(*) AS sequence_gaps
        FROM (SELECT b.sequence FROM batches b WHERE b.agent_id = a.agent_id
              ORDER BY b.sequence DESC LIMIT 1000) s
    ) recent ON true
    LEFT JOIN LATERAL (
        SELECT sum(r.refusals) AS batches, max(r.last_at) AS last_at FROM batch_refusals r
        WHERE r.agent_id = a.agent_id
    ) refused ON true;

-- Enrolled agents not heard from for 35 minutes, or never. An agent reading meters only
-- sends once an interval closes (every 15 minutes): two intervals and some slack.
-- `core-ingest doctor --silent-minutes N` asks with another threshold.
-- (How long, as a column, would change from one query to the next: `now() - last_committed_at`.)
CREATE VIEW silent_agents AS
    SELECT agent_id, region, substation, last_committed_at
    FROM agent_activity
    WHERE NOT revoked
      AND (last_committed_at IS NULL OR last_committed_at < now() - interval '35 minutes');

-- What the core set apart in the last 30 days, for someone to look at: quarantined readings
-- and values refused one by one, per region, agent and reason. (Nothing records that someone
-- looked yet: the window is what keeps old items from being shown for ever.)
CREATE VIEW quarantine_awaiting_inspection AS
    SELECT 'reading_quarantine' AS kept_in, g.name AS region, b.agent_id, q.reason,
           count(*) AS items, min(q.quarantined_at) AS first_at, max(q.quarantined_at) AS last_at
    FROM reading_quarantine q
    JOIN batches b USING (batch_id)
    JOIN regions g ON g.region_id = q.region_id
    WHERE q.quarantined_at > now() - interval '30 days'
    GROUP BY g.name, b.agent_id, q.reason
    UNION ALL
    SELECT 'refused_values', g.name, b.agent_id, v.reason,
           count(*), min(b.committed_at), max(b.committed_at)
    FROM refused_values v
    JOIN batches b USING (batch_id)
    JOIN regions g ON g.name = b.region
    WHERE b.committed_at > now() - interval '30 days'
    GROUP BY g.name, b.agent_id, v.reason;

-- How complete each region's day is: of the readings expected (96 a customer meter), how many
-- were read, how many estimated, how many are still missing.
CREATE VIEW region_day_completeness AS
    SELECT region, day, meters, expected, received, estimated,
           greatest(expected - received - estimated, 0) AS missing,
           round(received::numeric / nullif(expected, 0), 4) AS completeness,
           round(estimated::numeric / nullif(expected, 0), 4) AS estimated_share
    FROM region_day_quality;
