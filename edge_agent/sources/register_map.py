"""Decode a concentrator's registers as docs/modbus-register-map.md lays them out (client side).

Pure functions over lists of 16-bit words, so the decoding is tested without a device. Anything
the map does not allow raises ``MalformedReply`` naming the device and the offending address.
Devices differ in how they order a value's words (``high_first``, the Modbus convention, or
``low_first``) and, rarely, the bytes within a word (``big`` or ``little``): both per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from edge_agent.errors import MalformedReply
from proto import limits
from proto.quality import QualityFlag

DEVICE_ALARM = int(QualityFlag.DEVICE_ALARM)  # a plain int: flags are OR-ed per reading

REGISTER_MAP_VERSION = 1
HEADER_ADDRESS = 0
HEADER_REGISTERS = 8
DEVICE_CLOCK_ADDRESS = 8  # u32: the concentrator's clock now, Unix seconds; 0: not reported
HEADER_READ_REGISTERS = 10  # the header and the device clock, in one read
SELECTOR_ADDRESS = 10  # u32, writable: the interval the history (input registers) answers for
HISTORY_HELD = 0
METER_TABLE_ADDRESS = 100
METER_RECORD_REGISTERS = 16
MAX_METERS = (65_536 - METER_TABLE_ADDRESS) // METER_RECORD_REGISTERS
INTERVAL_SECONDS = 900
MAX_REGISTERS_PER_READ = 125  # Modbus limit for function 0x03 (a 256-byte PDU)
RECORDS_PER_READ = MAX_REGISTERS_PER_READ // METER_RECORD_REGISTERS  # 7 whole records


@dataclass(frozen=True, slots=True)
class ConcentratorHeader:
    """What the header block says: how many meters, and the newest closed interval."""

    meter_count: int
    last_interval_end: int
    history_depth: int
    oldest_held: int  # oldest interval end the history holds, 0 when empty


class MeterRecord(NamedTuple):
    """One meter's record with the serial still in clear: never written to disk as such.

    A named tuple, like the other per-reading records: built once per meter per poll, and a
    frozen dataclass costs four times as much to build.
    """

    serial: int
    interval_end: int
    energy_wh: int
    register_wh: int
    quality_flags: int


@dataclass(frozen=True, slots=True)
class HistoryHeader:
    """The history area's header: which interval it answers for, and whether it holds it."""

    selected: int
    held: bool


def _unsigned(words: list[int], word_order: str = "high_first") -> int:
    value = 0
    for word in words if word_order == "high_first" else reversed(words):
        value = (value << 16) | word
    return value


def encode_u32(value: int, word_order: str) -> list[int]:
    """Two registers holding ``value`` in the device's word order."""
    words = [(value >> 16) & 0xFFFF, value & 0xFFFF]
    return words if word_order == "high_first" else words[::-1]


def swap_bytes(words: list[int], byte_order: str) -> list[int]:
    """Registers as the map reads them: bytes swapped within each word for ``little`` devices."""
    if byte_order == "big":
        return list(words)
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


def decode_header(
    words: list[int], *, device: str, word_order: str = "high_first"
) -> ConcentratorHeader:
    """Decode the 8 header registers at address 0.

    The interval end is taken as the device reports it, even off the 15-minute grid: a
    concentrator with a drifting clock is flagged by validation, not silenced here.
    """
    if len(words) != HEADER_REGISTERS:
        raise MalformedReply(device, f"header has {len(words)} registers, expected 8")
    version, meter_count = words[0], words[1]
    if version != REGISTER_MAP_VERSION:
        raise MalformedReply(
            device, f"register 0 (map version) is {version}, this agent reads version 1"
        )
    if not 1 <= meter_count <= MAX_METERS:
        raise MalformedReply(
            device, f"register 1 (meter count) is {meter_count}, not 1..{MAX_METERS}"
        )
    if words[4] != INTERVAL_SECONDS:
        raise MalformedReply(device, f"register 4 (interval length) is {words[4]}, expected 900")
    return ConcentratorHeader(
        meter_count=meter_count,
        last_interval_end=_unsigned(words[2:4], word_order),
        history_depth=words[5],
        oldest_held=_unsigned(words[6:8], word_order),
    )


def decode_clock(words: list[int], word_order: str = "high_first") -> int | None:
    """The device clock of registers 8-9, Unix seconds; None when the device reports none (0)."""
    return _unsigned(words, word_order) or None


def decode_history_header(
    words: list[int], *, device: str, word_order: str = "high_first"
) -> HistoryHeader:
    """Decode the 8 history-header input registers."""
    if len(words) != HEADER_REGISTERS or words[0] != REGISTER_MAP_VERSION:
        raise MalformedReply(device, f"history header {words} is not map version 1")
    return HistoryHeader(selected=_unsigned(words[2:4], word_order), held=words[5] == HISTORY_HELD)


def decode_meter_table(
    words: list[int],
    *,
    device: str,
    word_order: str = "high_first",
) -> list[MeterRecord]:
    """Decode consecutive 16-register meter records.

    A record whose interval end is 0 belongs to a meter with no closed interval (or, in the
    history, one that missed the interval) and is skipped. Values are decoded as they stand,
    even ones no reading can hold (a register of all ones): judging a record is validation's
    job, which quarantines that one record, so one garbage record never costs a whole read.
    """
    if len(words) % METER_RECORD_REGISTERS:
        raise MalformedReply(device, f"meter table of {len(words)} registers is not whole records")
    records = []
    for start in range(0, len(words), METER_RECORD_REGISTERS):
        record = words[start : start + METER_RECORD_REGISTERS]
        interval_end = _unsigned(record[4:6], word_order)
        if interval_end == 0:
            continue
        register_wh = _unsigned(record[8:12], word_order)
        energy_wh = _unsigned(record[6:8], word_order)
        records.append(
            MeterRecord(
                serial=_unsigned(record[0:4], word_order),
                interval_end=interval_end,
                energy_wh=energy_wh - (1 << 32) if energy_wh >= 1 << 31 else energy_wh,
                register_wh=register_wh,
                quality_flags=DEVICE_ALARM if record[12] else 0,
            )
        )
    return records


def implausible(record: MeterRecord, latest: int) -> bool:
    """Whether no device state explains ``record`` (a garbage reply, most likely).

    Its interval ends after ``latest``, the interval it was read for (clocks drift, by less
    than half an interval), or it holds a value no reading can hold.
    """
    return (
        not limits.EARLIEST_INTERVAL_END_S <= record.interval_end <= latest + INTERVAL_SECONDS // 2
        or abs(record.energy_wh) > limits.MAX_INTERVAL_ENERGY_WH
        or record.register_wh > limits.MAX_REGISTER_WH
    )


def record_reads(meter_count: int) -> list[tuple[int, int]]:
    """The meter table as (address, count) reads of whole records, at most 125 registers each.

    7 records (112 registers) a read: a record never straddles two reads, so an interval that
    closes between two reads cannot tear one meter's record across two intervals.
    """
    end = METER_TABLE_ADDRESS + meter_count * METER_RECORD_REGISTERS
    step = RECORDS_PER_READ * METER_RECORD_REGISTERS
    return [
        (address, min(step, end - address)) for address in range(METER_TABLE_ADDRESS, end, step)
    ]
