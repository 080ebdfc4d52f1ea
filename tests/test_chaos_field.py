"""Chaos in the field: a concentrator offline for hours, the MQTT broker restarted.

A concentrator that stops answering (its TCP port closed) for hours while its meters go on
measuring: when it is back, the agent reads every interval it missed from the concentrator's
history, as read, never as an estimate. The substation's MQTT broker stopped and started again
while the transformer publishes: with persistence on it keeps the agent's session and queued
messages, and nothing is lost; without it the broker forgets the session, so what is published
before the agent subscribes again is lost by the broker (docs/mqtt-topics.md), and everything
after is stored once. ``MP_CHAOS=full``: offline 8 hours, the broker down 2 simulated hours.
"""

from __future__ import annotations

import time

from chaos_runs import CHAOS, SPEED, run_and_drain
from fix_services import Broker, mqtt_section, wait_until
from scorecard import (
    Scorecard,
    assert_clean,
    record,
    scaled,
    telemetry_missing,
)

pytestmark = CHAOS
METERS = 200
OFFLINE_HOURS = scaled(2, 8)
BROKER_DOWN_INTERVALS = scaled(4, 8)


def test_a_concentrator_offline_for_hours(simulator, agent_setup, core_server, storage_dsn):
    """Every interval of the outage read back from the history: all as received, none estimated."""
    offline = {"kind": "offline", "start_hour": 0.5, "hours": OFFLINE_HOURS}
    sim = simulator(meters=METERS, faults=(offline,))
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    intervals = OFFLINE_HOURS * 4 + 8
    card = run_and_drain(
        sim,
        agent,
        storage_dsn,
        intervals=intervals,
        chaos=lambda: f"a concentrator offline for {OFFLINE_HOURS} hours, then back",
    )
    assert card.served == METERS * intervals  # the agent read every interval there was
    assert_clean(card)


def broker_restarted(  # noqa: PLR0913 - fixtures and the scenario's broker
    simulator, agent_setup, core_server, dsn: str, broker: Broker, *, lossy: bool = False
) -> tuple[Scorecard, list[tuple[str, int]]]:
    """Run the clock with the broker stopped for a while, then score.

    ``lossy``: the broker forgets (no persistence); the card is then complete once the meter
    readings and every message published after the agent had subscribed again are stored.
    Returns the card and those messages.
    """
    broker.start()
    sim = simulator(meters=METERS, mqtt_port=broker.port)
    agent = agent_setup(
        core=core_server, modbus_port=sim.port, extra=mqtt_section(broker.port, "N-S01-T1")
    )
    subscribed_again = 0

    def after() -> list[tuple[str, int]]:
        """The messages published once the agent had subscribed again."""
        return sim.record.published()[subscribed_again:]

    def restart() -> str:
        nonlocal subscribed_again
        time.sleep(2 * 900 / SPEED)
        broker.stop()
        time.sleep(BROKER_DOWN_INTERVALS * 900 / SPEED)  # the transformer goes on publishing
        broker.start()
        log = agent.folder / "agent.log"
        wait_until(
            lambda: log.read_text().count("subscribed to") >= 2,
            timeout=90,
            what="the agent to subscribe again",
        )
        subscribed_again = len(sim.record.published())
        state = "persistence off" if lossy else "persistence on"
        hours = BROKER_DOWN_INTERVALS / 4
        return f"the MQTT broker ({state}) stopped for {hours:g} simulated hours, restarted"

    try:
        card = run_and_drain(
            sim,
            agent,
            dsn,
            intervals=BROKER_DOWN_INTERVALS + 14,  # the agent is back within 5 s
            chaos=restart,
            telemetry=True,
            complete=(
                (lambda card: readings_complete(card) and not telemetry_missing(after(), dsn))
                if lossy
                else lambda card: not card.problems()
            ),
        )
    finally:
        broker.stop()
    return card, after()


def readings_complete(card: Scorecard) -> bool:
    """Every problem but lost telemetry is gone."""
    return all(problem.endswith("telemetry messages lost") for problem in card.problems())


def test_the_broker_restarted_with_persistence(
    simulator, agent_setup, core_server, storage_dsn, tmp_path
):
    """The broker keeps the agent's session across its restart: every message stored once."""
    broker = Broker(tmp_path, persistence=True)
    card, _ = broker_restarted(simulator, agent_setup, core_server, storage_dsn, broker)
    assert_clean(card)


def test_the_broker_restarted_without_persistence(
    simulator, agent_setup, core_server, storage_dsn, tmp_path
):
    """The broker forgets the session: messages before resubscription are its loss, no other."""
    broker = Broker(tmp_path, persistence=False)
    card, after = broker_restarted(
        simulator, agent_setup, core_server, storage_dsn, broker, lossy=True
    )
    record(card)
    assert readings_complete(card), card.problems()
    assert after, "nothing was published after the agent subscribed again"
    assert telemetry_missing(after, storage_dsn) == []  # only the broker's forgotten ones lost
    assert card.telemetry_duplicated == 0
