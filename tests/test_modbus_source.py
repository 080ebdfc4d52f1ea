"""The agent's Modbus source against the simulator over real Modbus TCP."""

from __future__ import annotations

import asyncio
import time

import pytest

from core_ingest.pgcluster import free_loopback_port
from edge_agent.config import ModbusSourceConfig
from edge_agent.errors import SourceError
from edge_agent.sources.modbus import ModbusConcentrator

pytestmark = pytest.mark.integration


def source_for(port: int, *, unit_id: int = 1, timeout: float = 2.0) -> ModbusConcentrator:
    return ModbusConcentrator(
        ModbusSourceConfig(
            name="c",
            host="127.0.0.1",
            port=port,
            unit_id=unit_id,
            poll_interval_seconds=1,
            timeout_seconds=timeout,
        )
    )


def test_poll_reads_every_meter_in_block_reads(simulator):
    """1,000 meters come back in 1 header read + 128 block reads, values as served."""
    sim = simulator(meters=1_000)
    end = sim.close_interval()

    async def poll():
        source = source_for(sim.port)
        try:
            return await source.poll(), source.reads
        finally:
            source.close()

    poll, reads = asyncio.run(poll())
    records = poll.records
    assert poll.interval_end == end
    assert reads == 1 + 128  # 16,000 registers in reads of 125
    assert len(records) == 1_000
    assert {r.interval_end for r in records} == {end}
    served = {r.serial: r.energy_wh for r in sim.served()}
    assert {r.serial: r.energy_wh for r in records} == served


def test_poll_without_a_new_interval_reads_only_the_header(simulator):
    """After a delivered interval a poll costs one 8-register read and returns nothing."""
    sim = simulator(meters=50)
    sim.close_interval()

    async def poll_twice():
        source = source_for(sim.port)
        try:
            source.delivered(await source.poll())
            before = source.reads
            again = await source.poll()
            return again.records, source.reads - before
        finally:
            source.close()

    records, reads = asyncio.run(poll_twice())
    assert (records, reads) == ([], 1)


def test_undelivered_poll_is_read_again(simulator):
    """Until the agent confirms the commit, the next poll reads the table again."""
    sim = simulator(meters=50)
    sim.close_interval()

    async def poll_twice():
        source = source_for(sim.port)
        try:
            await source.poll()
            return (await source.poll()).records
        finally:
            source.close()

    assert len(asyncio.run(poll_twice())) == 50


def test_unreachable_device_fails_fast_naming_it():
    """Nothing listening: a SourceError naming the device, well within the timeout."""
    port = free_loopback_port()

    async def poll():
        source = source_for(port, timeout=1.0)
        try:
            await source.poll()
        finally:
            source.close()

    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        asyncio.run(poll())
    assert caught.value.device == f"modbus://127.0.0.1:{port}/1"
    assert time.monotonic() - started < 5


def test_exception_reply_is_a_source_error(simulator):
    """Reading past the device's registers gets a Modbus exception reply, reported as such."""
    sim = simulator(meters=1)

    async def read_past_the_end():
        source = source_for(sim.port)
        try:
            await source._read(60_000, 10)
        finally:
            source.close()

    with pytest.raises(SourceError, match="exception reply"):
        asyncio.run(read_past_the_end())
