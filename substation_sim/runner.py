"""Serve a field over Modbus TCP and MQTT and drive its clock, faster than real time if asked.

Every concentrator and feeder-head meter is its own Modbus TCP server on its own port (one IP
device each, as in the field). Transformer telemetry is published over MQTT every
``publish_interval_seconds`` of simulated time. Device-level faults (offline windows, exception
replies, timeouts) and MQTT faults are applied here; the ground truth records each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib

import aiomqtt
import numpy as np
from pymodbus.server import ModbusTcpServer

from substation_sim import telemetry
from substation_sim.concentrator import Concentrator
from substation_sim.faults import RequestFaults, fault_rng, targets
from substation_sim.field import Field
from substation_sim.record import TruthRow
from substation_sim.register_map import INTERVAL_SECONDS
from substation_sim.scenario import FaultSpec
from substation_sim.thermal import Reading

log = logging.getLogger(__name__)

MQTT_QUEUE_SIZE = 10_000  # messages waiting for the broker; older ones are dropped beyond it
MQTT_RETRY_SECONDS = 2.0


class MqttPublisher:
    """Publishes transformer telemetry at QoS 1, applying the scenario's MQTT faults."""

    def __init__(self, field: Field, *, host: str, port: int) -> None:
        """Args: field: the field whose transformers publish; host, port: the broker."""
        self.field = field
        self.host = host
        self.port = port
        self.published = 0
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MQTT_QUEUE_SIZE)
        self._held: dict[str, bytes] = {}  # out-of-order: sent after the next message
        self._sequence: dict[str, int] = {}
        self._outage_recorded: set[tuple[int, str]] = set()

    def emit(self, readings: list[Reading]) -> None:
        """Queue one round of readings (no waiting), faults applied, record and truth written."""
        sent: list[tuple[str, int, bytes]] = []
        truth: list[TruthRow] = []
        for reading in readings:
            spec = self.field.sensors[reading.transformer].spec
            name = reading.transformer
            seq = self._sequence[name] = self._sequence.get(name, 0) + 1
            where = telemetry.topic(
                self.field.scenario.topic_prefix, spec.region, spec.substation, name
            )
            body = telemetry.payload(reading, seq)
            fault = self._fault_for(spec.region, reading.time, name)
            messages = [body]
            if fault is not None:
                messages = self._apply(fault, name, reading.time, body, truth)
            if name in self._held and fault is None:
                messages.append(self._held.pop(name))
            for message in messages:
                self._put(where, message)
                sent.append((where, reading.time, message))
        self.field.record.add_telemetry(sent)
        self.field.record.add_truth(truth)

    def _fault_for(self, region: str, now: int, name: str) -> FaultSpec | None:
        hour = self.field.hour(now)
        for fault in self.field.faults:
            if (
                fault.kind in ("duplicate", "out_of_order", "malformed", "broker_outage")
                and fault.region in (None, region)
                and fault.active(hour)
            ):
                rng = fault_rng(self.field.scenario, fault, now, zlib.crc32(name.encode()))
                if fault.kind == "broker_outage" or rng.random() < fault.share:
                    return fault
        return None

    def _apply(
        self, fault: FaultSpec, name: str, now: int, body: bytes, truth: list[TruthRow]
    ) -> list[bytes]:
        def row(detail: str) -> TruthRow:
            return TruthRow(fault.index, fault.kind, detail, name, name, now, now, None, None)

        if fault.kind == "duplicate":
            truth.append(row("sent twice"))
            return [body, body]
        if fault.kind == "out_of_order":
            truth.append(row("sent after the next message"))
            self._held[name] = body
            return []
        if fault.kind == "malformed":
            rng = fault_rng(self.field.scenario, fault, now, 1)
            broken, variant = telemetry.malformed(body, rng)
            truth.append(row(variant))
            return [broken]
        if (fault.index, name) not in self._outage_recorded:  # broker_outage: lost at the source
            self._outage_recorded.add((fault.index, name))
            start = self.field.scenario.start + int(fault.start_hour * 3600)
            truth.append(
                TruthRow(
                    fault.index,
                    fault.kind,
                    "not published",
                    name,
                    name,
                    start,
                    start + int(fault.hours * 3600),
                    None,
                    None,
                )
            )
        return []

    def _put(self, where: str, message: bytes) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
        self._queue.put_nowait((where, message))

    async def wait_published(self) -> None:
        """Wait until everything queued so far is published (or dropped)."""
        await self._queue.join()

    async def run(self) -> None:
        """Publish queued messages until cancelled, reconnecting to the broker as needed.

        A message is done only once the broker acknowledged it (PUBACK): one in flight when the
        link fails is sent again after reconnecting, as a sensor's MQTT client does (the
        broker may then see it twice; subscribers drop the copy by its ``seq``).
        """
        in_flight: tuple[str, bytes] | None = None
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, port=self.port, identifier="substation-sim"
                ) as client:
                    while True:
                        in_flight = in_flight or await self._queue.get()
                        await client.publish(*in_flight, qos=1)
                        in_flight = None
                        self.published += 1
                        self._queue.task_done()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "MQTT broker %s:%d unavailable (%s); retrying", self.host, self.port, exc
                )
                await asyncio.sleep(MQTT_RETRY_SECONDS)


