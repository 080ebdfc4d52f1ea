"""The agent loses nothing when the core is away or the agent itself is killed."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from fix_db import core_dsn
from fix_services import (
    BIN,
    assert_stored_as_served,
    core_healthy,
    stop_process,
    stored_and_sent,
    wait_until,
)
from pgcluster import free_loopback_port

from core_ingest.schema import TIMESCALEDB

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
METERS = 200


def buffer_status(agent) -> dict:
    """The agent's buffer counts; all zero before the agent has created its buffer."""
    done = agent.command("status")
    if done.returncode != 0:
        assert "has the agent run yet?" in done.stderr, done.stderr
        return {"pending_batches": 0, "next_sequence": 0}
    return json.loads(done.stdout)


def wait_until_delivered(agent, dsn: str, *, readings: int, timeout: float) -> None:
    """Wait for ``readings`` stored at the core, then for the agent to hold no pending batch."""
    wait_until(
        lambda: stored_and_sent(dsn)[0] >= readings,
        timeout=timeout,
        what=f"{readings} readings in the database",
    )
    wait_until(
        lambda: buffer_status(agent)["pending_batches"] == 0,
        timeout=30,
        what="acknowledgements to clear the pending batches",
    )


def test_readings_wait_in_the_buffer_until_the_core_comes_up(
    simulator, agent_setup, storage_dsn, tmp_path
):
    """With no core listening, intervals pile up as pending batches; all arrive once it starts."""
    sim = simulator(meters=METERS)
    target = f"127.0.0.1:{free_loopback_port()}"
    agent = agent_setup(core=target, modbus_port=sim.port)
    process = agent.run()
    core = None
    try:
        for interval in (1, 2):
            sim.close_interval()
            wait_until(
                lambda n=interval: buffer_status(agent)["pending_batches"] >= n,
                timeout=30,
                what=f"interval {interval} sealed into a pending batch",
            )
        assert stored_and_sent(storage_dsn) == (0, 0)
        core = subprocess.Popen(
            [str(BIN / "core-ingest"), "serve", "--dsn", core_dsn(storage_dsn), "--listen", target],
            stderr=(tmp_path / "core.log").open("w"),
        )
        wait_until(lambda: core_healthy(target), timeout=30, what="core to start")
        wait_until_delivered(agent, storage_dsn, readings=2 * METERS, timeout=90)
    finally:
        stop_process(process)
        if core is not None:
            stop_process(core)
    assert stored_and_sent(storage_dsn) == (2 * METERS, 2 * METERS)


def assert_restart_delivers_each_once(agent, sim, dsn: str, *, intervals: int) -> None:
    """Start the agent once more: every interval arrives, each reading exactly once, as read.

    The intervals that closed while the agent was dead are read back from the history: none
    is stored as an estimate (SIGKILLs once turned 5,000 of 80,000 readings into estimates).
    """
    process = agent.run()
    try:
        wait_until_delivered(agent, dsn, readings=intervals * METERS, timeout=60)
    finally:
        stop_process(process)
    assert stored_and_sent(dsn) == (intervals * METERS, intervals * METERS)
    assert_stored_as_served(agent, sim.served(), dsn)


def test_sigkill_loses_nothing_and_duplicates_nothing(
    simulator, agent_setup, core_server, storage_dsn
):
    """Killed with SIGKILL after each interval, the restarted agent delivers all, exactly once."""
    sim = simulator(meters=METERS)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    for interval in (1, 2, 3):
        process = agent.run()
        sim.close_interval()
        wait_until(
            lambda n=interval: buffer_status(agent)["next_sequence"] > n,
            timeout=30,
            what=f"interval {interval} to be sealed",
        )
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert_restart_delivers_each_once(agent, sim, storage_dsn, intervals=3)


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.6])
def test_sigkill_at_any_moment_of_a_cycle_loses_nothing(
    simulator, agent_setup, core_server, storage_dsn, delay
):
    """Killed at any delay after an interval closes, the agent still delivers all exactly once.

    The delays land mid-poll, mid-commit, mid-seal or mid-send; the concentrator's live table
    still shows the last interval when the agent comes back.
    """
    sim = simulator(meters=METERS)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    for _ in range(4):
        process = agent.run()
        time.sleep(0.8)  # started and connected
        sim.close_interval()
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert_restart_delivers_each_once(agent, sim, storage_dsn, intervals=4)
