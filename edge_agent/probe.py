"""Ask a device or the broker directly, outside the running agent: what answers, and how.

Used by ``edge-agent probe`` (a technician checking one concentrator or the broker's topics)
and by ``edge-agent doctor`` when the agent is not running. A probe never writes to the
buffer and never sends anything to the core; the one register it writes is a concentrator's
history selector, which the agent itself sets before every history read.

Meter serials are personal data: a probe shows only their last four digits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal

from edge_agent.config import ModbusSourceConfig
from edge_agent.errors import SourceError
from edge_agent.sources import register_map
from edge_agent.sources.modbus import ModbusConcentrator
from edge_agent.sources.register_map import ConcentratorHeader
from edge_agent.transforms.telemetry import Malformed, decode
from proto.diagnosis import iso

DEFAULT_RECORDS = 3  # records a modbus probe decodes unless told otherwise
SERIAL_DIGITS_SHOWN = 4


@dataclass
class ModbusProbe:
    """What one concentrator answered (or how it failed)."""

    device: str
    header: ConcentratorHeader | None = None
    clock_offset_s: float | None = None
    round_trip_s: float | None = None
    records: list[dict[str, object]] = field(default_factory=list)  # decoded, serial masked
    registers: list[int] = field(default_factory=list)  # raw, when not whole records
    error: str = ""
    kind: str = ""  # SourceError.kind when it failed

    @property
    def ok(self) -> bool:
        """Whether the device answered as the register map says."""
        return not self.error

    def as_json(self) -> dict[str, object]:
        """For a person: times as ISO 8601 UTC, the clock to a tenth of a second."""
        shown = dataclasses.asdict(self)
        if self.header is not None:
            header = shown["header"]
            for key in ("last_interval_end", "oldest_held"):
                header[key] = _utc(header[key])
        for record in shown["records"]:
            record["interval_end"] = _utc(record["interval_end"])
        if self.clock_offset_s is not None:
            shown["clock_offset_s"] = round(self.clock_offset_s, 1)
        return shown


def _utc(seconds: int) -> str | None:
    """Unix seconds as ISO 8601 UTC; None for the register map's 0 (nothing yet)."""
    return iso(seconds * 1000) if seconds else None


def mask_serial(serial: int) -> str:
    """``****2345``: enough to match a nameplate, not enough to name the customer."""
    digits = str(serial)
    return "*" * max(0, len(digits) - SERIAL_DIGITS_SHOWN) + digits[-SERIAL_DIGITS_SHOWN:]


def source_for(  # noqa: PLR0913 - the [[sources.modbus]] settings a probe takes
    host: str,
    port: int,
    unit: int,
    *,
    timeout_seconds: float = 3.0,
    word_order: Literal["high_first", "low_first"] = "high_first",
    byte_order: Literal["big", "little"] = "big",
) -> ModbusSourceConfig:
    """A device configuration for probing one address (no retries: say what happened)."""
    return ModbusSourceConfig(
        name=f"{host}:{port}/{unit}",
        host=host,
        port=port,
        unit_id=unit,
        timeout_seconds=timeout_seconds,
        retries=0,
        word_order=word_order,
        byte_order=byte_order,
    )


async def probe_modbus(
    source: ModbusSourceConfig, *, address: int | None = None, count: int | None = None
) -> ModbusProbe:
    """Read the header (with the device clock), then ``count`` registers from ``address``.

    By default the first ``DEFAULT_RECORDS`` meter records. Registers that are whole records
    of the meter table are decoded; anything else is shown raw.

    Raises:
        ValueError: the registers asked for cut meter records (they would show serials).

    """
    in_table = address is not None and count and address + count > register_map.METER_TABLE_ADDRESS
    if in_table and not _whole_records(address or 0, count or 0):
        raise ValueError(
            "registers from 100 on hold meter records, serials included: read whole records"
            " (--address 100 + 16 x i, --count a multiple of 16), shown with masked serials"
        )
    device = ModbusConcentrator(source)
    probe = ModbusProbe(device=source.device)
    try:
        started = time.monotonic()
        probe.header = await device.read_header()
        probe.round_trip_s = round(time.monotonic() - started, 4)
        probe.clock_offset_s = device.clock_offset_s
        records = min(DEFAULT_RECORDS, probe.header.meter_count)
        address = register_map.METER_TABLE_ADDRESS if address is None else address
        count = records * register_map.METER_RECORD_REGISTERS if count is None else count
        words = await device.read_registers(address, count)
        if _whole_records(address, count):
            decoded = register_map.decode_meter_table(
                words, device=source.device, word_order=source.word_order
            )
            probe.records = [
                {**record._asdict(), "serial": mask_serial(record.serial)} for record in decoded
            ]
        else:
            probe.registers = words
    except SourceError as exc:
        probe.error, probe.kind = str(exc), exc.kind
    finally:
        device.close()
    return probe


def _whole_records(address: int, count: int) -> bool:
    offset = address - register_map.METER_TABLE_ADDRESS
    size = register_map.METER_RECORD_REGISTERS
    return offset >= 0 and offset % size == 0 and count % size == 0


@dataclass
class MqttProbe:
    """What the broker did: connected or not, and what arrived on which topic."""

    broker: str
    connected: bool = False
    error: str = ""
    messages: list[dict[str, object]] = field(default_factory=list)  # topic, bytes, payload


async def probe_mqtt(
    host: str,
    port: int,
    topics: dict[str, str],
    *,
    listen_seconds: float,
    timeout_seconds: float = 5.0,
) -> MqttProbe:
    """Connect with a throwaway session and listen on ``topics`` for ``listen_seconds``.

    ``topics`` maps each topic to its transformer, as ``[[mqtt.transformers]]`` does; each
    message is checked as the agent would check it, on the bytes received. A clean session
    under its own client id, at QoS 0: the agent's persistent session and the messages
    queued for it are left alone.
    """
    import aiomqtt  # noqa: PLC0415 - MQTT is optional: loaded only when probed

    probe = MqttProbe(broker=f"{host}:{port}")
    client = aiomqtt.Client(
        host, port=port, identifier=f"edge-agent-probe-{time.time_ns()}", timeout=timeout_seconds
    )
    try:
        async with client:
            probe.connected = True
            if topics and listen_seconds > 0:
                await client.subscribe([(topic, 0) for topic in topics])
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(listen_seconds):
                        async for message in client.messages:
                            probe.messages.append(_message(message, topics))
    except aiomqtt.MqttError as exc:
        probe.error = str(exc) or type(exc).__name__
    return probe


def payload_check(payload: bytes, *, transformer: str, topic: str) -> str:
    """What the agent would do with a payload: store its values, or quarantine it and why."""
    try:
        message = decode(payload, transformer=transformer, topic=topic)
    except Malformed as exc:
        return f"would be quarantined: {exc}"
    return f"ok: {len(message.points)} values, seq {message.seq}"


def _message(message: object, topics: dict[str, str]) -> dict[str, object]:
    payload = getattr(message, "payload", b"")
    raw = payload if isinstance(payload, bytes) else str(payload).encode()
    topic = str(getattr(message, "topic", ""))
    transformer = topics.get(topic, "")
    return {
        "topic": topic,
        "transformer": transformer,
        "received": iso(time.time_ns() // 1_000_000),
        "bytes": len(raw),
        "payload": raw.decode("utf-8", errors="replace"),
        "check": payload_check(raw, transformer=transformer, topic=topic),
    }
