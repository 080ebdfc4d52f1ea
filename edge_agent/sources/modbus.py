"""Read meter concentrators over Modbus TCP with block reads, backfilling from their history.

A poll reads the header (one read). When it announces intervals the agent has not delivered, the
agent first reads back every missed interval still in the concentrator's history, oldest first,
then the live table. Every read is of whole records (7 records, 112 registers), so no record is
ever assembled from two reads. The header is read again after the live table: if an interval
closed meanwhile, the table may mix two intervals, so the agent reads the announced interval
from the history instead, where a closed interval never changes. The agent confirms each
interval with ``delivered`` only after the buffer committed it, so whatever was not committed is
read again; delivery is at-least-once while the history holds the interval (96 intervals: 24
hours by default). Older gaps are lost at the device and logged.

A header is checked before it is trusted: one that puts the last interval ahead of the gateway's
clock (a clock step, a bad reply) is refused, as is one whose history claims to start after its
newest interval; a header going back in time is an alarm, never a reason to read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from edge_agent.config import ModbusSourceConfig
from edge_agent.errors import MalformedReply, SourceError
from edge_agent.sources import register_map
from edge_agent.sources.register_map import INTERVAL_SECONDS, ConcentratorHeader, MeterRecord

log = logging.getLogger(__name__)

# A header may put its newest interval at most this far ahead of the gateway's clock: one
# interval, for a concentrator whose clock runs ahead. More is a clock step or a bad reply.
MAX_HEADER_AHEAD_SECONDS = INTERVAL_SECONDS


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Poll:
    """One interval read from a device: its records (maybe empty) and how it was read."""

    records: list[MeterRecord]
    poll_time_ms: int
    interval_end: int
    from_history: bool = False
    backfill: int = 0  # intervals this poll's backfill reads from the history, in all


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
        self.rereads = 0  # reads taken again because a record looked like a garbage reply
        self._went_back_to = 0  # the last backward header step alarmed, so it is said once
        self.clock_offset_s: float | None = None  # device clock - gateway clock, last header

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
            raise SourceError(self.device, "cannot connect", kind="unreachable")
        return self._client

    def _check(self, reply: object, what: str) -> None:
        if reply.isError():  # type: ignore[attr-defined]
            code = getattr(reply, "exception_code", "?")
            raise SourceError(self.device, f"exception reply {code} to {what}", kind="exception")

    async def _read(self, address: int, count: int, *, history: bool = False) -> list[int]:
        """One block read (holding registers, or input registers for the history)."""
        client = await self._connected()
        read = client.read_input_registers if history else client.read_holding_registers
        what = f"read of {count} at {address}"
        try:
            reply = await read(address, count=count, device_id=self.config.unit_id)
        except (ModbusException, ValueError) as exc:
            raise SourceError(self.device, f"{what} failed: {exc}", kind=_kind(exc)) from exc
        _honour_cancellation()
        self.reads += 1
        self._check(reply, what)
        if len(reply.registers) != count:
            raise MalformedReply(self.device, f"{what}: got {len(reply.registers)} registers")
        return register_map.swap_bytes(list(reply.registers), self.config.byte_order)

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Holding registers from ``address``, in reads of whole records (for probes)."""
        step = register_map.RECORDS_PER_READ * register_map.METER_RECORD_REGISTERS
        words: list[int] = []
        for start in range(address, address + count, step):
            words += await self._read(start, min(step, address + count - start))
        return words

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
            raise SourceError(
                self.device, f"history selector write failed: {exc}", kind=_kind(exc)
            ) from exc
        _honour_cancellation()
        self._check(reply, "history selector write")

    async def read_table(
        self, meter_count: int, *, history: bool, latest: int
    ) -> list[MeterRecord]:
        """Read and decode the whole meter table (live, or the selected history interval).

        Each read holds whole records only (``register_map.record_reads``): a device answers
        one request from one state, so a record is always one meter's consistent state even
        when an interval closes between two reads. Records are decoded read by read: a
        1,250-meter table's 20,000 registers are never all held at once.

        A read holding a record no device state explains (an interval end after ``latest``,
        the interval read, or a value no reading can hold) is read once more and the second
        answer taken: a garbage reply is replaced, and a device that really holds such a
        record says so twice (validation then quarantines that record).
        """
        records: list[MeterRecord] = []
        for address, count in register_map.record_reads(meter_count):
            block = await self._read_records(address, count, history=history)
            if any(register_map.implausible(r, latest) for r in block):
                self.rereads += 1
                block = await self._read_records(address, count, history=history)
            records.extend(block)
        return records

    async def _read_records(self, address: int, count: int, *, history: bool) -> list[MeterRecord]:
        words = await self._read(address, count, history=history)
        return register_map.decode_meter_table(
            words, device=self.device, word_order=self.config.word_order
        )

    async def read_header(self) -> ConcentratorHeader:
        """Read and decode the live header block.

        Raises:
            MalformedReply: the header breaks the register map, or its history claims to
                start after its newest interval.

        """
        asked = time.time()
        words = await self._read(register_map.HEADER_ADDRESS, register_map.HEADER_READ_REGISTERS)
        answered = time.time()
        header = register_map.decode_header(
            words[: register_map.HEADER_REGISTERS],
            device=self.device,
            word_order=self.config.word_order,
        )
        clock = register_map.decode_clock(
            words[register_map.DEVICE_CLOCK_ADDRESS :], self.config.word_order
        )
        # A clock shows the second it is in: on average half a second has passed. Against the
        # middle of the exchange, so the error is under half a second plus half the round trip.
        self.clock_offset_s = None if clock is None else clock + 0.5 - (asked + answered) / 2
        if header.oldest_held > header.last_interval_end:
            raise MalformedReply(
                self.device,
                f"registers 6-7 (oldest held) {header.oldest_held} are after registers 2-3"
                f" (last interval end) {header.last_interval_end}",
            )
        return header

    async def _trusted_header(self) -> ConcentratorHeader:
        """The header a poll acts on: never one read alone when it jumps ahead.

        A header more than one interval past the cursor (after an outage, at start, or a
        glitch) is read a second time and the earlier of the two is taken: a single bad read
        cannot move the cursor, and an interval closing between the reads is left to the next
        poll. Either way it may not lie ahead of the gateway's clock.

        Raises:
            MalformedReply: as ``read_header``, or the newest interval is ahead of the
                gateway's clock by more than an interval (a clock step, or a bad reply).

        """
        header = await self.read_header()
        if header.last_interval_end > self.last_interval_end + INTERVAL_SECONDS:
            again = await self.read_header()
            header = min(header, again, key=lambda h: h.last_interval_end)
        ahead = header.last_interval_end - time.time()
        if ahead > MAX_HEADER_AHEAD_SECONDS:
            raise MalformedReply(
                self.device,
                f"registers 2-3 (last interval end) {header.last_interval_end} are {ahead:.0f} s"
                " ahead of the gateway clock: a clock step or a bad reply, not trusted",
            )
        return header

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
        return await self.read_table(meter_count, history=True, latest=interval_end)

    async def poll(self) -> AsyncIterator[Poll]:
        """Missed intervals from the history (oldest first), then the live one if it is new."""
        header = await self._trusted_header()
        if header.last_interval_end <= self.last_interval_end:
            if header.last_interval_end < self.last_interval_end:
                self._clock_went_back(header)
            return
        missed = self._missed(header)
        for interval_end in missed:
            records = await self.read_history(interval_end, header.meter_count)
            if records is None:
                self.lost_intervals += 1
                log.warning(
                    "%s: interval %d is not in the history any more", self.device, interval_end
                )
                continue
            self.backfilled += 1
            yield Poll(records, _now_ms(), interval_end, from_history=True, backfill=len(missed))
        live = await self._read_live(header)
        if live is not None:
            yield live

    async def _read_live(self, header: ConcentratorHeader) -> Poll | None:
        """The interval ``header`` announced: from the live table, or from the history.

        The header is read again after the table. If it changed, an interval closed during
        the table read and the table may hold records of both intervals (a meter read after
        the close shows the newer one, and its record for the announced interval is gone from
        the live table). The announced interval is then read from the history, which holds it
        unchanged: a reading the device still holds is never left to be estimated.
        """
        poll_time_ms = _now_ms()
        records = await self.read_table(
            header.meter_count, history=False, latest=header.last_interval_end
        )
        after = await self.read_header()
        if after.last_interval_end == header.last_interval_end:
            return Poll(records, poll_time_ms, header.last_interval_end)
        log.info(
            "%s: interval %d closed while the live table was read; reading %d from the history",
            self.device,
            after.last_interval_end,
            header.last_interval_end,
        )
        held = await self.read_history(header.last_interval_end, header.meter_count)
        if held is None:
            self.lost_intervals += 1
            log.warning(
                "%s: interval %d left the history before it could be read",
                self.device,
                header.last_interval_end,
            )
            return None
        return Poll(held, _now_ms(), header.last_interval_end, from_history=True)

    def _clock_went_back(self, header: ConcentratorHeader) -> None:
        """An alarm, once per step back: the cursor stays where it is, nothing is read again."""
        if header.last_interval_end != self._went_back_to:
            self._went_back_to = header.last_interval_end
            log.error(
                "ALARM %s: the header's last interval end went back from %d to %d (clock step?);"
                " waiting for the device to pass %d again",
                self.device,
                self.last_interval_end,
                header.last_interval_end,
                self.last_interval_end,
            )

    def _missed(self, header: ConcentratorHeader) -> list[int]:
        """Interval ends after the last delivered one, before the live one, that history holds.

        Never more than the history's depth: a corrupt ``oldest_held`` cannot start millions
        of history reads.
        """
        if not self.config.backfill or not header.oldest_held:
            return []
        deepest = header.last_interval_end - (header.history_depth - 1) * INTERVAL_SECONDS
        first = max(header.oldest_held, deepest)
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


def _kind(exc: Exception) -> str:
    """How a pymodbus call failed, in ``SourceError.kind``'s terms."""
    if isinstance(exc, ConnectionException):
        return "unreachable"
    if isinstance(exc, ModbusIOException):
        return "no_reply"  # pymodbus' "No response received": connected, nothing came back
    return "failed"


def _honour_cancellation() -> None:
    """Raise the cancellation a pymodbus call swallowed, so the agent can stop.

    pymodbus waits for each reply with ``asyncio.wait_for``, which in Python 3.11 loses a
    cancellation that arrives as the reply does (fixed in 3.12, gh-86296): the call returns
    the reply, the task is marked cancelling, and without this check a stopping agent polls
    on for ever.

    Raises:
        asyncio.CancelledError: the task was cancelled during the call.

    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
