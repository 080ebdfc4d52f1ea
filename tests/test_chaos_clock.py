"""Chaos: the gateway's clock stepped an hour forward and back while the agent works.

The simulator's clock runs on real time here (its newest interval ends at the last quarter
hour), stepped interval by interval, so the gateway's wall clock and the devices' agree as in
the field. The agent's wall clock (``tests/clock_step``: the wall clock only, as an NTP step
moves it) jumps an hour ahead, back to true, an hour behind, and true again, an interval
closing in each phase. While it is an hour behind, the concentrator's newest interval looks an
hour in the future and is not trusted; nothing is read, nothing is estimated, and once the
clock is right every interval is read from the history. Every reading as received.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from chaos_runs import CHAOS
from fix_services import stop_process, wait_until
from scorecard import Scorecard, assert_clean, score, settle

pytestmark = CHAOS
METERS = 200
STEPS = (3600, 0, -3600, 0)  # seconds the gateway's clock is off, phase by phase
STEP_CODE = Path(__file__).with_name("clock_step")


def test_the_gateway_clock_stepped_an_hour_forward_and_back(
    simulator, agent_setup, core_server, storage_dsn, tmp_path
):
    last_quarter = int(time.time()) // 900 * 900
    earlier = 16  # intervals before the last quarter hour, for the agent to read at start
    start = dt.datetime.fromtimestamp(last_quarter - earlier * 900, dt.UTC)
    sim = simulator(meters=METERS, start=start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    for _ in range(earlier - len(STEPS) + 1):  # the newest ends before the last quarter hour
        sim.close_interval()
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    step_file = tmp_path / "clock-step"
    step_file.write_text("0")
    env = {**os.environ, "PYTHONPATH": str(STEP_CODE), "MP_CLOCK_STEP_FILE": str(step_file)}
    process = agent.run(env=env)
    log = agent.folder / "agent.log"

    def card(recovery_s: float | None = None) -> Scorecard:
        return score(
            f"the gateway clock stepped {', '.join(f'{s:+d} s' for s in STEPS)}",
            served=sim.served(),
            pseudonym_key=agent.pseudonym_key,
            dsn=storage_dsn,
            recovery_s=recovery_s,
            detail=f"{METERS} meters, an interval closing in each phase, real time",
        )

    try:
        wait_until(lambda: not card().problems(), timeout=60, what="the history read")
        for offset in STEPS:
            step_file.write_text(str(offset))
            time.sleep(0.5)  # a few polls on the stepped clock
            newest = sim.close_interval()
            assert newest <= time.time() + 900  # never ahead of the true clock
            if offset >= 0:  # a clock ahead of or on time: read at once
                wait_until(lambda: not card().problems(), timeout=60, what="the new interval")
            else:  # an hour behind: the newest interval looks an hour ahead, not trusted
                wait_until(
                    lambda: "ahead of the gateway clock" in log.read_text(),
                    timeout=60,
                    what="the agent to refuse the header",
                )
                assert card().lost == METERS  # nothing of the new interval read meanwhile
        recovery = settle(card)
    finally:
        stop_process(process)
    assert_clean(card(recovery))
