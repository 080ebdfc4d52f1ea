"""The national slice, agent started before the simulator: every served reading arrives as read.

20,000 meters on 16 concentrators and 8 feeder heads, one interval a second, and an agent that
is already polling when the devices come up (its breakers open, then it catches up from the
histories while intervals keep closing). The first wave stored 623,598 of 1,162,500 readings of
this run as estimates. Every reading the simulator served must be stored once, with its value,
none ESTIMATED, and nothing left in the edge quarantine.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from fix_services import BIN, assert_stored_as_served, stop_process, stored_readings, wait_until

from core_ingest.migrations import TIMESCALEDB
from core_ingest.pgcluster import free_loopback_ports
from substation_sim import FieldRecord, load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
INTERVALS = 8


def device_sources(port: int) -> list[str]:
    """``[[sources.modbus]]`` bodies for every device of the slice, served from ``port`` on."""
    scenario = load_scenario("national-slice")
    devices = sum(r.substations * (r.concentrators_per_substation + 1) for r in scenario.regions)
    bodies = []
    offset = 0
    for region in scenario.regions:
        for _ in range(region.substations):
            for role in ["customer"] * region.concentrators_per_substation + ["feeder_head"]:
                bodies.append(
                    f'name = "d{offset}"\nhost = "127.0.0.1"\nport = {port + offset}\n'
                    f'poll_interval_seconds = 1\nbreaker_reset_seconds = 2\nrole = "{role}"'
                )
                offset += 1
    assert offset == devices
    return bodies


@pytest.mark.parametrize("agent_first", [True, False], ids=["agent-first", "agent-later"])
def test_national_slice_stores_every_reading_as_read(  # noqa: PLR0913, PLR0917 - fixtures
    agent_setup, core_server, storage_dsn, mosquitto, tmp_path, agent_first
):
    """All 8 intervals of 20,008 meters, read (not estimated), exactly as served.

    Agent first: every device refuses the connection at first, breakers open. Agent later:
    the simulator has closed about 4 intervals when the agent starts, and goes on closing.
    """
    port = free_loopback_ports(24)
    rest = device_sources(port)[1:]  # the first is agent_setup's own source
    agent = agent_setup(
        core=core_server,
        modbus_port=port,
        extra_sources=tuple(rest),
        uplink="batch_max_readings = 20000\n",
    )
    record = tmp_path / "record.sqlite"
    command = [
        str(BIN / "substation-sim"), "run", "national-slice",
        "--base-port", str(port), "--mqtt-port", str(mosquitto),
        "--intervals", str(INTERVALS), "--record", str(record),
    ]  # fmt: skip

    def simulator() -> subprocess.Popen:
        return subprocess.Popen(command, stderr=subprocess.DEVNULL)

    started = []
    try:
        for start in (agent.run, simulator) if agent_first else (simulator, agent.run):
            started.append(start())
            time.sleep(3 if agent_first else 4)
        expected = INTERVALS * 20_008
        wait_until(
            lambda: stored_readings(storage_dsn) >= expected,
            timeout=240,
            what=f"{expected} readings",
        )
    finally:
        for process in started:
            stop_process(process)
    served = FieldRecord(record).served()
    assert len(served) == INTERVALS * 20_008
    assert_stored_as_served(agent, served, storage_dsn)
