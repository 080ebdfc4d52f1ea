"""What the agent counted since it started: one snapshot the metrics and diagnostics read.

Plain integers and the buffer's statistics as of the agent's last refresh, never the buffer's
SQLite connection: a snapshot is read from other threads (prometheus-client's scrape).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.health import DeviceHealth
from edge_agent.sinks.buffer import BufferStatistics
from edge_agent.sinks.uplink import UplinkStatistics


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """What the agent counted since it started, and the buffer as of its last refresh."""

    buffer: BufferStatistics | None
    now_ms: int
    breakers: dict[str, str]  # device name -> closed, open or half_open
    poll_errors: dict[str, int]  # device name -> failed polls
    devices: list[DeviceHealth]  # each device as its poll loop last saw it
    stage_errors: dict[str, int]  # loop name -> unexpected failures
    readings_validated: dict[str, int]  # readings, estimated, suspect, quarantined, late
    telemetry: dict[str, int]  # messages, duplicate, shed, malformed:<kind>
    uplink: UplinkStatistics
