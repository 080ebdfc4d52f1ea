"""The register map: the simulator encodes, the agent decodes; bad replies name the register."""

from __future__ import annotations

import re

import pytest

from edge_agent.errors import MalformedReply
from edge_agent.sources import register_map as client
from substation_sim import register_map as device


def test_header_roundtrip():
    """The agent reads back the meter count and the last interval end the device wrote."""
    words = device.header_registers(meter_count=1_234, last_interval_end=1_790_000_100)
    header = client.decode_header(words, device="d")
    assert header.meter_count == 1_234
    assert header.last_interval_end == 1_790_000_100


def test_meter_record_roundtrip_with_large_values():
    """Serial (64-bit), energy (32-bit) and register (64-bit) survive the word order."""
    words = device.meter_record(
        serial=9_876_543_210_123,
        interval_end=1_790_000_100,
        energy_wh=4_000_000_000,
        register_wh=2**60 + 5,
        status=0,
    )
    (record,) = client.decode_meter_table(words, device="d")
    assert record.serial == 9_876_543_210_123
    assert record.energy_wh == 4_000_000_000
    assert record.register_wh == 2**60 + 5
    assert record.quality_flags == 0


def test_meter_status_becomes_a_device_alarm_flag():
    """A non-zero status word is carried as the DEVICE_ALARM quality flag."""
    words = device.meter_record(serial=1, interval_end=900, energy_wh=1, register_wh=1, status=4)
    (record,) = client.decode_meter_table(words, device="d")
    assert record.quality_flags == 1


def test_meter_without_a_closed_interval_is_skipped():
    """All-zero records (no interval closed yet) yield no reading."""
    assert client.decode_meter_table([0] * 32, device="d") == []


def test_the_agent_and_the_device_agree_on_the_layout():
    """Addresses and sizes used by both sides are the same numbers."""
    assert client.METER_TABLE_ADDRESS == device.METER_TABLE_ADDRESS
    assert client.METER_RECORD_REGISTERS == device.METER_RECORD_REGISTERS
    assert client.REGISTER_MAP_VERSION == device.REGISTER_MAP_VERSION
    assert device.meter_address(2) == client.METER_TABLE_ADDRESS + 2 * client.METER_RECORD_REGISTERS


@pytest.mark.parametrize(
    ("words", "names"),
    [
        ([2, 1, 0, 900, 900, 0, 0, 0], "register 0 (map version) is 2"),
        ([1, 1, 0, 901, 900, 0, 0, 0], "registers 2-3 (last interval end) 901"),
        ([1, 1, 0, 900, 60, 0, 0, 0], "register 4 (interval length) is 60"),
        ([1, 1, 0], "header has 3 registers"),
    ],
)
def test_malformed_header_names_the_register(words, names):
    """A header the map does not allow raises MalformedReply naming device and register."""
    with pytest.raises(MalformedReply, match=re.escape(names)) as caught:
        client.decode_header(words, device="modbus://h:502/1")
    assert caught.value.device == "modbus://h:502/1"


def test_off_grid_interval_in_a_record_names_its_address():
    """A record's interval end off the 15-minute grid names the register address."""
    words = [0] * 16 + device.meter_record(
        serial=1, interval_end=1_000, energy_wh=1, register_wh=1, status=0
    )
    with pytest.raises(MalformedReply, match="register 120 "):
        client.decode_meter_table(words, device="d")


def test_partial_record_is_malformed():
    """A table that is not whole 16-register records is refused."""
    with pytest.raises(MalformedReply, match="not whole records"):
        client.decode_meter_table([0] * 17, device="d")


@pytest.mark.parametrize("count", [1, 124, 125, 126, 250, 16_000])
def test_block_reads_cover_the_range_in_reads_of_at_most_125(count):
    """Reads tile the range exactly, none larger than the Modbus limit of 125 registers."""
    reads = client.block_reads(100, count)
    assert all(1 <= n <= 125 for _, n in reads)
    covered = [a for address, n in reads for a in range(address, address + n)]
    assert covered == list(range(100, 100 + count))
    assert len(reads) == -(-count // 125)
