"""The agent's Modbus source against the simulator over real Modbus TCP."""

from __future__ import annotations

import asyncio
import time

import pytest
from pgcluster import free_loopback_port

from edge_agent.config import ModbusSourceConfig
from edge_agent.errors import SourceError
from edge_agent.sources.modbus import ModbusConcentrator

pytestmark = pytest.mark.integration


def source_for(
    port: int, *, timeout: float = 2.0, delivered_up_to: int = 0, backfill: bool = True
) -> ModbusConcentrator:
    return ModbusConcentrator(
        ModbusSourceConfig(
            name="c",
            host="127.0.0.1",
            port=port,
            unit_id=1,
            poll_interval_seconds=1,
            timeout_seconds=timeout,
            retries=0,
            word_order="high_first",
            byte_order="big",
            backfill=backfill,
            failure_threshold=3,
            breaker_reset_seconds=1,
        ),
        delivered_up_to=delivered_up_to,
    )


def poll(source: ModbusConcentrator, *, deliver: bool = True) -> list:
    """One poll's intervals, each confirmed as delivered unless told otherwise.

    Each call runs in its own event loop, so the connection is closed at the end of it.
    """

    async def run() -> list:
        polls = []
        try:
            async for item in source.poll():
                polls.append(item)
                if deliver:
                    source.delivered(item)
        finally:
            source.close()
        return polls

    return asyncio.run(run())


def test_poll_reads_every_meter_in_block_reads(simulator):
    """1,000 meters come back in 143 reads of whole records, between header reads.

    The first header is read twice (a first contact jumps ahead of an empty cursor: one read
    alone is not trusted), and once after the table, to see whether an interval closed.
    """
    sim = simulator(meters=1_000)
    end = sim.close_interval()
    source = source_for(sim.port)
    try:
        (only,) = poll(source)
    finally:
        source.close()
    assert only.interval_end == end
    assert source.reads == 2 + 143 + 1  # 16,000 registers in reads of 7 records (112)
    assert len(only.records) == 1_000
    served = {r.serial: r.energy_wh for r in sim.served()}
    assert {r.serial: r.energy_wh for r in only.records} == served


def test_poll_without_a_new_interval_reads_only_the_header(simulator):
    """After a delivered interval a poll costs one 8-register read and returns nothing."""
    sim = simulator(meters=50)
    sim.close_interval()
    source = source_for(sim.port)
    try:
        poll(source)
        before = source.reads
        assert poll(source) == []
        assert source.reads - before == 1
    finally:
        source.close()


def test_undelivered_poll_is_read_again(simulator):
    """Until the agent confirms the commit, the next poll reads the table again."""
    sim = simulator(meters=50)
    sim.close_interval()
    source = source_for(sim.port)
    try:
        poll(source, deliver=False)
        (again,) = poll(source)
    finally:
        source.close()
    assert len(again.records) == 50


def test_missed_intervals_are_read_back_from_history_oldest_first(simulator):
    """An agent back after five intervals reads four from the history, then the live one."""
    sim = simulator(meters=100)
    first = sim.close_interval()
    ends = [sim.close_interval() for _ in range(5)]
    source = source_for(sim.port, delivered_up_to=first)
    try:
        polls = poll(source)
    finally:
        source.close()
    assert [p.interval_end for p in polls] == ends
    assert [p.from_history for p in polls] == [True] * 4 + [False]
    served = {(r.serial, r.interval_end): (r.energy_wh, r.register_wh) for r in sim.served()}
    read = {
        (r.serial, r.interval_end): (r.energy_wh, r.register_wh) for p in polls for r in p.records
    }
    assert read == {k: v for k, v in served.items() if k[1] > first}


def test_gap_older_than_the_history_is_counted_as_lost(simulator):
    """Intervals the history no longer holds are reported lost, the rest read back."""
    sim = simulator(meters=10)
    first = sim.close_interval()
    for _ in range(100):
        sim.close_interval()  # the history holds the last 96
    source = source_for(sim.port, delivered_up_to=first)
    try:
        polls = poll(source)
    finally:
        source.close()
    assert len(polls) == 96
    assert source.lost_intervals == 4


def test_unreachable_device_fails_fast_naming_it():
    """Nothing listening: a SourceError naming the device, well within the timeout."""
    port = free_loopback_port()
    source = source_for(port, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        poll(source)
    source.close()
    assert caught.value.device == f"modbus://127.0.0.1:{port}/1"
    assert time.monotonic() - started < 5


def test_exception_reply_is_a_source_error(simulator):
    """Reading past the device's registers gets a Modbus exception reply, reported as such."""
    sim = simulator(meters=1)
    source = source_for(sim.port)

    async def read_past_the_end():
        try:
            await source._read(60_000, 10)
        finally:
            source.close()

    try:
        with pytest.raises(SourceError, match="exception reply"):
            asyncio.run(read_past_the_end())
    finally:
        source.close()
