"""A chaos run: the simulator's clock running while something breaks, then the scorecard."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fix_services import AgentSetup, RunningSimulator, stop_process
from scorecard import Scorecard, score, settle

SPEED = 900  # an interval a (wall-clock) second


def run_and_drain(
    sim: RunningSimulator,
    agent: AgentSetup,
    dsn: str,
    *,
    intervals: int,
    chaos: Callable[[], str],
) -> Scorecard:
    """Start the agent, run the clock for ``intervals`` with ``chaos()`` meanwhile, then score.

    ``chaos`` breaks something and returns the scenario's name. The card counts once every
    served reading is stored, or after two minutes of waiting; ``recovery_s`` is how long the
    store took to become complete after the clock stopped (None: it did not).
    """
    process = agent.run()
    clock = threading.Thread(target=lambda: sim.run_clock(speed=SPEED, intervals=intervals))
    clock.start()
    try:
        scenario = chaos()
        clock.join(timeout=600)
        assert not clock.is_alive(), "the simulator's clock did not finish"
        served = sim.served()  # the concentrator the agent polls (not the feeder head)
        recovery = settle(lambda: score("", served=served, pseudonym_key=agent.pseudonym_key,
                                        dsn=dsn))  # fmt: skip
    finally:
        stop_process(process)
    meters = len({reading.serial for reading in served})
    return score(scenario, served=served, pseudonym_key=agent.pseudonym_key, dsn=dsn,
                 recovery_s=recovery,
                 detail=f"{meters} meters, {intervals} intervals at speed {SPEED}")  # fmt: skip
