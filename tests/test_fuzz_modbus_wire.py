"""The agent's Modbus client against a wire that misbehaves at any request (hypothesis).

A concentrator written from the register map (``doc_concentrator.DeviceModel``) is served by
``wire_concentrator``, which can answer any request with noise, a cut frame (then a closed
connection, or not), an exception, silence, a closed connection, another reply under another
transaction id or unit, one register short, the right reply in pieces, with junk after it,
twice, or too late, while intervals close before any request and the device moves on every
round. A second, well-behaved concentrator is read by the same agent at the same time.
Whatever the wire does:

- a poll returns or fails with a ``SourceError`` naming the device, never another exception,
  never a hang; a reply the client must refuse costs its poll (with no retries configured:
  at least one failed poll for each);
- nothing is buffered that the device did not serve, nothing twice, nothing goes to quarantine
  (the wire garbles frames, never the values a device holds: those are
  ``test_poll_consistency``'s garbage replies), and nothing the device held is estimated;
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
from wire_concentrator import COSTLY, MISBEHAVIOURS, Misbehaviour, WireConcentrator

from edge_agent.agent import EdgeAgent
from edge_agent.config import load_config
from edge_agent.errors import SourceError
from edge_agent.sources.modbus import ModbusConcentrator

pytestmark = pytest.mark.integration

TIMEOUT = 0.25  # the hostile device's reply timeout: short, so silences cost little
# A poll is a few dozen requests, each waiting at most its timeout times its tries. Far above
# that is a hang, even on a busy machine.
POLL_BOUND_SECONDS = 60


misbehaviours = st.builds(
    Misbehaviour,
    kind=st.sampled_from(MISBEHAVIOURS),
    noise=st.binary(min_size=1, max_size=300),
    code=st.integers(0, 255),
    pieces=st.lists(st.integers(0, 300), min_size=1, max_size=3).map(tuple),
    pause_ms=st.integers(0, 30),
)


@dataclass(frozen=True)
class WireStory:
    """One run: the hostile device, what goes wrong on its wire, and the agent's retries."""

    meters: int
    closed: int  # intervals closed before the agent starts
    misbehave: dict[int, Misbehaviour]  # request number: what its reply does
    closes: dict[int, int]  # request number: intervals closing just before it
    retries: int


wire_stories = st.builds(
    WireStory,
    meters=st.integers(1, 20),
    closed=st.integers(0, 3),
    misbehave=st.dictionaries(st.integers(0, 60), misbehaviours, min_size=1, max_size=6),
    closes=st.dictionaries(st.integers(0, 60), st.integers(1, 2), max_size=4),
    retries=st.integers(0, 1),
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
    """Poll both devices at once, round after round, until the hostile wire is spent.

    While it is not spent, both devices close an interval every round, so what goes wrong lands
    on table and history reads, not only on idle header reads; then both must catch up.
    """
    async with EdgeAgent(load_config(config)) as agent:
        for source in agent.sources:
            outcome.errors[source.config.name] = []
        hostile = wires[0]
        for _ in range(300):
            spent = not hostile.misbehave and not hostile.model.schedule
            if not spent:
                for wire in wires:
                    wire.model.close()
            await asyncio.gather(
                *(poll(agent, s, outcome.errors[s.config.name]) for s in agent.sources)
            )
            if spent and all(
                source.last_interval_end == wire.model.last_end
                for source, wire in zip(agent.sources, wires, strict=True)
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


@given(story=wire_stories)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_a_misbehaving_wire_costs_polls_never_readings(agent_keys, story):
    """Any reply gone wrong: failed polls naming the device, then every reading, as read."""
    hostile = device(10_007, story.meters, story.closed + 1)
    for request, count in story.closes.items():
        hostile.schedule[request] = [(count, frozenset())]
    calm = device(900_001, 5, 1)
    # the late reply comes after the agent stopped waiting, every try included
    late = TIMEOUT * (story.retries + 1) + 0.5
    wires = [WireConcentrator(hostile, dict(story.misbehave), late_seconds=late)]
    wires.append(WireConcentrator(calm))
    outcome = run(agent_keys, wires, story.retries)
    assert outcome.quarantined == []
    check_against_device(outcome.rows["doc"], hostile, agent_keys)
    check_against_device(outcome.rows["doc-1"], calm, agent_keys)
    assert outcome.errors["doc-1"] == []
    assert all(error.device == wires[0].device for error in outcome.errors["doc"])
    costly = [a for a in wires[0].applied if a.kind in COSTLY]
    if story.retries == 0:  # a retry may get the right reply: then nothing is lost to see
        assert len(outcome.errors["doc"]) >= len(costly), (costly, outcome.errors["doc"])
