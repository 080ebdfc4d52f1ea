"""Chaos: the link between agent and core cut for a simulated day, then slow and lossy.

The agent reaches its core through a TCP proxy the test controls (on loopback). Cut: every
connection closed and new ones refused while the simulator's clock runs through a day (96
intervals, the concentrator's whole history), the agent polling into its buffer; restored, the
backlog drains. Slow and lossy: each chunk delayed and connections reset now and then while the
clock runs. Afterwards every reading served is in the database exactly once, as served, read.
``MP_CHAOS=full``: the cut lasts a simulated day; the test suite: 2 hours.
"""

from __future__ import annotations

import time

from chaos_runs import CHAOS, SPEED, run_and_drain
from fix_services import wait_until
from scorecard import assert_clean, scaled
from tcp_proxy import tcp_proxy

pytestmark = CHAOS
METERS = 200
CUT_INTERVALS = scaled(8, 96)


def test_the_link_cut_for_a_simulated_day(simulator, agent_setup, core_server, storage_dsn):
    sim = simulator(meters=METERS)
    with tcp_proxy([core_server]) as link:
        agent = agent_setup(core=link.address, modbus_port=sim.port)

        def cut() -> str:
            wait_until(lambda: link.connections >= 1, timeout=30, what="the agent's stream")
            link.cut()
            time.sleep(CUT_INTERVALS * 900 / SPEED)  # the clock runs on meanwhile
            link.restore()
            hours = CUT_INTERVALS // 4
            return f"the link to the core cut for {hours} simulated hours, then restored"

        card = run_and_drain(sim, agent, storage_dsn, intervals=CUT_INTERVALS + 8, chaos=cut)
    assert_clean(card)


def test_a_slow_lossy_link(simulator, agent_setup, core_server, storage_dsn):
    sim = simulator(meters=METERS)
    with tcp_proxy([core_server], seed=7) as link:
        agent = agent_setup(core=link.address, modbus_port=sim.port)

        def degrade() -> str:
            link.degrade(delay_s=0.05, reset_chance=0.05)
            return "a slow, lossy link: 50 ms a chunk, 5 % of chunks reset the connection"

        card = run_and_drain(sim, agent, storage_dsn, intervals=scaled(8, 48), chaos=degrade)
    assert_clean(card)
