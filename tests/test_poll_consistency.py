"""The agent's polls against a concentrator written from the register map alone (hypothesis).

The device (``doc_concentrator``) may close intervals before any request of a poll: between the
header and the table, between two reads of one table, during a backfill, several at once, and
its meters may miss intervals. Whatever it does, every record it served is buffered exactly once
with its served values, and a reading is ESTIMATED only where the device did not hold the real
one any more (the meter missed the interval, or the history had dropped it). Nothing goes to
quarantine: the device served nothing wrong.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from device_checks import buffered, check_against_device, write_config
from doc_concentrator import FIRST_END, INTERVAL, DeviceModel, DocConcentrator, Served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.agent import EdgeAgent
from edge_agent.config import load_config
from edge_agent.errors import SourceError
from edge_agent.sources import register_map
from edge_agent.sources.modbus import ModbusConcentrator
from proto.quality import QualityFlag

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def device():
    served = DocConcentrator()
    yield served
    served.close()


async def poll_until_caught_up(config_path: Path, model: DeviceModel, polls: int) -> None:
    """``polls`` polls, then more until the schedule is spent and every interval delivered."""
    async with EdgeAgent(load_config(config_path)) as agent:
        source = agent.sources[0]
        for _ in range(polls):
            await agent.poll_once(source)
        for _ in range(200):  # a poll with nothing new is one request: 200 pass the schedule
            await agent.poll_once(source)
            if not model.schedule and source.last_interval_end == model.last_end:
                return
        pytest.fail(f"the agent never caught up: at {source.last_interval_end}")


def run_agent(
    agent_keys: Path, port: int, scenario: Callable[[Path], Awaitable[None]]
) -> tuple[list[tuple], list[str]]:
    """Run ``scenario(config path)`` with a fresh buffer; what it buffered and quarantined."""
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(write_config(Path(folder), agent_keys, [port])))
        return buffered(Path(folder) / "buffer.sqlite")


def caught_up(model: DeviceModel, polls: int) -> Callable[[Path], Awaitable[None]]:
    """The scenario: ``polls`` polls, then until every interval is delivered."""
    return lambda config: poll_until_caught_up(config, model, polls)


closes = st.tuples(
    st.integers(0, 60),  # before which request of the agent's
    st.integers(1, 3),  # how many intervals close at once
    st.frozensets(st.integers(0, 24), max_size=3),  # meters that miss them
)


@st.composite
def device_stories(draw: st.DrawFn) -> tuple[int, list, list, int]:
    """Meters, intervals closed before the agent starts, closes during its polls, polls."""
    return (
        draw(st.integers(1, 25)),
        draw(st.lists(st.frozensets(st.integers(0, 24), max_size=3), max_size=4)),
        draw(st.lists(closes, max_size=6)),
        draw(st.integers(1, 5)),
    )


@given(story=device_stories())
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_served_record_is_buffered_once_as_read(device, agent_keys, story):
    """Intervals closing at any point of any poll: no torn record, no needless estimate."""
    meters, late, schedule, polls = story
    model = DeviceModel(serials=[10_007 + 37 * i for i in range(meters)])
    for missing in late:  # closed before the agent starts: it catches up from the history
        model.close(missing)
    for request, count, missing in schedule:
        model.schedule.setdefault(request, []).append((count, missing))
    device.reset(model)
    rows, reasons = run_agent(agent_keys, device.port, caught_up(model, polls))
    assert reasons == []
    check_against_device(rows, model, agent_keys)


def test_a_record_straddling_two_reads_is_never_torn(device, agent_keys):
    """An interval closes between the two reads a record would span (old reads of 125)."""
    model = DeviceModel(serials=[2**40 + 65_535 * i for i in range(20)])  # meter 15: 340-355
    model.close()
    device.reset(model)
    # header, two table reads, then an interval closes: reads of 125 registers would cut
    # meter 15's register (342-345) at 350
    model.schedule[3] = [(1, frozenset())]
    rows, reasons = run_agent(agent_keys, device.port, caught_up(model, 1))
    assert reasons == []
    check_against_device(rows, model, agent_keys)


@given(
    records=st.lists(
        st.builds(
            Served,
            serial=st.integers(1, 2**64 - 1),
            interval_end=st.integers(1, 2**32 - 1),
            energy_wh=st.integers(-(2**31), 2**31 - 1),
            register_wh=st.integers(0, 2**63 - 1),
            status=st.integers(0, 0xFFFF),
        ),
        max_size=8,
    )
)
def test_decoder_reads_every_record_the_document_allows(records):
    """Any records encoded as the document lays them out decode to the same values."""
    words = [word for record in records for word in record.registers()]
    decoded = register_map.decode_meter_table(words, device="d")
    assert [(r.serial, r.interval_end, r.energy_wh, r.register_wh) for r in decoded] == [
        (r.serial, r.interval_end, r.energy_wh, r.register_wh) for r in records
    ]
    alarm = int(QualityFlag.DEVICE_ALARM)
    assert [r.quality_flags for r in decoded] == [alarm if r.status else 0 for r in records]


def test_one_garbage_record_is_quarantined_and_the_device_goes_on(device, agent_keys):
    """An all-ones register in one record: that record is quarantined, nothing else is lost."""
    model = DeviceModel(serials=[30_000 + i for i in range(10)])
    model.close()
    bad_end = FIRST_END + INTERVAL
    model.corrupt[(30_003, bad_end)] = Served(30_003, bad_end, 100, 2**64 - 1)
    model.close()
    model.close()
    device.reset(model)
    rows, reasons = run_agent(agent_keys, device.port, caught_up(model, 1))
    assert len(reasons) == 1
    assert "is not a reading" in reasons[0]
    model.served = [s for s in model.served if s.register_wh < 2**63]
    check_against_device(rows, model, agent_keys)
    assert len(rows) == 3 * 10 - 1


def glitch_at(end: int) -> dict[int, int]:
    """Header registers 2-3 (last interval end) answering ``end``."""
    return {2: end >> 16, 3: end & 0xFFFF}


def a_day_ahead_of_the_gateway() -> int:
    return int(time.time()) // INTERVAL * INTERVAL + 86_400


def five_meters(device: DocConcentrator, first_serial: int, closed: int) -> DeviceModel:
    """A device of five meters with ``closed`` intervals closed, served from now on."""
    model = DeviceModel(serials=[first_serial + i for i in range(5)])
    for _ in range(closed):
        model.close()
    device.reset(model)
    return model


Steps = Callable[[EdgeAgent, ModbusConcentrator], Awaitable[None]]


def after_a_first_poll(steps: Steps) -> Callable[[Path], Awaitable[None]]:
    """The scenario: the agent polls its device once, then ``steps(agent, source)``."""

    async def scenario(config_path: Path) -> None:
        async with EdgeAgent(load_config(config_path)) as agent:
            source = agent.sources[0]
            await agent.poll_once(source)
            await steps(agent, source)

    return scenario


def test_one_glitched_header_read_moves_nothing(device, agent_keys, caplog):
    """A header read a day ahead once (a clock glitch): the poll reads on, nothing is lost."""
    model = five_meters(device, 40_000, closed=1)

    async def steps(agent: EdgeAgent, source: ModbusConcentrator) -> None:
        model.close()
        model.close()
        model.glitches[model.requests] = glitch_at(model.last_end + 86_400)
        assert await agent.poll_once(source) == 10
        assert source.last_interval_end == model.last_end
        assert source.lost_intervals == 0

    rows, reasons = run_agent(agent_keys, device.port, after_a_first_poll(steps))
    assert reasons == []
    check_against_device(rows, model, agent_keys)
    assert len(rows) == 15
    assert "history" not in caplog.text


@pytest.mark.parametrize(
    ("glitch", "reads", "says"),
    [
        (lambda: glitch_at(a_day_ahead_of_the_gateway()), 2, "ahead of the gateway clock"),
        (lambda: {6: 0xFFFF, 7: 0}, 1, "registers 6-7 (oldest held)"),
    ],
)
def test_an_implausible_header_is_refused_and_moves_nothing(
    device, agent_keys, glitch, reads, says
):
    """Headers ahead of the gateway's clock, or with a garbage history: refused, named."""
    model = five_meters(device, 40_000, closed=1)

    async def steps(agent: EdgeAgent, source: ModbusConcentrator) -> None:
        model.close()
        for read in range(reads):  # a jump is read twice: both reads say it
            model.glitches[model.requests + read] = glitch()
        with pytest.raises(SourceError, match=re.escape(says)):
            await agent.poll_once(source)
        assert source.last_interval_end == FIRST_END
        assert await agent.poll_once(source) == 5
        assert source.last_interval_end == model.last_end

    rows, _ = run_agent(agent_keys, device.port, after_a_first_poll(steps))
    assert len(rows) == 10


def test_a_header_going_back_reads_nothing_again(device, agent_keys, caplog):
    """A device clock stepping back is an alarm; nothing is read twice, nothing is skipped."""
    model = five_meters(device, 50_000, closed=3)

    async def steps(agent: EdgeAgent, source: ModbusConcentrator) -> None:
        model.glitches[model.requests] = glitch_at(FIRST_END + INTERVAL)
        assert await agent.poll_once(source) == 0
        model.close()
        assert await agent.poll_once(source) == 5

    rows, _ = run_agent(agent_keys, device.port, after_a_first_poll(steps))
    assert "went back" in caplog.text
    assert len(rows) == 20


def test_garbage_replies_to_table_reads_store_nothing_that_was_not_served(device, agent_keys):
    """Noise in place of a table read: read again, and only what was served is stored."""
    model = DeviceModel(serials=[60_000 + i for i in range(40)])
    for _ in range(3):
        model.close()
    model.garbage = {0, 3, 7, 12, 16}  # 40 meters: 6 table reads an interval, and re-reads
    device.reset(model)
    rows, reasons = run_agent(agent_keys, device.port, caught_up(model, 1))
    assert reasons == []
    check_against_device(rows, model, agent_keys)
    assert len(rows) == 3 * 40
