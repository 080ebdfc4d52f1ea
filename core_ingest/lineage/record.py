"""What the core records about a committed batch: the lineage of its readings.

The store builds one per commit; the OpenLineage event builder and the emitter read it. It
imports nothing of either, so storage never depends on how (or whether) lineage is sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CommittedBatch:
    """What the core knows about one committed batch: the lineage of its readings."""

    agent_id: str
    sequence: int
    batch_id: int  # the ledger's surrogate key
    substation: str
    region: str
    devices: tuple[str, ...]  # e.g. "modbus://10.0.0.5:502/1", "mqtt://broker/topic"
    poll_start: dt.datetime | None  # earliest poll time of its readings (UTC)
    poll_end: dt.datetime | None
    created_at: dt.datetime  # sealed and signed by the agent
    received_at: dt.datetime  # reached the core
    committed_at: dt.datetime
    software_version: str  # edge agent version
    register_map_version: int
    validation_ruleset: str | None  # e.g. "vee-1"
    pseudonym_key_id: str
    core_version: str
    meter_readings: int  # readings in the batch
    readings_stored: int  # new rows (the rest were already stored)
    telemetry_points: int
    quality_counts: dict[str, int]  # quality flag name -> readings carrying it
