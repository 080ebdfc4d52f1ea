"""Chaos: the edge agent SIGKILLed at random moments under load loses and repeats nothing.

The simulator's clock runs (an interval a second, a transformer publishing every simulated
minute over MQTT) while the agent is killed at random moments, polling, backfilling, sealing or
sending, and started again at once or after a pause (intervals then close while it is down and
must be read back from the concentrator's history, not estimated). Afterwards every reading
served is in the database exactly once, as served, read, and every message the broker accepted
is stored once. ``MP_CHAOS=full`` (``scripts/chaos.sh``) kills it 24 times; the test suite 4.
"""

from __future__ import annotations

import random
import signal
import threading
import time

from chaos_runs import CHAOS
from fix_services import mqtt_section, stop_process
from scorecard import assert_clean, scaled, score, settle

from edge_agent.sinks.salvage import damage

pytestmark = CHAOS
METERS = 300
KILLS = scaled(4, 24)
SPEED = 900  # an interval a (wall-clock) second


def test_sigkill_at_random_moments_under_load(
    simulator, mosquitto, agent_setup, core_server, storage_dsn
):
    sim = simulator(meters=METERS, mqtt_port=mosquitto)
    agent = agent_setup(
        core=core_server, modbus_port=sim.port, extra=mqtt_section(mosquitto, "N-S01-T1")
    )
    chance = random.Random(15)  # the number: the same moments every run
    process = agent.run()
    agent.wait_subscribed()
    intervals = KILLS * 3
    clock = threading.Thread(target=lambda: sim.run_clock(speed=SPEED, intervals=intervals))
    clock.start()
    kills = 0
    try:
        while kills < KILLS:
            time.sleep(chance.uniform(0.2, 2.5))  # polling, backfilling, sealing or sending
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert damage(agent.folder / "buffer.sqlite") == []  # as the next start checks
            kills += 1
            time.sleep(chance.choice([0.0, 0.0, 1.5, 4.0]))  # intervals close while it is down
            process = agent.run()
        clock.join(timeout=600)
        assert not clock.is_alive(), "the simulator's clock did not finish"
        served, published = sim.served(), sim.record.published()  # what the agent polls
        recovery = settle(lambda: score("", served=served, pseudonym_key=agent.pseudonym_key,
                                        dsn=storage_dsn, published=published))  # fmt: skip
    finally:
        stop_process(process)
    assert_clean(
        score(
            f"edge agent SIGKILLed {kills} times under load",
            served=served,
            pseudonym_key=agent.pseudonym_key,
            dsn=storage_dsn,
            published=published,
            recovery_s=recovery,
            detail=f"{METERS} meters, {intervals} intervals at speed {SPEED}, MQTT telemetry",
        )
    )
