"""Acquisition under trouble: a dead device beside a live one; backfill after an agent outage."""

from __future__ import annotations

import math
import socket
import threading

import psycopg
import pytest
from fix_services import AgentSetup, stop_process, wait_until

from core_ingest.schema import TIMESCALEDB
from edge_agent.sinks.buffer import Buffer
from edge_agent.transforms.pseudonymize import Pseudonymizer

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
METERS = 300


def learned_profiles(agent: AgentSetup, serials: set[int], interval_end: int) -> dict[int, float]:
    """Serial -> the profile value for ``interval_end``'s time of day the buffer holds, if any."""
    buffer = Buffer(agent.folder / "buffer.sqlite", read_only=True)
    memory = buffer.meter_memory()
    buffer.close()
    pseudonyms = Pseudonymizer(key=agent.pseudonym_key, key_id="test-key-1")
    slot = (interval_end - 450) // 900 % 96
    usual = {serial: memory.usual(pseudonyms.pseudonym(serial), slot) for serial in serials}
    return {serial: value for serial, value in usual.items() if not math.isnan(value)}


def stored_by_interval(dsn: str) -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM interval_end)::bigint, count(*) FROM meter_readings"
            " GROUP BY 1"
        ).fetchall()
    return dict(rows)


class BlackHole:
    """A TCP server that accepts connections and never answers: the worst kind of dead device."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        for connection in self._held:
            connection.close()
        self._server.close()


def test_a_device_that_never_answers_does_not_delay_the_others(
    simulator, core_server, agent_setup, storage_dsn
):
    """Each interval of the live concentrator arrives well within the dead one's 10 s timeout."""
    sim = simulator(meters=METERS)
    hole = BlackHole()
    dead = (
        f'name = "dead"\nhost = "127.0.0.1"\nport = {hole.port}\n'
        "poll_interval_seconds = 0.1\ntimeout_seconds = 10\nretries = 0\n"
    )
    agent = agent_setup(core=core_server, modbus_port=sim.port, extra_sources=(dead,))
    process = agent.run()
    try:
        for interval in range(1, 4):
            end = sim.close_interval()
            wait_until(
                lambda e=end: stored_by_interval(storage_dsn).get(e) == METERS,
                timeout=8,
                what=f"interval {interval} while the other device hangs",
            )
    finally:
        stop_process(process)
        hole.close()


def test_backfill_after_a_six_hour_agent_outage_recovers_every_interval(
    simulator, core_server, agent_setup, storage_dsn
):
    """Agent down for 24 intervals: on restart it reads them back, values as served."""
    sim = simulator(meters=METERS)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    process = agent.run()
    try:
        first = sim.close_interval()
        wait_until(
            lambda: stored_by_interval(storage_dsn).get(first) == METERS,
            timeout=30,
            what="the first interval",
        )
    finally:
        stop_process(process)
    first_served = [r for r in sim.served() if r.interval_end == first]
    assert learned_profiles(agent, {r.serial for r in first_served}, first) == {
        r.serial: r.energy_wh
        for r in first_served
        if r.energy_wh  # a first zero is suspect
    }, "the stopped agent saves what validation learned of each meter"
    ends = [sim.close_interval() for _ in range(24)]  # six hours with the agent down
    process = agent.run()
    try:
        wait_until(
            lambda: sum(stored_by_interval(storage_dsn).values()) >= 25 * METERS,
            timeout=60,
            what="the six missed hours read back",
        )
    finally:
        stop_process(process)
    counts = stored_by_interval(storage_dsn)
    assert counts == dict.fromkeys([first, *ends], METERS)
    served = {(r.serial, r.interval_end, r.energy_wh, r.register_wh) for r in sim.served()}
    with psycopg.connect(storage_dsn) as conn:
        energy = conn.execute("SELECT sum(energy_wh)::bigint FROM meter_readings").fetchone()[0]
    assert energy == sum(r[2] for r in served)