class SimulatorRunner:
    """Serves a ``Field`` and drives its clock. ``async with`` starts serving."""

    def __init__(
        self,
        field: Field,
        *,
        host: str | None = None,
        base_port: int | None = None,
        mqtt_port: int | None = None,
    ) -> None:
        """Args override the scenario's Modbus host, first port and MQTT broker port."""
        self.field = field
        scenario = field.scenario
        self.host = host or scenario.host
        shift = (base_port - scenario.base_port) if base_port is not None else 0
        self.ports = {c.name: c.port + shift for s in field.substations for c in s.concentrators}
        self.ports |= {f"{s.name}-FH": s.feeder_head_port + shift for s in field.substations}
        self.devices: dict[str, Concentrator] = {**field.concentrators}
        self.devices |= {head.name: head for head in field.feeder_heads.values()}
        port = mqtt_port or scenario.mqtt_port
        self.mqtt = MqttPublisher(field, host=scenario.mqtt_host, port=port) if port else None
        self.sim_time = field.interval_end(field.interval)
        self._servers: dict[str, ModbusTcpServer] = {}
        self._request_faults: dict[str, RequestFaults] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._offline_recorded: set[tuple[int, str]] = set()

    async def __aenter__(self) -> SimulatorRunner:
        """Start every device's server and the MQTT publisher."""
        for name, device in self.devices.items():
            spec = self.field.specs.get(name)
            if spec is not None:
                faults = RequestFaults(
                    self.field.scenario,
                    self.field.faults if self.field.inject else [],
                    spec,
                    lambda: self.sim_time,
                )
                self._request_faults[name] = faults
                device.request_fault = faults.decide
            await self._start(name)
        if self.mqtt is not None:
            self._tasks.append(asyncio.create_task(self.mqtt.run(), name="sim.mqtt"))
        self.field.record.add_truth(self.field.incipient_fault_truth())
        log.info(
            "serving %d devices on %s, ports %d-%d",
            len(self.devices),
            self.host,
            min(self.ports.values()),
            max(self.ports.values()),
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Stop serving and publishing; the record stays on disk."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name in list(self._servers):
            await self._stop(name)
        self._drain_request_faults()

    async def _start(self, name: str) -> None:
        server = ModbusTcpServer(
            self.devices[name].sim_device(), address=(self.host, self.ports[name])
        )
        await server.serve_forever(background=True)
        self._servers[name] = server

    async def _stop(self, name: str) -> None:
        await self._servers.pop(name).shutdown()

    def close_interval(self) -> int:
        """Close the next interval on every device now (tests step the field with this)."""
        end = self.field.close_interval()
        self.sim_time = max(self.sim_time, end)
        self._drain_request_faults()
        return end

    async def run_clock(self, *, speed: float, intervals: int | None) -> None:
        """Advance simulated time at ``speed``; return after ``intervals`` (None: never).

        Telemetry is published every ``publish_interval_seconds`` of simulated time. Devices
        keep serving after this returns, until the runner is closed.
        """
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        publish = self.field.scenario.publish_interval_seconds
        wall_start, sim_start = time.monotonic(), self.sim_time
        next_close = self.field.interval_end(self.field.interval + 1)
        next_publish = sim_start + publish
        closed = 0
        while intervals is None or closed < intervals:
            event = min(next_close, next_publish)
            await asyncio.sleep(
                max(0.0, wall_start + (event - sim_start) / speed - time.monotonic())
            )
            self.sim_time = event
            await self._follow_offline_windows()
            if event == next_close:
                end = self.close_interval()
                closed += 1
                next_close = end + INTERVAL_SECONDS
                log.info("closed interval ending %d (%d/%s)", end, closed, intervals or "∞")
            if event == next_publish:
                if self.mqtt is not None:
                    self.mqtt.emit(self.field.telemetry(event))
                next_publish += publish

    async def _follow_offline_windows(self) -> None:
        """Stop devices whose offline window began and restart those whose window ended."""
        if not self.field.inject:
            return
        hour = self.field.hour(self.sim_time)
        for name, spec in self.field.specs.items():
            window = next(
                (
                    f
                    for f in self.field.faults
                    if f.kind == "offline" and targets(f, spec) and f.active(hour)
                ),
                None,
            )
            if window is not None and name in self._servers:
                await self._stop(name)
                self._record_offline(window, name)
            elif window is None and name not in self._servers:
                await self._start(name)

    def _record_offline(self, fault: FaultSpec, name: str) -> None:
        if (fault.index, name) in self._offline_recorded:
            return
        self._offline_recorded.add((fault.index, name))
        start = self.field.scenario.start + int(fault.start_hour * 3600)
        self.field.record.add_truth(
            [
                TruthRow(
                    fault.index,
                    "offline",
                    "not reachable",
                    name,
                    None,
                    start,
                    start + int(fault.hours * 3600),
                    None,
                    None,
                )
            ]
        )

    def _drain_request_faults(self) -> None:
        rows = [
            TruthRow(fault.index, fault.kind, kind, name, None, at, at, None, None)
            for name, faults in self._request_faults.items()
            for fault, kind, at in faults.drain()
        ]
        self.field.record.add_truth(rows)

    def statistics(self) -> dict[str, int]:
        """Counts for the describe and benchmark output."""
        return {
            "intervals_closed": self.field.interval,
            "request_faults_served": int(np.sum([d.faults_served for d in self.devices.values()])),
            "mqtt_published": self.mqtt.published if self.mqtt else 0,
            "mqtt_dropped": self.mqtt.dropped if self.mqtt else 0,
        }
