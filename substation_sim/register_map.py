"""The concentrator's Modbus register map, device side (docs/modbus-register-map.md).

Holding registers (0x03) hold the live state: header at 0-7, the history selector at 10-11, meter
records from 100. Input registers (0x04) answer for the interval the selector names: a history
header at 0-7 and the same meter records from 100. Big-endian: high word first, and the high
byte first within each word, as Modbus specifies for 16-bit registers.
"""

from __future__ import annotations

import numpy as np

REGISTER_MAP_VERSION = 1
HEADER_ADDRESS = 0
HEADER_REGISTERS = 8
DEVICE_CLOCK_ADDRESS = 8  # u32: the device's clock now, Unix seconds (filled as each read asks)
SELECTOR_ADDRESS = 10  # u32: interval end the history (input registers) should answer for
SELECTOR_REGISTERS = 2
METER_TABLE_ADDRESS = 100
METER_RECORD_REGISTERS = 16
# 65,536 addresses, minus the header area, in 16-register records: the most one unit id can hold.
MAX_METERS = (65_536 - METER_TABLE_ADDRESS) // METER_RECORD_REGISTERS
INTERVAL_SECONDS = 900
HISTORY_OK = 0
HISTORY_NOT_HELD = 1  # the selected interval is not (or no longer) in the history


def _words(value: int, count: int) -> list[int]:
    """Split an unsigned integer into ``count`` 16-bit words, high word first."""
    return [(value >> (16 * (count - 1 - i))) & 0xFFFF for i in range(count)]


def header_registers(
    *, meter_count: int, last_interval_end: int, history_depth: int, oldest_held: int
) -> list[int]:
    """Live header: version, meter count, last interval end, its length, history depth, oldest."""
    return [
        REGISTER_MAP_VERSION,
        meter_count,
        *_words(last_interval_end, 2),
        INTERVAL_SECONDS,
        history_depth,
        *_words(oldest_held, 2),
    ]


def clock_registers(now: float) -> list[int]:
    """Registers 8-9: the device clock, whole Unix seconds, high word first."""
    return _words(int(now), 2)


def history_header_registers(*, meter_count: int, selected: int, status: int) -> list[int]:
    """History header: map version, meter count, the selected interval end, its length, status."""
    return [
        REGISTER_MAP_VERSION,
        meter_count,
        *_words(selected, 2),
        INTERVAL_SECONDS,
        status,
        0,
        0,
    ]


def meter_records(
    *,
    serials: np.ndarray,
    interval_ends: np.ndarray,
    energies: np.ndarray,
    registers: np.ndarray,
    statuses: np.ndarray,
) -> np.ndarray:
    """16-register records of many meters at once, as one flat uint16 array.

    Energy is a signed 32-bit value (two's complement); everything else is unsigned.
    """
    n = len(serials)
    out = np.zeros((n, METER_RECORD_REGISTERS), dtype=np.uint16)
    serial = serials.astype(np.uint64)
    register = registers.astype(np.int64).astype(np.uint64)
    end = interval_ends.astype(np.int64).astype(np.uint64)
    energy = energies.astype(np.int64).astype(np.uint64) & np.uint64(0xFFFFFFFF)
    for word in range(4):
        shift = np.uint64(16 * (3 - word))
        out[:, word] = (serial >> shift) & np.uint64(0xFFFF)
        out[:, 8 + word] = (register >> shift) & np.uint64(0xFFFF)
    for word in range(2):
        shift = np.uint64(16 * (1 - word))
        out[:, 4 + word] = (end >> shift) & np.uint64(0xFFFF)
        out[:, 6 + word] = (energy >> shift) & np.uint64(0xFFFF)
    out[:, 12] = statuses.astype(np.uint16)
    return out.reshape(-1)


def meter_address(index: int) -> int:
    """First register address of the record of meter ``index`` (0-based)."""
    return METER_TABLE_ADDRESS + index * METER_RECORD_REGISTERS
