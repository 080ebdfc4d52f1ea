"""The agent's Modbus client against a wire that misbehaves at any request (hypothesis).

A concentrator written from the register map (``doc_concentrator.DeviceModel``) is served by
``wire_concentrator``, which can answer any request with noise, a cut frame, an exception,
silence, a closed connection, another transaction id or unit, one register short, a reply in
pieces, junk after it, twice, or too late, while intervals close before any request. A second,
well-behaved concentrator is read by the same agent throughout. Whatever the wire does:

- a poll either returns or fails with a ``SourceError`` naming the device, within its timeouts
  (never another exception, never a hang);
- nothing is buffered that the device did not serve, nothing twice, nothing goes to quarantine
  (the wire garbled frames, never values), and nothing the device held is estimated;
- once the wire behaves, the agent catches up with every interval from the history;
- the other device loses nothing and sees no error.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from device_checks import buffered, check_against_device, write_config
from doc_concentrator import DeviceModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_concentrator import MISBEHAVIOURS, Misbehaviour, WireConcentrator

from edge_agent.agent import EdgeAgent
from edge_agent.config import load_config
from edge_agent.errors import SourceError
from edge_agent.sources.modbus import ModbusConcentrator

pytestmark = pytest.mark.integration

TIMEOUT = 0.25  # the hostile device's reply timeout: short, so silences cost little
# A poll is a few dozen requests; each waits at most its timeout times its tries, plus the
# connection. Far above that is a hang, even on a busy machine.
POLL_BOUND_SECONDS = 60


misbehaviours = st.builds(
    Misbehaviour,
    kind=st.sampled_from(MISBEHAVIOURS),
    noise=st.binary(min_size=1, max_size=300),
    code=st.integers(0, 255),
)


@st.composite
def wire_stories(draw: st.DrawFn) -> tuple[int, dict[int, Misbehaviour], dict, int, int]:
    """Meters, replies gone wrong by request, closes by request, intervals before, retries."""
    closes = draw(
        st.dictionaries(st.integers(0, 60), st.integers(1, 2), max_size=4)  # request: how many
    )
    return (
        draw(st.integers(1, 20)),
        draw(st.dictionaries(st.integers(0, 60), misbehaviours, min_size=1, max_size=6)),
        closes,
        draw(st.integers(0, 3)),
        draw(st.integers(0, 1)),
    )


def device(first_serial: int, meters: int, closed: int) -> DeviceModel:
    model = DeviceModel(serials=[first_serial + 37 * i for i in range(meters)])
    for _ in range(closed):
        model.close()
    return model


async def poll(agent: EdgeAgent, source: ModbusConcentrator, errors: list[SourceError]) -> None:
    """One poll, bounded: a ``SourceError`` is kept, anything else fails the test."""
    try:
        await asyncio.wait_for(agent.poll_once(source), POLL_BOUND_SECONDS)
    except SourceError as error:
        errors.append(error)
    except TimeoutError:
        pytest.fail(f"a poll of {source.device} hung for {POLL_BOUND_SECONDS} s")


@dataclass
class Outcome:
    """What one run left: each device's errors and buffered rows, and the quarantine."""

    errors: dict[str, list[SourceError]] = field(default_factory=dict)
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)


async def read_both(config: Path, wires: list[WireConcentrator], outcome: Outcome) -> None:
    """Poll both devices in turn until the hostile wire is spent and both are caught up."""
    async with EdgeAgent(load_config(config)) as agent:
        for source in agent.sources:
            outcome.errors[source.config.name] = []
        for round_ in range(300):
            for source in agent.sources:
                await poll(agent, source, outcome.errors[source.config.name])
            if round_ % 10 == 0:
                wires[1].model.close()  # the calm device moves on meanwhile
            if (
                not wires[0].misbehave
                and not wires[0].model.schedule
                and all(
                    source.last_interval_end == wire.model.last_end
                    for source, wire in zip(agent.sources, wires, strict=True)
                )
            ):
                return
        pytest.fail(f"never caught up: {[s.last_interval_end for s in agent.sources]}")


def run(agent_keys: Path, wires: list[WireConcentrator], retries: int) -> Outcome:
    """Serve ``wires`` (hostile first), read them with one agent until caught up."""
    outcome = Outcome()

    async def scenario(folder: Path) -> None:
        for wire in wires:
            await wire.start()
        ports = [wire.port for wire in wires]
        config = write_config(folder, agent_keys, ports, timeouts=[TIMEOUT], retries=retries)
        try:
            await read_both(config, wires, outcome)
        finally:
            for wire in wires:
                await wire.stop()

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        asyncio.run(scenario(folder))
        for name_, wire in zip(("doc", "doc-1"), wires, strict=True):
            outcome.rows[name_] = buffered(folder / "buffer.sqlite", wire.device)[0]
        outcome.quarantined = buffered(folder / "buffer.sqlite")[1]
    return outcome


@given(story=wire_stories())
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_a_misbehaving_wire_costs_time_never_readings(agent_keys, story):
    """Any reply gone wrong: errors naming the device, then every served reading, as read."""
    meters, misbehave, closes, closed, retries = story
    hostile = device(10_007, meters, closed + 1)
    for request, count in closes.items():
        hostile.schedule[request] = [(count, frozenset())]
    calm = device(900_001, 5, 1)
    late = TIMEOUT * (retries + 1) * 1.5  # after the agent stopped waiting, tries and all
    wires = [WireConcentrator(hostile, dict(misbehave), late_seconds=late), WireConcentrator(calm)]
    outcome = run(agent_keys, wires, retries)
    assert outcome.quarantined == []
    assert outcome.errors["doc-1"] == []
    assert all(error.device == wires[0].device for error in outcome.errors["doc"])
    check_against_device(outcome.rows["doc"], hostile, agent_keys)
    check_against_device(outcome.rows["doc-1"], calm, agent_keys)
