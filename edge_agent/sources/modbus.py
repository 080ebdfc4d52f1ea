"""Read meter concentrators over Modbus TCP with block reads, backfilling from their history.

A poll reads the header (one read). When it announces intervals the agent has not delivered, the
agent first reads back every missed interval still in the concentrator's history, oldest first,
then the live table, each in reads of at most 125 registers. The agent confirms each interval
with ``delivered`` only after the buffer committed it, so whatever was not committed is read
again. Delivery is therefore at-least-once while the history holds the interval (96 intervals:
24 hours by default); older gaps are lost at the device and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge_agent.config import ModbusSourceConfig
from edge_agent.errors import SourceError
from edge_agent.sources import register_map
from edge_agent.sources.register_map import INTERVAL_SECONDS, ConcentratorHeader, MeterRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Poll:
    """One interval read from a device: its records (maybe empty) and how it was read."""

    records: list[MeterRecord]
    poll_time_ms: int
    interval_end: int
    from_history: bool = False


class ModbusConcentrator:
    """One concentrator: its own connection, timeout, word order and delivery cursor."""

    def __init__(self, config: ModbusSourceConfig, *, delivered_up_to: int = 0) -> None:
        """Prepare the client; the connection opens on the first read.

        Args:
            config: the device's configuration.
            delivered_up_to: the last interval end committed for this device (from the buffer),
                so a restarted agent backfills from there.

        """
        self.config = config
        self.device = config.device
        self.last_interval_end = delivered_up_to
        self._client: AsyncModbusTcpClient | None = None  # made on first use, in the event loop
        self.reads = 0
        self.backfilled = 0
        self.lost_intervals = 0

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is None:
            self._client = AsyncModbusTcpClient(
                self.config.host,
                port=self.config.port,
                timeout=self.config.timeout_seconds,
                retries=self.config.retries,
                reconnect_delay=0,  # the agent's poll loop and breaker decide when to try again
            )
        if not self._client.connected and not await self._client.connect():
            raise SourceError(self.device, "cannot connect")
        return self._client

    def _check(self, reply: object, what: str) -> None:
        if reply.isError():  # type: ignore[attr-defined]
            code = getattr(reply, "exception_code", "?")
            raise SourceError(self.device, f"exception reply {code} to {what}")

    async def _read(self, address: int, count: int, *, history: bool = False) -> list[int]:
        """One block read (holding registers, or input registers for the history)."""
        client = await self._connected()
        read = client.read_input_registers if history else client.read_holding_registers
        what = f"read of {count} at {address}"
        try:
            reply = await read(address, count=count, device_id=self.config.unit_id)
        except (ModbusException, ValueError) as exc:
            raise SourceError(self.device, f"{what} failed: {exc}") from exc
        self.reads += 1
        self._check(reply, what)
        if len(reply.registers) != count:
            raise SourceError(self.device, f"{what}: got {len(reply.registers)} registers")
        return register_map.swap_bytes(reply.registers, self.config.byte_order)

    async def _select(self, interval_end: int) -> None:
        """Point the history area at ``interval_end`` (holding registers 10-11)."""
        client = await self._connected()
        words = register_map.encode_u32(interval_end, self.config.word_order)
        try:
            reply = await client.write_registers(
                register_map.SELECTOR_ADDRESS,
                register_map.swap_bytes(words, self.config.byte_order),
                device_id=self.config.unit_id,
            )
        except (ModbusException, ValueError) as exc:
            raise SourceError(self.device, f"history selector write failed: {exc}") from exc
        self._check(reply, "history selector write")

    async def read_table(self, meter_count: int, *, history: bool) -> list[MeterRecord]:
        """Read and decode the whole meter table (live, or the selected history interval).

        Records are decoded as soon as their registers are in: a 1,250-meter table's 20,000
        registers are never all held at once (with 16 devices read together, that was the
        agent's largest transient allocation).
        """
        records: list[MeterRecord] = []
        words: list[int] = []
        decoded_up_to = register_map.METER_TABLE_ADDRESS
        table_size = meter_count * register_map.METER_RECORD_REGISTERS
        for address, count in register_map.block_reads(decoded_up_to, table_size):
            words.extend(await self._read(address, count, history=history))
            whole = len(words) - len(words) % register_map.METER_RECORD_REGISTERS
            records.extend(
                register_map.decode_meter_table(
                    words[:whole],
                    device=self.device,
                    word_order=self.config.word_order,
                    first_address=decoded_up_to,
                )
            )
            del words[:whole]
            decoded_up_to += whole
        return records

    async def read_header(self) -> ConcentratorHeader:
        """Read and decode the live header block."""
        words = await self._read(register_map.HEADER_ADDRESS, register_map.HEADER_REGISTERS)
        return register_map.decode_header(
            words, device=self.device, word_order=self.config.word_order
        )

    async def read_history(self, interval_end: int, meter_count: int) -> list[MeterRecord] | None:
        """Records of a past interval from the history, or None when it is no longer held."""
        await self._select(interval_end)
        words = await self._read(
            register_map.HEADER_ADDRESS, register_map.HEADER_REGISTERS, history=True
        )
        header = register_map.decode_history_header(
            words, device=self.device, word_order=self.config.word_order
        )
        if header.selected != interval_end:
            raise SourceError(
                self.device, f"history answered for {header.selected}, not {interval_end}"
            )
        if not header.held:
            return None
        return await self.read_table(meter_count, history=True)

    async def poll(self) -> AsyncIterator[Poll]:
        """Missed intervals from the history (oldest first), then the live one if it is new."""
        header = await self.read_header()
        if header.last_interval_end <= self.last_interval_end:
            return
        for interval_end in self._missed(header):
            records = await self.read_history(interval_end, header.meter_count)
            if records is None:
                self.lost_intervals += 1
                log.warning(
                    "%s: interval %d is not in the history any more", self.device, interval_end
                )
                continue
            self.backfilled += 1
            yield Poll(records, time.time_ns() // 1_000_000, interval_end, from_history=True)
        # The header was read before the table: if an interval closes during the table read,
        # the next poll sees a newer header and reads again.
        poll_time_ms = time.time_ns() // 1_000_000
        records = await self.read_table(header.meter_count, history=False)
        yield Poll(records, poll_time_ms, header.last_interval_end)

    def _missed(self, header: ConcentratorHeader) -> list[int]:
        """Interval ends after the last delivered one, before the live one, that history holds."""
        if not self.config.backfill or not header.oldest_held:
            return []
        first = header.oldest_held
        if self.last_interval_end:
            first = max(first, self.last_interval_end + INTERVAL_SECONDS)
            lost = (first - self.last_interval_end) // INTERVAL_SECONDS - 1
            if lost > 0:
                self.lost_intervals += lost
                log.warning("%s: %d intervals older than the history are lost", self.device, lost)
        return list(range(first, header.last_interval_end, INTERVAL_SECONDS))

    def delivered(self, poll: Poll) -> None:
        """Record that ``poll``'s readings are committed, so later polls skip that interval.

        Called only after the buffer commit: if the commit fails, the next poll reads again.
        """
        self.last_interval_end = max(self.last_interval_end, poll.interval_end)

    def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._client is not None:
            self._client.close()
            self._client = None
