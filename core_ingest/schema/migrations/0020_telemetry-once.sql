-- Telemetry stored once: one row per (transformer, time, metric) from an agent. A message the
-- broker delivered again after the agent was killed between its buffer commit and its
-- acknowledgement was taken as new by the restarted agent (its memory of sequence numbers is
-- not kept) and stored twice (found by the chaos suite: 1 of 1,080 messages after 24 SIGKILLs). The core now
-- ignores a point it holds already from that agent, as it does a reading (another agent naming
-- the same transformer cannot shadow it). Copies stored before are removed first, keeping the
-- earliest batch's row. The index replaces migration 1's (transformer_id, time) index, which it
-- covers for every query by transformer and time.
DELETE FROM transformer_telemetry a
    USING transformer_telemetry b
    WHERE a.transformer_id = b.transformer_id AND a.metric = b.metric AND a.time = b.time
      AND a.agent_id = b.agent_id AND a.tableoid = b.tableoid
      AND (a.batch_sequence, a.ctid) > (b.batch_sequence, b.ctid);
CREATE UNIQUE INDEX transformer_telemetry_once
    ON transformer_telemetry (transformer_id, time, metric, agent_id);
DROP INDEX transformer_telemetry_device_time;
