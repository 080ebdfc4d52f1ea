"""Read meter concentrators over Modbus TCP with block reads (best-effort delivery).

A poll reads the 8-register header; only when it announces a newer closed interval does the
agent read the whole meter table, in reads of at most 125 registers. Delivery is best-effort:
an interval the agent never polled is lost here unless read back from the concentrator's history.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge_agent.config import ModbusSourceConfig
from edge_agent.errors import SourceError
from edge_agent.sources import register_map
from edge_agent.sources.register_map import ConcentratorHeader, MeterRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Poll:
    """What one poll found: the records (empty when nothing new) and the interval they close."""

    records: list[MeterRecord]
    poll_time_ms: int
    interval_end: int


class ModbusConcentrator:
    """One concentrator: its own connection, timeout and the last interval it delivered."""

    def __init__(self, config: ModbusSourceConfig) -> None:
        """Prepare the client; the connection opens on the first poll."""
        self.config = config
        self.device = config.device
        self.last_interval_end = 0
        self._client = AsyncModbusTcpClient(
            config.host,
            port=config.port,
            timeout=config.timeout_seconds,
            retries=1,
            reconnect_delay=0,  # the agent's poll loop decides when to try again
        )
        self.reads = 0

    async def _read(self, address: int, count: int) -> list[int]:
        """One block read of holding registers, errors translated to ``SourceError``."""
        if not self._client.connected and not await self._client.connect():
            raise SourceError(self.device, "cannot connect")
        try:
            reply = await self._client.read_holding_registers(
                address, count=count, device_id=self.config.unit_id
            )
        except (ModbusException, ValueError) as exc:
            raise SourceError(self.device, f"read of {count} at {address} failed: {exc}") from exc
        self.reads += 1
        if reply.isError():
            raise SourceError(
                self.device, f"exception reply {reply.exception_code} to read at {address}"
            )
        if len(reply.registers) != count:
            raise SourceError(
                self.device, f"asked {count} registers at {address}, got {len(reply.registers)}"
            )
        return list(reply.registers)

    async def read_header(self) -> ConcentratorHeader:
        """Read and decode the header block."""
        words = await self._read(register_map.HEADER_ADDRESS, register_map.HEADER_REGISTERS)
        return register_map.decode_header(words, device=self.device)

    async def poll(self) -> Poll:
        """Read the meter table if the header announces an interval not yet delivered."""
        header = await self.read_header()
        poll_time_ms = time.time_ns() // 1_000_000
        if header.last_interval_end <= self.last_interval_end:
            return Poll(records=[], poll_time_ms=poll_time_ms, interval_end=self.last_interval_end)
        words: list[int] = []
        table_size = header.meter_count * register_map.METER_RECORD_REGISTERS
        for address, count in register_map.block_reads(
            register_map.METER_TABLE_ADDRESS, table_size
        ):
            words.extend(await self._read(address, count))
        # The header's interval was read before the table: if an interval closed during the
        # table read, the next poll sees a newer header and reads again.
        return Poll(
            records=register_map.decode_meter_table(words, device=self.device),
            poll_time_ms=poll_time_ms,
            interval_end=header.last_interval_end,
        )

    def delivered(self, poll: Poll) -> None:
        """Record that ``poll``'s readings are committed, so later polls skip that interval.

        Called only after the buffer commit: if the commit fails, the next poll reads again.
        """
        self.last_interval_end = max(self.last_interval_end, poll.interval_end)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()
