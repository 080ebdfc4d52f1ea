"""The concentrator's Modbus register map, device side (docs/modbus-register-map.md).

All values are holding registers (function 0x03), big-endian: the high word first, and the high
byte first within each word, as Modbus specifies for 16-bit registers.
"""

from __future__ import annotations

REGISTER_MAP_VERSION = 1
HEADER_ADDRESS = 0
HEADER_REGISTERS = 8
METER_TABLE_ADDRESS = 100
METER_RECORD_REGISTERS = 16
# 65,536 addresses, minus the header area, in 16-register records: the most one unit id can hold.
MAX_METERS = (65_536 - METER_TABLE_ADDRESS) // METER_RECORD_REGISTERS
INTERVAL_SECONDS = 900


def _words(value: int, count: int) -> list[int]:
    """Split an unsigned integer into ``count`` 16-bit words, high word first."""
    return [(value >> (16 * (count - 1 - i))) & 0xFFFF for i in range(count)]


def header_registers(*, meter_count: int, last_interval_end: int) -> list[int]:
    """The 8 header registers: map version, meter count, last closed interval end, its length."""
    return [
        REGISTER_MAP_VERSION,
        meter_count,
        *_words(last_interval_end, 2),
        INTERVAL_SECONDS,
        0,
        0,
        0,
    ]


def meter_record(
    *, serial: int, interval_end: int, energy_wh: int, register_wh: int, status: int
) -> list[int]:
    """The 16 registers of one meter's record."""
    return [
        *_words(serial, 4),
        *_words(interval_end, 2),
        *_words(energy_wh, 2),
        *_words(register_wh, 4),
        status & 0xFFFF,
        0,
        0,
        0,
    ]


def meter_address(index: int) -> int:
    """First register address of the record of meter ``index`` (0-based)."""
    return METER_TABLE_ADDRESS + index * METER_RECORD_REGISTERS
