"""A meter concentrator: live records of its meters, a history ring, and its Modbus face.

``publish`` exposes one closed interval; the history keeps the last ``history_intervals`` of
them. Over Modbus, holding registers answer with the live state and input registers with the
interval selected by writing its end time to holding registers 10-11. Register updates happen in
one synchronous call on the event loop, so a read never sees half of an interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from substation_sim import register_map
from substation_sim.topology import MeterSet

READ_HOLDING = 3
READ_INPUT = 4
WRITE_SINGLE = 6
WRITE_MULTIPLE = 16
TIMEOUT_FAULT_SECONDS = (
    10.0  # an injected timeout holds the reply this long: past any sane poll timeout
)

# Decides, per request, whether to answer normally (None), with an exception, or not in time.
RequestFault = Callable[[], str | None]


class Concentrator:
    """One Modbus device: ``meters`` behind unit id ``unit_id``."""

    def __init__(
        self, *, name: str, meters: MeterSet, history_intervals: int, unit_id: int = 1
    ) -> None:
        """Create the device with no interval closed yet.

        Args:
            name: how the served record and the ground truth name this device.
            meters: the meters behind it (1 to ``register_map.MAX_METERS``).
            history_intervals: closed intervals kept readable through the input registers.
            unit_id: Modbus unit id it answers on (1-247).

        """
        if not 1 <= unit_id <= 247:  # noqa: PLR2004 - Modbus unit id range
            raise ValueError(f"unit_id must be 1..247, got {unit_id}")
        if not 1 <= len(meters) <= register_map.MAX_METERS:
            raise ValueError(f"meter count must be 1..{register_map.MAX_METERS}, got {len(meters)}")
        self.name = name
        self.meters = meters
        self.unit_id = unit_id
        self.depth = history_intervals
        n = len(meters)
        self.last_interval_end = 0
        self.selected = 0
        self.request_fault: RequestFault = lambda: None
        # The device's clock (registers 8-9) against the wall clock: a clock_skew fault sets it.
        self.clock_offset_seconds = 0.0
        self.faults_served = 0
        self._live = np.zeros(register_map.meter_address(n), dtype=np.uint16)
        self._live_list: list[int] = self._live.tolist()
        self._slot_end = np.zeros(self.depth, dtype=np.int64)  # reported interval end per slot
        self._ends = np.zeros((self.depth, n), dtype=np.int64)  # 0: the meter missed it
        self._energy = np.zeros((self.depth, n), dtype=np.int64)
        self._register = np.zeros((self.depth, n), dtype=np.int64)
        self._status = np.zeros((self.depth, n), dtype=np.uint16)
        self._slots = 0
        self._history_cache: tuple[int, list[int]] | None = None
        self._set_header()

    def _set_header(self) -> None:
        held = self._slot_end[: min(self._slots, self.depth)]
        header = register_map.header_registers(
            meter_count=len(self.meters),
            last_interval_end=self.last_interval_end,
            history_depth=self.depth,
            oldest_held=int(held.min()) if len(held) else 0,
        )
        self._live[: len(header)] = header
        self._live[register_map.SELECTOR_ADDRESS : register_map.SELECTOR_ADDRESS + 2] = [
            (self.selected >> 16) & 0xFFFF,
            self.selected & 0xFFFF,
        ]
        head = register_map.METER_TABLE_ADDRESS
        self._live_list[:head] = self._live[:head].tolist()

    def publish(
        self,
        *,
        interval_end: int,
        energy: np.ndarray,
        register: np.ndarray,
        status: np.ndarray,
        updated: np.ndarray,
    ) -> None:
        """Expose a closed interval: meters with ``updated`` False missed it (live record kept)."""
        slot = self._slots % self.depth
        self._slots += 1
        self._slot_end[slot] = interval_end
        self._ends[slot] = np.where(updated, interval_end, 0)
        self._energy[slot] = energy
        self._register[slot] = register
        self._status[slot] = status
        index = np.flatnonzero(updated)
        records = register_map.meter_records(
            serials=self.meters.serials[index],
            interval_ends=np.full(len(index), interval_end),
            energies=energy[index],
            registers=register[index],
            statuses=status[index],
        ).reshape(len(index), register_map.METER_RECORD_REGISTERS)
        table = self._live[register_map.METER_TABLE_ADDRESS :].reshape(
            -1, register_map.METER_RECORD_REGISTERS
        )
        table[index] = records
        self.last_interval_end = interval_end
        self._set_header()
        self._live_list = self._live.tolist()
        self._history_cache = None

    def _fill_clock(self, registers: list[int], shift: int, address: int, count: int) -> None:
        """Put the device clock, read now, where a read covers registers 8-9."""
        clock = register_map.DEVICE_CLOCK_ADDRESS
        if address < clock + 2 and address + count > clock:
            words = register_map.clock_registers(time.time() + self.clock_offset_seconds)
            for index, word in enumerate(words):
                if address <= clock + index < address + count:
                    registers[shift + clock + index] = word

    def history_registers(self, selected: int) -> list[int]:
        """Input registers answering for interval ``selected`` (empty records if not held)."""
        if self._history_cache and self._history_cache[0] == selected:
            return self._history_cache[1]
        held = np.flatnonzero(self._slot_end[: min(self._slots, self.depth)] == selected)
        n = len(self.meters)
        body = np.zeros(n * register_map.METER_RECORD_REGISTERS, dtype=np.uint16)
        status = register_map.HISTORY_NOT_HELD
        if selected and len(held):
            slot = int(held[-1])
            status = register_map.HISTORY_OK
            body = register_map.meter_records(
                serials=self.meters.serials,
                interval_ends=self._ends[slot],
                energies=self._energy[slot],
                registers=self._register[slot],
                statuses=self._status[slot],
            )
            missed = self._ends[slot] == 0
            body.reshape(n, -1)[missed] = 0  # a missed interval reads as an empty record
        words = np.zeros(register_map.METER_TABLE_ADDRESS + len(body), dtype=np.uint16)
        words[: register_map.HEADER_REGISTERS] = register_map.history_header_registers(
            meter_count=n, selected=selected, status=status
        )
        words[register_map.METER_TABLE_ADDRESS :] = body
        self._history_cache = (selected, words.tolist())
        return self._history_cache[1]

    def sim_device(self) -> SimDevice:
        """The pymodbus device; its registers are filled from ours on every access."""
        size = len(self._live)
        selector = register_map.SELECTOR_ADDRESS
        holding = [
            SimData(
                address=0, count=selector, values=0, datatype=DataType.REGISTERS, readonly=True
            ),
            SimData(address=selector, count=2, values=0, datatype=DataType.REGISTERS),
            SimData(
                address=selector + 2,
                count=size - selector - 2,
                values=0,
                datatype=DataType.REGISTERS,
                readonly=True,
            ),
        ]
        inputs = [
            SimData(address=0, count=size, values=0, datatype=DataType.REGISTERS, readonly=True)
        ]
        bits = [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id, simdata=(bits, list(bits), holding, inputs), action=self._on_access
        )

    async def _on_access(  # noqa: PLR0913, PLR0917 - signature fixed by pymodbus' SimAction
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Serve reads from our state, take selector writes, and inject request faults."""
        fault = self.request_fault()
        if fault is not None:
            self.faults_served += 1
            if fault == "timeout":
                await asyncio.sleep(TIMEOUT_FAULT_SECONDS)
            return ExcCodes.DEVICE_BUSY
        offset = address - start_address
        if function_code == READ_HOLDING:
            current_registers[offset : offset + count] = self._live_list[address : address + count]
            self._fill_clock(current_registers, offset - address, address, count)
        elif function_code == READ_INPUT:
            words = self.history_registers(self.selected)
            current_registers[offset : offset + count] = words[address : address + count]
        elif function_code in (WRITE_SINGLE, WRITE_MULTIPLE) and set_values is not None:
            words = self._live_list[:]
            words[address : address + len(set_values)] = [int(v) for v in set_values]
            selector = register_map.SELECTOR_ADDRESS
            self.selected = (words[selector] << 16) | words[selector + 1]
            self._set_header()
        return None
