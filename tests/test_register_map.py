"""The register map: the simulator encodes, the agent decodes; bad replies name the register."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edge_agent.errors import MalformedReply
from edge_agent.sources import register_map as client
from substation_sim import register_map as device


def record(*, serial=1, interval_end=900, energy=1, register=1, status=0) -> list[int]:
    return device.meter_records(
        serials=np.array([serial]),
        interval_ends=np.array([interval_end]),
        energies=np.array([energy]),
        registers=np.array([register]),
        statuses=np.array([status]),
    ).tolist()


def test_header_roundtrip():
    """The agent reads back count, last interval, history depth and oldest held interval."""
    words = device.header_registers(
        meter_count=1_234,
        last_interval_end=1_790_000_100,
        history_depth=96,
        oldest_held=1_789_914_600,
    )
    header = client.decode_header(words, device="d")
    assert (header.meter_count, header.last_interval_end) == (1_234, 1_790_000_100)
    assert (header.history_depth, header.oldest_held) == (96, 1_789_914_600)


def test_low_word_first_and_little_endian_devices_decode_the_same_values():
    """A device with the other word order (or byte order) decodes once the order is set."""
    words = record(serial=9_876_543_210, interval_end=1_790_000_100, energy=-1234, register=77)
    low_first = list(words)
    for first, size in ((0, 4), (4, 2), (6, 2), (8, 4)):
        low_first[first : first + size] = words[first : first + size][::-1]
    (decoded,) = client.decode_meter_table(low_first, device="d", word_order="low_first")
    assert (decoded.serial, decoded.interval_end, decoded.energy_wh, decoded.register_wh) == (
        9_876_543_210,
        1_790_000_100,
        -1234,
        77,
    )
    swapped = client.swap_bytes(words, "little")
    assert swapped != words
    assert client.swap_bytes(swapped, "little") == words
    assert client.encode_u32(1_790_000_100, "low_first") == [
        1_790_000_100 & 0xFFFF,
        1_790_000_100 >> 16,
    ]


def test_meter_record_roundtrip_with_large_and_negative_values():
    """Serial (64-bit), signed energy (32-bit) and register (64-bit) survive the word order."""
    for energy in (4_000, -4_000, 2**31 - 1, -(2**31)):
        words = record(
            serial=9_876_543_210_123, interval_end=1_790_000_100, energy=energy, register=2**60 + 5
        )
        (decoded,) = client.decode_meter_table(words, device="d")
        assert (decoded.serial, decoded.energy_wh, decoded.register_wh) == (
            9_876_543_210_123,
            energy,
            2**60 + 5,
        )


def test_meter_status_becomes_a_device_alarm_flag():
    """A non-zero status word is carried as the DEVICE_ALARM quality flag."""
    (decoded,) = client.decode_meter_table(record(status=4), device="d")
    assert decoded.quality_flags == 1


def test_meter_without_a_closed_interval_is_skipped():
    """All-zero records (no interval closed yet, or missed in the history) yield no reading."""
    assert client.decode_meter_table([0] * 32, device="d") == []


def test_time_off_the_grid_is_read_as_reported():
    """A drifting concentrator clock is data for validation, not a malformed reply."""
    (decoded,) = client.decode_meter_table(record(interval_end=1_000), device="d")
    assert decoded.interval_end == 1_000
    words = device.header_registers(
        meter_count=1, last_interval_end=935, history_depth=96, oldest_held=35
    )
    assert client.decode_header(words, device="d").last_interval_end == 935


def test_the_agent_and_the_device_agree_on_the_layout():
    """Addresses and sizes used by both sides are the same numbers."""
    assert client.METER_TABLE_ADDRESS == device.METER_TABLE_ADDRESS
    assert client.METER_RECORD_REGISTERS == device.METER_RECORD_REGISTERS
    assert client.REGISTER_MAP_VERSION == device.REGISTER_MAP_VERSION
    assert client.MAX_METERS == device.MAX_METERS
    assert device.meter_address(2) == client.METER_TABLE_ADDRESS + 2 * client.METER_RECORD_REGISTERS


@pytest.mark.parametrize(
    ("words", "names"),
    [
        ([2, 1, 0, 900, 900, 96, 0, 0], "register 0 (map version) is 2"),
        ([1, 0, 0, 900, 900, 96, 0, 0], "register 1 (meter count) is 0"),
        ([1, 5000, 0, 900, 900, 96, 0, 0], "register 1 (meter count) is 5000"),
        ([1, 1, 0, 900, 60, 96, 0, 0], "register 4 (interval length) is 60"),
        ([1, 1, 0], "header has 3 registers"),
    ],
)
def test_malformed_header_names_the_register(words, names):
    """A header the map does not allow raises MalformedReply naming device and register."""
    with pytest.raises(MalformedReply, match=re.escape(names)) as caught:
        client.decode_header(words, device="modbus://h:502/1")
    assert caught.value.device == "modbus://h:502/1"


def test_not_available_register_is_decoded_as_it_stands():
    """An all-ones register is decoded, not raised: validation quarantines that one record."""
    words = [0] * 16 + record(register=2**64 - 1)
    (decoded,) = client.decode_meter_table(words, device="d")
    assert decoded.register_wh == 2**64 - 1


def test_partial_record_is_malformed():
    """A table that is not whole 16-register records is refused."""
    with pytest.raises(MalformedReply, match="not whole records"):
        client.decode_meter_table([0] * 17, device="d")


@pytest.mark.parametrize("meters", [1, 7, 8, 14, 1_000, 4_089])
def test_record_reads_tile_the_table_in_whole_records_of_at_most_125(meters):
    """Reads tile the table exactly, each whole records only and within the Modbus limit."""
    reads = client.record_reads(meters)
    assert all(1 <= n <= 125 and n % 16 == 0 and (address - 100) % 16 == 0 for address, n in reads)
    covered = [a for address, n in reads for a in range(address, address + n)]
    assert covered == list(range(100, 100 + 16 * meters))
    assert len(reads) == -(-meters // 7)
