"""A meter concentrator written from docs/modbus-register-map.md alone, served over Modbus TCP.

It shares no code with the simulator (``substation_sim``) or the agent: only the document, so
the agent is tested against what the document allows rather than against its own assumptions.
Tests use it as an adversary: ``close_before`` schedules interval closes before any request of
a poll (between two reads of one table, between the header and the table, during a backfill),
in bursts if wanted, and meters may miss intervals. The one thing the document promises, and
this device keeps, is that a single request is answered from one state.

The device runs in its own thread with its own event loop, so a test drives the agent with
``asyncio.run`` as often as it likes while the device keeps its state.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from dataclasses import dataclass, field

from pgcluster import free_loopback_port
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

INTERVAL = 900
FIRST_END = 1_793_577_600  # 2026-11-02T00:00:00Z: in the past, as a real device's clock is
TABLE = 100
RECORD = 16
SELECTOR = 10
SIZE = 65_536


def _words(value: int, count: int) -> list[int]:
    """High word first, as the document says."""
    return [(value >> (16 * (count - 1 - i))) & 0xFFFF for i in range(count)]


@dataclass(frozen=True)
class Served:
    """One meter's record for one interval, as the device served it."""

    serial: int
    interval_end: int
    energy_wh: int
    register_wh: int
    status: int = 0

    def registers(self) -> list[int]:
        """The 16-register record of the document's meter table."""
        return [
            *_words(self.serial, 4),
            *_words(self.interval_end, 2),
            *_words(self.energy_wh & 0xFFFFFFFF, 2),
            *_words(self.register_wh, 4),
            self.status,
            0,
            0,
            0,
        ]


@dataclass
class DeviceModel:
    """The device's state: live records, a history ring, and what is scheduled to happen."""

    serials: list[int]
    depth: int = 96
    last_end: int = 0
    live: dict[int, Served] = field(default_factory=dict)
    registers: dict[int, int] = field(default_factory=dict)  # each meter's true register
    history: deque[tuple[int, dict[int, Served]]] = field(default_factory=deque)
    evicted: set[int] = field(default_factory=set)
    served: list[Served] = field(default_factory=list)
    missed: set[tuple[int, int]] = field(default_factory=set)  # (serial, interval_end)
    selected: int = 0
    requests: int = 0
    # request number -> [(closes, meter indices that miss them)]: closes happen before it
    schedule: dict[int, list[tuple[int, frozenset[int]]]] = field(default_factory=dict)
    corrupt: dict[tuple[int, int], Served] = field(default_factory=dict)  # served instead
    # request number -> header registers (by address) answered instead, for that request only
    glitches: dict[int, dict[int, int]] = field(default_factory=dict)
    garbage: set[int] = field(
        default_factory=set
    )  # meter-table reads (0, 1...) answered with noise
    table_reads: int = 0
    _glitch: dict[int, int] = field(default_factory=dict)

    def close(self, missing: frozenset[int] = frozenset()) -> int:
        """Close the next interval in one step: header, live records and history together."""
        end = self.last_end + INTERVAL if self.last_end else FIRST_END
        records: dict[int, Served] = {}
        for index, serial in enumerate(self.serials):
            if index in missing:
                self.missed.add((serial, end))
                continue
            energy = (serial * 7919 + end // INTERVAL * 104_729) % 3_000 + 1
            register = self.registers.get(serial, serial % 10**6) + energy
            self.registers[serial] = register
            served = Served(serial, end, energy, register)
            served = self.corrupt.get((serial, end), served)
            records[serial] = self.live[serial] = served
            self.served.append(served)
        self.history.append((end, records))
        while len(self.history) > self.depth:
            self.evicted.add(self.history.popleft()[0])
        self.last_end = end
        return end

    def header(self) -> list[int]:
        """Holding registers 0-7."""
        oldest = self.history[0][0] if self.history else 0
        return [
            1,
            len(self.serials),
            *_words(self.last_end, 2),
            INTERVAL,
            self.depth,
            *_words(oldest, 2),
        ]

    def holding(self, address: int, count: int) -> list[int]:
        """The live state: header, selector, live meter table."""
        words = [0] * TABLE
        words[:8] = self.header()
        words[SELECTOR : SELECTOR + 2] = _words(self.selected, 2)
        for register, value in self._glitch.items():
            words[register] = value
        return self._with_table(words, self.live, address, count)

    def inputs(self, address: int, count: int) -> list[int]:
        """The history area for the selected interval."""
        held = dict(self.history).get(self.selected) if self.selected else None
        words = [0] * TABLE
        status = 1 if held is None else 0
        words[:8] = [1, len(self.serials), *_words(self.selected, 2), INTERVAL, status, 0, 0]
        return self._with_table(words, held or {}, address, count)

    def _with_table(
        self, head: list[int], records: dict[int, Served], address: int, count: int
    ) -> list[int]:
        out = []
        for register in range(address, address + count):
            if register < TABLE:
                out.append(head[register])
                continue
            index, offset = divmod(register - TABLE, RECORD)
            record = records.get(self.serials[index]) if index < len(self.serials) else None
            out.append(record.registers()[offset] if record else 0)
        return out

    def before_request(self) -> None:
        """Apply what the schedule holds for this request, then count it."""
        for closes, missing in self.schedule.pop(self.requests, []):
            for _ in range(closes):
                self.close(missing)
        self._glitch = self.glitches.pop(self.requests, {})
        self.requests += 1


class DocConcentrator:
    """``DeviceModel`` served on a free loopback port as unit id 1, from a background thread."""

    def __init__(self) -> None:
        self.port = free_loopback_port()
        self.model = DeviceModel(serials=[1])
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: ModbusTcpServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def reset(self, model: DeviceModel) -> None:
        """Serve a new device state from the next request on."""
        with self._lock:
            self.model = model

    async def _start(self) -> None:
        blocks = [SimData(address=0, count=SIZE, values=0, datatype=DataType.REGISTERS)]
        bits = [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]
        device = SimDevice(id=1, simdata=(bits, list(bits), blocks, list(blocks)), action=self._on)
        self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)

    async def _on(  # noqa: PLR0913, PLR0917 - pymodbus' action signature
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        with self._lock:
            model = self.model
            model.before_request()
            offset = address - start_address
            if function_code in (3, 4) and address >= TABLE:
                model.table_reads += 1
            if (
                function_code in (3, 4)
                and address >= TABLE
                and model.table_reads - 1 in model.garbage
            ):
                noise = random.Random(model.table_reads)
                current[offset : offset + count] = [noise.randrange(65_536) for _ in range(count)]
            elif function_code == 3:
                current[offset : offset + count] = model.holding(address, count)
            elif function_code == 4:
                current[offset : offset + count] = model.inputs(address, count)
            elif function_code in (6, 16) and set_values is not None:
                values = [int(v) for v in set_values]
                if address != SELECTOR or len(values) != 2:
                    return ExcCodes.ILLEGAL_ADDRESS
                model.selected = (values[0] << 16) | values[1]
        return None

    def close(self) -> None:
        """Stop serving and end the thread."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
