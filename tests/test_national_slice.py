"""Shipped scenarios end to end: every served reading arrives as read, whatever the timing.

``national-slice``: 20,000 meters on 16 concentrators and 8 feeder heads, one interval a
second, with the agent already polling when the devices come up (its breakers open, then it
catches up from the histories while intervals keep closing) and with the agent starting when
the simulator is ahead. The first wave stored 623,598 of 1,162,500 readings of such a run as
estimates. ``storm``: 6,000 meters through half a storm day, with a North concentrator refusing
5 % of requests for an hour (its breaker opens) and meters missing intervals, sending spikes,
zeros and negative values. Every reading the simulator served is stored once with its value,
never as an estimate (estimates only where a meter served nothing), and nothing is left in the
edge quarantine.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from fix_services import BIN, assert_stored_as_served, stop_process, wait_until
from pgcluster import free_loopback_ports

from core_ingest.schema import TIMESCALEDB
from substation_sim import FieldRecord, load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]


def device_sources(scenario_name: str, port: int) -> list[str]:
    """``[[sources.modbus]]`` bodies for every device of the scenario, served from ``port``."""
    scenario = load_scenario(scenario_name)
    bodies = []
    for region in scenario.regions:
        for _ in range(region.substations):
            for role in ["customer"] * region.concentrators_per_substation + ["feeder_head"]:
                bodies.append(
                    f'name = "d{len(bodies)}"\nhost = "127.0.0.1"\nport = {port + len(bodies)}\n'
                    f'poll_interval_seconds = 1\nbreaker_reset_seconds = 2\nrole = "{role}"'
                )
    return bodies


def served_when_done(record: Path, scenario_name: str, intervals: int) -> list:
    """What the simulator served, once it has closed its last interval."""
    last = load_scenario(scenario_name).start + intervals * 900

    def done() -> list:
        if not record.exists():
            return []
        served = FieldRecord(record).served()
        return served if served and max(r.interval_end for r in served) >= last else []

    return wait_until(done, timeout=240, what=f"{scenario_name}'s {intervals} intervals")  # type: ignore[return-value]


def stored_as_read(dsn: str) -> int:
    """Readings in the database that are not estimates."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM meter_readings WHERE quality_flags & 2 = 0"
        ).fetchone()[0]


@pytest.mark.parametrize(
    ("scenario_name", "intervals", "agent_first"),
    [("national-slice", 8, True), ("national-slice", 8, False), ("storm", 48, True)],
    ids=["national-slice-agent-first", "national-slice-agent-later", "storm-half-day"],
)
def test_a_shipped_scenario_stores_every_reading_as_read(  # noqa: PLR0913, PLR0917 - fixtures
    agent_setup,
    core_server,
    storage_dsn,
    mosquitto,
    tmp_path,
    scenario_name,
    intervals,
    agent_first,
):
    """Every served reading stored once, read, with its value; nothing quarantined."""
    sources = device_sources(scenario_name, port := free_loopback_ports(32))
    agent = agent_setup(
        core=core_server,
        modbus_port=port,
        extra_sources=tuple(sources[1:]),  # the first is agent_setup's own source
        uplink="batch_max_readings = 20000\n",
    )
    record = tmp_path / "record.sqlite"
    command = [
        str(BIN / "substation-sim"), "run", scenario_name,
        "--base-port", str(port), "--mqtt-port", str(mosquitto),
        "--intervals", str(intervals), "--record", str(record),
    ]  # fmt: skip

    def simulator() -> subprocess.Popen:
        return subprocess.Popen(command, stderr=subprocess.DEVNULL)

    started = []
    try:
        for start in (agent.run, simulator) if agent_first else (simulator, agent.run):
            started.append(start())
            time.sleep(3 if agent_first else 4)
        served = served_when_done(record, scenario_name, intervals)
        wait_until(
            lambda: stored_as_read(storage_dsn) >= len(served),
            timeout=240,
            what=f"{len(served)} readings",
        )
    finally:
        for process in started:
            stop_process(process)
    assert_stored_as_served(agent, served, storage_dsn)
