"""A chaos run: the simulator's clock running while something breaks, then the scorecard."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from fix_services import AgentSetup, RunningSimulator, stop_process
from scorecard import Scorecard, score, settle

from core_ingest.schema import TIMESCALEDB

# Every chaos scenario's marks: real services, the chaos suite, on TimescaleDB.
CHAOS = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.parametrize("storage", [TIMESCALEDB]),
]
SPEED = 900  # an interval a (wall-clock) second


def run_and_drain(  # noqa: PLR0913 - keyword-only, each a part of the scenario
    sim: RunningSimulator,
    agent: AgentSetup,
    dsn: str,
    *,
    intervals: int,
    chaos: Callable[[], str],
    telemetry: bool = False,
    complete: Callable[[Scorecard], bool] = lambda card: not card.problems(),
) -> Scorecard:
    """Start the agent, run the clock for ``intervals`` with ``chaos()`` meanwhile, then score.

    ``chaos`` breaks something and returns the scenario's name. With ``telemetry`` the MQTT
    messages published count too. The card counts once ``complete`` (by default: no problem
    left), or after two minutes of waiting; ``recovery_s`` is how long the store took to become
    complete after the clock stopped (None: it did not).
    """
    process = agent.run()
    if telemetry:
        agent.wait_subscribed()
    clock = threading.Thread(target=lambda: sim.run_clock(speed=SPEED, intervals=intervals))
    clock.start()
    try:
        scenario = chaos()
        clock.join(timeout=600)
        assert not clock.is_alive(), "the simulator's clock did not finish"
        served = sim.served()  # the concentrator the agent polls (not the feeder head)
        published = sim.record.published() if telemetry else []

        meters = len({reading.serial for reading in served})
        detail = f"{meters} meters, {intervals} intervals at speed {SPEED}"
        detail += ", MQTT telemetry" if telemetry else ""

        def card(name: str = "", recovery_s: float | None = None) -> Scorecard:
            return score(name, served=served, pseudonym_key=agent.pseudonym_key, dsn=dsn,
                         published=published, recovery_s=recovery_s, detail=detail)  # fmt: skip

        recovery = settle(card, done=complete)
    finally:
        stop_process(process)
    return card(scenario, recovery)
