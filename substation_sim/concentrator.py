"""A meter concentrator: N meters behind one Modbus unit id, closing 15-minute intervals."""

from __future__ import annotations

from pymodbus.simulator import DataType, SimData, SimDevice

from substation_sim import profiles, register_map
from substation_sim.served import ServedReading

READ_HOLDING_REGISTERS = 3
SERIAL_BASE = 4_000_000_000  # meter serials are 10-digit numbers, unique per (unit, index)


class Concentrator:
    """Holds the meters' registers and serves them; ``close_interval`` advances one interval.

    Register updates happen in one synchronous call on the event loop, so a Modbus read never
    sees half of an interval's values: a record is always one meter's consistent state.
    """

    def __init__(self, *, unit_id: int, meter_count: int, seed: int, device: str) -> None:
        """Create ``meter_count`` meters with zeroed registers.

        Args:
            unit_id: Modbus unit id this concentrator answers on (1-247).
            meter_count: meters behind it, 1 to ``register_map.MAX_METERS``.
            seed: makes serials, household sizes and noise repeatable.
            device: the name the served record uses for this concentrator.

        """
        if not 1 <= unit_id <= 247:  # noqa: PLR2004 - Modbus unit id range
            raise ValueError(f"unit_id must be 1..247, got {unit_id}")
        if not 1 <= meter_count <= register_map.MAX_METERS:
            raise ValueError(f"meter_count must be 1..{register_map.MAX_METERS}, got {meter_count}")
        self.unit_id = unit_id
        self.device = device
        self.seed = seed
        self.serials = [SERIAL_BASE + unit_id * 100_000 + i for i in range(meter_count)]
        self.registers_wh = [0] * meter_count
        self.last_interval_end = 0
        size = register_map.meter_address(meter_count)
        self._registers = [0] * size
        self._write(register_map.HEADER_ADDRESS, self._header())

    def _header(self) -> list[int]:
        return register_map.header_registers(
            meter_count=len(self.serials), last_interval_end=self.last_interval_end
        )

    def _write(self, address: int, words: list[int]) -> None:
        self._registers[address : address + len(words)] = words

    def close_interval(self, interval_end: int) -> list[ServedReading]:
        """Close the interval ending at ``interval_end`` (Unix seconds) and expose its readings."""
        if interval_end % register_map.INTERVAL_SECONDS:
            raise ValueError(f"interval_end {interval_end} is not on a 15-minute boundary")
        if interval_end <= self.last_interval_end:
            raise ValueError(f"interval_end {interval_end} does not advance the clock")
        served = []
        for index, serial in enumerate(self.serials):
            energy = profiles.interval_energy_wh(
                seed=self.seed,
                serial=serial,
                interval_end=interval_end,
                interval_seconds=register_map.INTERVAL_SECONDS,
            )
            self.registers_wh[index] += energy
            record = register_map.meter_record(
                serial=serial,
                interval_end=interval_end,
                energy_wh=energy,
                register_wh=self.registers_wh[index],
                status=0,
            )
            self._write(register_map.meter_address(index), record)
            served.append(
                ServedReading(self.device, serial, interval_end, energy, self.registers_wh[index])
            )
        self.last_interval_end = interval_end
        self._write(register_map.HEADER_ADDRESS, self._header())
        return served

    def sim_device(self) -> SimDevice:
        """The pymodbus device: its registers are filled from ours on every read."""
        return SimDevice(
            id=self.unit_id,
            simdata=[
                SimData(
                    address=0,
                    count=len(self._registers),
                    values=0,
                    datatype=DataType.REGISTERS,
                    readonly=True,
                )
            ],
            action=self._on_access,
        )

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        _set_values: list[int] | list[bool] | None,
    ) -> None:
        """Copy our current values into the registers pymodbus is about to answer with."""
        if function_code == READ_HOLDING_REGISTERS:
            offset = address - start_address
            current_registers[offset : offset + count] = self._registers[address : address + count]
