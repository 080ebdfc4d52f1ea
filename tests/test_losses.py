"""Technical losses: the feeder-head meter is not a customer, and the losses view is right.

The simulator's feeder-head meter measures what enters the substation: its customers' energy
divided by (1 - losses_share). Configured as a ``feeder_head`` device at the edge, its readings
stay out of the consumption rollups, and ``substation_day_losses`` gives back the configured
share of losses when both sides are complete.
"""

from __future__ import annotations

import psycopg
import pytest
from fix_services import stop_process, stored_readings, wait_until

from core_ingest.schema import TIMESCALEDB

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
METERS, INTERVALS, LOSSES = 500, 8, 0.07  # the test scenario's default losses_share


def source(name: str, port: int, role: str = "customer") -> str:
    return (
        f'name = "{name}"\nhost = "127.0.0.1"\nport = {port}\nunit_id = 1\n'
        f'poll_interval_seconds = 0.1\nrole = "{role}"'
    )


def test_the_feeder_head_is_kept_out_of_consumption_and_gives_the_losses(
    simulator, agent_setup, core_server, storage_dsn
):
    """Two concentrators and the feeder head: rollups hold customers only; losses = 7 %."""
    sim = simulator(meters=METERS, concentrators=2)
    agent = agent_setup(
        core=core_server,
        modbus_port=sim.port,
        extra_sources=(
            source("conc-2", sim.port + 1),
            source("feeder-head", sim.port + 2, "feeder_head"),
        ),
    )
    process = agent.run()
    try:
        for _ in range(INTERVALS):
            sim.close_interval()
        readings = INTERVALS * (2 * METERS + 1)
        wait_until(lambda: stored_readings(storage_dsn) >= readings, timeout=90, what="readings")
    finally:
        stop_process(process)
    served = sim.record.served()
    head = [r for r in served if r.device.endswith("-FH")]
    customers = sum(r.energy_wh for r in served if not r.device.endswith("-FH"))
    assert len(head) == INTERVALS
    with psycopg.connect(storage_dsn) as conn:
        rollup = conn.execute(
            "SELECT sum(energy_wh), sum(received) FROM substation_daily"
        ).fetchone()
        roles = dict(conn.execute("SELECT role, count(*) FROM meters GROUP BY role").fetchall())
        (losses,) = conn.execute(
            "SELECT feeder_head_wh, customer_wh, losses_wh, losses_share,"
            " feeder_head_completeness, customer_completeness FROM substation_day_losses"
        ).fetchall()
        expected = conn.execute("SELECT meters FROM region_day_quality").fetchall()
    assert rollup == (customers, INTERVALS * 2 * METERS)  # the feeder head is not summed
    assert roles == {"customer": 2 * METERS, "feeder_head": 1}
    assert expected == [(2 * METERS,)]
    feeder_head_wh, customer_wh, losses_wh, share, *completeness = losses
    assert (feeder_head_wh, customer_wh) == (sum(r.energy_wh for r in head), customers)
    assert losses_wh == feeder_head_wh - customer_wh
    assert abs(losses_wh - LOSSES * feeder_head_wh) <= 0.001 * feeder_head_wh
    assert share == pytest.approx(LOSSES, abs=0.001)
    assert completeness == [INTERVALS / 96, INTERVALS / 96]
