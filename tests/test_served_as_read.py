"""Every reading a concentrator served reaches the database as read, never as an estimate.

The failures the first wave found by trying the pipeline as a user would: a device whose
requests fail for hours (its breaker opens and closes), and an agent that starts while the
concentrator is already 20 intervals ahead and keeps closing one a second. Whatever happens,
every reading the simulator served while its history still held it is stored exactly once,
with its served value and not flagged ESTIMATED, and nothing waits in the edge quarantine.
"""

from __future__ import annotations

import pytest
from fix_services import assert_stored_as_served, stop_process, stored_readings, wait_until

from core_ingest.schema import TIMESCALEDB

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
ONE_INTERVAL_A_SECOND = 900.0


def run_until_stored(agent, sim, dsn: str, *, intervals: int) -> None:
    """Run the simulator's clock at one interval a second with the agent up, then wait."""
    process = agent.run()
    try:
        sim.run_clock(speed=ONE_INTERVAL_A_SECOND, intervals=intervals)
        served = len(sim.served())
        wait_until(lambda: stored_readings(dsn) >= served, timeout=120, what=f"{served} readings")
    finally:
        stop_process(process)


def test_a_device_failing_for_hours_is_read_back_not_estimated(
    simulator, agent_setup, core_server, storage_dsn
):
    """5 % of requests refused for 3 simulated hours: every interval is read back.

    Nearly every poll fails, the breaker opens, and intervals pile up in the history while it
    is open; when it closes, intervals keep closing during the backfill.
    """
    faults = ({"kind": "modbus_exception", "start_hour": 0.5, "hours": 3, "share": 0.05},)
    sim = simulator(meters=1_000, faults=faults)
    agent = agent_setup(
        core=core_server,
        modbus_port=sim.port,
        extra="breaker_reset_seconds = 5\n",  # intervals pile up while the breaker is open
    )
    run_until_stored(agent, sim, storage_dsn, intervals=24)
    assert len(sim.served()) == 24 * 1_000
    assert_stored_as_served(agent, sim.served(), storage_dsn)


def test_an_agent_starting_behind_catches_up_by_reading_not_estimating(
    simulator, agent_setup, core_server, storage_dsn
):
    """20 intervals behind, one more closing each second: the catch-up reads all of them."""
    sim = simulator(meters=2_500)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    sim.run_clock(speed=20 * ONE_INTERVAL_A_SECOND, intervals=20)  # before the agent starts
    run_until_stored(agent, sim, storage_dsn, intervals=20)
    assert len(sim.served()) == 40 * 2_500
    assert_stored_as_served(agent, sim.served(), storage_dsn)
