"""The gateway daemon: poll concentrators, pseudonymize, buffer, seal and upload.

::

    poll loop per concentrator ─► pseudonymize ─► buffer.put_readings (one commit per cycle)
    sealer ─► buffer.seal_batch (signed, one transaction) ─► uplink ─► core ─► buffer.acknowledge

Every buffer call runs in one dedicated I/O thread, so SQLite never blocks the event loop and
its calls never interleave. Each loop is a named task of one TaskGroup owned by ``EdgeAgent``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_agent.config import AgentConfig
from edge_agent.errors import (
    BufferDamaged,
    BufferUnavailable,
    ConfigError,
    EdgeError,
    SourceError,
)
from edge_agent.health import (
    HEALTH_SECONDS,
    AgentHealth,
    CoreHealth,
    DeviceHealth,
    HealthWriter,
    MqttHealth,
    health_path,
    now_ms,
)
from edge_agent.keys import ClientTls, load_client_tls, load_pseudonym_key, load_signing_key
from edge_agent.poll_step import PollStep
from edge_agent.sinks.buffer import Buffer, BufferStatistics
from edge_agent.sinks.pressure import PressureGauge
from edge_agent.sinks.salvage import damage, salvage
from edge_agent.sinks.uplink import Uplink, check_core
from edge_agent.snapshot import AgentSnapshot
from edge_agent.sources.breaker import CircuitBreaker
from edge_agent.sources.modbus import ModbusConcentrator, Poll
from edge_agent.transforms.pseudonymize import Pseudonymizer
from edge_agent.transforms.seal import Sealer
from edge_agent.transforms.telemetry import (
    Malformed,
    TelemetryValidator,
    decode,
)
from edge_agent.transforms.validate import Validation, Validator
from proto.observability import serve_metrics
from proto.progress import Progress
from proto.quality import SUSPECT, QualityFlag
from proto.service_manager import feed_watchdog, notify
from proto.tls import is_loopback

if TYPE_CHECKING:
    from edge_agent.config import MqttConfig
    from edge_agent.metrics import EdgeMetrics
    from edge_agent.sources.mqtt import MqttSource

log = logging.getLogger(__name__)

BUFFER_RETRY_SECONDS = 1  # an MQTT message the buffer refused (disk full) is committed again
SEAL_RETRY_SECONDS = 5  # after a failed seal (e.g. disk full): readings stay pending, retried
SEAL_RETRY_MIN_SECONDS = 1  # ... sooner once something commits again, but not sooner than this
PRUNE_INTERVAL_SECONDS = 60  # retention is in hours; checking every minute is plenty
RESTART_SECONDS = 5  # pause before a loop that failed unexpectedly starts again
BREAKER_MAX_RESET_SECONDS = 600  # a dead device is still tried at least every 10 minutes
PRESSURE_CHECK_SECONDS = 1.0
STATISTICS_SECONDS = 5.0  # how fresh the buffer's figures in the metrics are
# Buffer methods that commit: their duration is the buffer commit latency in the metrics.
COMMITS = frozenset(
    {"put_readings", "put_telemetry", "put_quarantine", "seal_batch", "acknowledge", "prune"}
)
TELEMETRY_KEEP_EVERY_MINUTES = 5  # when shedding, keep one telemetry message in five minutes
CORE_CHECK_SECONDS = 60.0  # how often the agent asks the core's Health (clock, round trip)
CORE_CHECK_TIMEOUT_SECONDS = 10.0
BACKFILL_SHOWN = 8  # intervals (2 hours) read back from a history before progress is shown
BACKLOG_SHOWN = 20  # batches waiting for the core before draining them shows progress


def check_environment(config: AgentConfig) -> None:
    """Check what the configuration points at: both keys usable, the buffer's folder writable.

    Raises:
        KeyFileError: a key file is missing, malformed or readable by others.
        ConfigError: ``buffer.path`` is in a folder the agent cannot write, or a file of
            ``[uplink.tls]`` is unusable.
        BufferDamaged: SQLite's quick check finds the buffer damaged.

    """
    load_signing_key(config.agent.signing_key_file)
    load_pseudonym_key(config.pseudonymization.key_file)
    _client_tls(config)
    folder = config.buffer.path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError("buffer.path", f"folder {folder} does not exist or is not writable")
    if config.buffer.path.exists():
        problems = damage(config.buffer.path)
        if problems:
            raise BufferDamaged(
                f"the buffer {config.buffer.path} is damaged ({problems[0]}); `edge-agent run`"
                " salvages what is intact into a new buffer and keeps the damaged file"
            )
        buffer = Buffer(config.buffer.path, read_only=True)
        try:
            _check_key_id(config, buffer.pseudonym_key_id())
        finally:
            buffer.close()


def _salvage_if_damaged(config: AgentConfig) -> None:
    """Check the buffer before trusting it; salvage a damaged one into a new buffer (an alarm)."""
    if not config.buffer.path.exists():
        return
    problems = damage(config.buffer.path)
    if not problems:
        return
    report = salvage(
        config.buffer.path,
        problems,
        synchronous=config.buffer.synchronous,
        max_bytes=config.buffer.max_bytes,
    )
    log.error(
        "ALARM the buffer was damaged (%s): salvaged into a new one, kept %s, lost %s;"
        " the damaged file is kept as %s",
        problems[0],
        report.kept,
        report.lost or "nothing",
        report.damaged_file,
    )


def _client_tls(config: AgentConfig) -> ClientTls | None:
    """``[uplink.tls]``'s files, read and checked (None: a plaintext uplink)."""
    if config.uplink.tls is None:
        return None
    return load_client_tls(config.uplink.tls, agent_id=config.agent.id)


def _check_key_id(config: AgentConfig, buffered: str | None) -> None:
    """The configured pseudonymization key must be the one the buffer's meters are under."""
    if buffered not in (None, config.pseudonymization.key_id):
        raise ConfigError(
            "pseudonymization.key_id",
            f"is {config.pseudonymization.key_id!r} but the buffered meters are pseudonymized"
            f" under {buffered!r}; switch keys with `edge-agent rotate-pseudonym-key`",
        )


@dataclass
class ValidationStatistics:
    """Counts of what validation did since the agent started."""

    readings: int = 0
    estimated: int = 0
    suspect: int = 0
    quarantined: int = 0
    dropped_rereads: int = 0
    late: int = 0  # real readings older than their meter's newest, replacing an estimate
    by_flag: collections.Counter[str] = field(default_factory=collections.Counter)

    def count(self, checked: Validation) -> None:
        """Add one poll's outcome."""
        for reading in checked.readings:
            flags = QualityFlag(reading.quality_flags)
            self.readings += 1
            self.estimated += bool(flags & QualityFlag.ESTIMATED)
            self.suspect += bool(flags & SUSPECT)
            for flag in flags:
                self.by_flag[flag.name or str(int(flag))] += 1
        self.quarantined += len(checked.quarantined)
        self.dropped_rereads += checked.dropped
        self.late += len(checked.late)


class EdgeAgent:
    """One substation gateway's agent. ``async with`` opens it; ``run()`` works until cancelled."""

    def __init__(self, config: AgentConfig) -> None:
        """Load the keys (checking their permissions) and open the buffer.

        Raises:
            KeyFileError: a key file is missing, malformed or readable by others.
            ConfigError: a file of ``[uplink.tls]`` is unusable.

        """
        self.config = config
        signing_key = load_signing_key(config.agent.signing_key_file)  # key errors before files
        keys = config.pseudonymization
        self._pseudonymizer = Pseudonymizer(
            key=load_pseudonym_key(keys.key_file), key_id=keys.key_id
        )
        self._tls = tls = _client_tls(config)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-buffer")
        _salvage_if_damaged(config)
        self.buffer = Buffer(
            config.buffer.path,
            synchronous=config.buffer.synchronous,
            max_bytes=config.buffer.max_bytes,
        )
        self.gauge = PressureGauge()
        try:
            _check_key_id(config, self.buffer.pseudonym_key_id())
        except ConfigError:
            self.buffer.close()
            raise
        self.buffer.adopt_pseudonym_key_id(config.pseudonymization.key_id)
        cursors = self.buffer.device_cursors()
        self.validation = ValidationStatistics()
        self.step = PollStep(
            self.buffer,
            self._pseudonymizer,
            Validator(config.validation),
            self.buffer.meter_memory(),
            self.buffer.device_meters(),  # meters behind each device
        )
        self.sources = [
            ModbusConcentrator(source, delivered_up_to=cursors.get(source.device, 0))
            for source in config.sources.modbus
        ]
        self.sealer = Sealer(
            agent_id=config.agent.id,
            signing_key=signing_key,
            pseudonym_key_id=config.pseudonymization.key_id,
            device_roles={source.device: source.role for source in config.sources.modbus},
        )
        self.breakers = {
            source.device: CircuitBreaker(
                failure_threshold=source.config.failure_threshold,
                reset_seconds=source.config.breaker_reset_seconds,
                max_reset_seconds=max(
                    BREAKER_MAX_RESET_SECONDS, source.config.breaker_reset_seconds
                ),
            )
            for source in self.sources
        }
        # None unless [metrics] listen is set: nobody could scrape it, so nothing is observed
        # and prometheus-client is not even loaded.
        self.metrics = _metrics() if config.metrics.listen else None
        self.uplink = Uplink(
            target=config.uplink.target,
            buffer=self.buffer,
            buffer_call=self.buffer_call,
            max_in_flight=config.uplink.max_in_flight,
            ack_timeout_seconds=config.uplink.ack_timeout_seconds,
            compression=config.uplink.compression,
            max_bytes_per_second=config.uplink.max_bytes_per_second,
            tls=tls,
            observe_round_trip=self.metrics.batch_round_trip_seconds.observe
            if self.metrics
            else None,
        )
        self._buffered = asyncio.Event()
        # Polls between pseudonymization and their commit: two keep the event loop validating
        # one while the I/O thread commits the other; more would only hold more readings in
        # memory, waiting for the same disk. Devices are read outside it, so a slow device
        # never holds a place.
        self._buffering = asyncio.Semaphore(2)
        self._pending_readings = 0
        self.mqtt = _mqtt_source(config.mqtt) if config.mqtt else None
        self.telemetry_validator = TelemetryValidator()
        self.telemetry: collections.Counter[str] = collections.Counter()
        self.source_errors: collections.Counter[str] = collections.Counter()
        self.stage_errors: collections.Counter[str] = collections.Counter()
        self._buffer_statistics: BufferStatistics | None = None
        self.started_ms = now_ms()
        self._backlog: Progress | None = None  # a backlog draining, while there is one
        self._health_writer = HealthWriter(health_path(config.buffer.path))
        self.device_health = {
            source.device: DeviceHealth(
                name=source.config.name,
                address=f"{source.config.host}:{source.config.port} unit {source.config.unit_id}",
            )
            for source in self.sources
        }
        self.core_health = CoreHealth(target=config.uplink.target)
        self.mqtt_health = (
            MqttHealth(broker=f"{config.mqtt.host}:{config.mqtt.port}") if config.mqtt else None
        )
        if self.metrics is not None:
            self.metrics.publish(self.snapshot)

    async def buffer_call(self, method: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """Run a blocking buffer method in the I/O thread (a commit's duration is observed)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(method, *args, **kwargs)
        name = getattr(call.func, "__name__", "")  # a partial (a checked poll's commit) unwraps
        if name in COMMITS:
            call = functools.partial(self._timed_commit, name, call)
        return await loop.run_in_executor(self._io, call)

    def _timed_commit(self, operation: str, call: Callable[[], Any]) -> Any:  # noqa: ANN401
        started = time.perf_counter()
        result = call()
        if self.metrics is not None:
            elapsed = time.perf_counter() - started
            self.metrics.buffer_commit_seconds.labels(operation).observe(elapsed)
        return result

    def snapshot(self) -> AgentSnapshot:
        """What the agent counted, and the buffer as last refreshed; reads memory only."""
        validation = self.validation
        uplink = self.uplink.statistics()
        return AgentSnapshot(
            buffer=self._buffer_statistics,
            now_ms=time.time_ns() // 1_000_000,
            breakers={s.config.name: self.breakers[s.device].state for s in self.sources},
            poll_errors=dict(self.source_errors),
            devices=list(self.device_health.values()),
            stage_errors=dict(self.stage_errors),
            readings_validated={
                "read": validation.readings - validation.estimated,
                "estimated": validation.estimated,
                "suspect": validation.suspect,
                "quarantined": validation.quarantined,
                "late": validation.late,
            },
            telemetry=dict(self.telemetry),
            uplink=uplink,
        )

    async def __aenter__(self) -> EdgeAgent:
        """Count what the buffer still holds from before a restart."""
        stats = await self.statistics()
        self._pending_readings = stats.pending_readings + stats.pending_telemetry
        if self._pending_readings:
            self._buffered.set()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Save validation profiles, close devices and the buffer; committed data stays."""
        with contextlib.suppress(EdgeError):
            await self.buffer_call(self.buffer.save_profiles, self.step.memory.saved_profiles())
        for source in self.sources:
            source.close()
        await self.buffer_call(self.buffer.close)
        self._io.shutdown(wait=True)

    async def statistics(self) -> BufferStatistics:
        """The buffer's counts (kept for the metrics too)."""
        self._buffer_statistics = await self.buffer_call(self.buffer.statistics)
        return self._buffer_statistics

    async def run(self) -> None:
        """Poll, seal, upload and prune until cancelled."""
        log.info(
            "agent %s started: %d concentrators, core %s",
            self.config.agent.id,
            len(self.sources),
            self.config.uplink.target,
        )
        if self.config.uplink.tls is None and not is_loopback(self.config.uplink.target):
            log.warning(
                "the uplink to %s is plaintext: meant for a VPN or private APN only; "
                "set [uplink.tls] for mutual TLS",
                self.config.uplink.target,
            )
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            f"poll[{source.config.name}]": functools.partial(self._poll_loop, source, index)
            for index, source in enumerate(self.sources)
        }
        loops |= {
            "seal": self._seal_loop,
            "uplink": self.uplink.run,
            "prune": self._prune_loop,
            "pressure": self._pressure_loop,
            "health": self._health_loop,
        }
        if self.mqtt is not None:
            loops["mqtt"] = functools.partial(self.mqtt.run, self.on_telemetry)
        listen = self.config.metrics.listen
        stop_metrics = (
            serve_metrics(self.metrics.registry, listen) if self.metrics and listen else None
        )
        if stop_metrics:
            loops["statistics"] = self._statistics_loop
        try:
            async with asyncio.TaskGroup() as tasks:
                for name, loop in loops.items():
                    tasks.create_task(self._supervised(name, loop), name=name)
                tasks.create_task(feed_watchdog(), name="watchdog")
                # The buffer is open and every source started: systemd may start what waits.
                notify("READY=1", f"STATUS=polling {len(self.sources)} concentrators")
        finally:
            notify("STOPPING=1")
            with contextlib.suppress(OSError):  # the doctor then knows it was stopped in order
                self._health_writer.write(self.health(stopped=True))
            if stop_metrics:
                stop_metrics()

    async def _statistics_loop(self) -> None:
        """Refresh the buffer's statistics for the metrics (a scrape never touches the buffer)."""
        while True:
            with contextlib.suppress(BufferUnavailable):
                await self.statistics()
            await asyncio.sleep(STATISTICS_SECONDS)

    def health(self, *, stopped: bool = False) -> AgentHealth:
        """What the agent knows that its buffer does not hold (``edge_agent.health``)."""
        self.core_health.stream_open = self.uplink.stream_open
        self.core_health.last_broken = self.uplink.last_broken
        if self.mqtt_health is not None and self.mqtt is not None:
            self.mqtt_health.connected = self.mqtt.connected
        return AgentHealth(
            agent_id=self.config.agent.id,
            pid=os.getpid(),
            started_ms=self.started_ms,
            written_ms=now_ms(),
            devices=list(self.device_health.values()),
            core=self.core_health,
            mqtt=self.mqtt_health,
            stopped_ms=now_ms() if stopped else 0,
        )

    async def _health_loop(self) -> None:
        """Ask the core's Health every minute; write the health record every few seconds."""
        checked = -CORE_CHECK_SECONDS
        while True:
            if time.monotonic() - checked >= CORE_CHECK_SECONDS:
                checked = time.monotonic()
                self.core_health = await check_core(
                    self.config.uplink.target,
                    self._tls,
                    timeout_seconds=CORE_CHECK_TIMEOUT_SECONDS,
                )
            try:
                await asyncio.to_thread(self._health_writer.write, self.health())
            except OSError as exc:  # a full disk: the buffer's own alarms say more
                log.debug("cannot write the health record: %s", exc)
            with contextlib.suppress(BufferUnavailable):
                self._follow_backlog((await self.statistics()).pending_batches)
            await asyncio.sleep(HEALTH_SECONDS)

    def _follow_backlog(self, pending: int) -> None:
        """Show a backlog of batches draining to the core (after an outage) until it is gone."""
        if self._backlog is None and pending >= BACKLOG_SHOWN:
            self._backlog = Progress("backlog to the core", pending, unit="batches", log=log)
        elif self._backlog is not None:
            self._backlog.set_done(max(self._backlog.done, self._backlog.total - pending))
            if pending == 0:
                self._backlog.close()
                self._backlog = None

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` for ever; after an unexpected error, log it and restart the loop.

        One misbehaving device or stage must not stop the others: the error is logged with its
        traceback, counted in ``stage_errors``, and the loop starts again after a pause.
        """
        while True:
            try:
                await loop()
            except Exception:
                self.stage_errors[name] += 1
                log.exception(
                    "%s failed unexpectedly; restarting it in %d s", name, RESTART_SECONDS
                )
                await asyncio.sleep(RESTART_SECONDS)

    async def _poll_loop(self, source: ModbusConcentrator, index: int = 0) -> None:
        """Poll one device for ever; a failing device is skipped while its breaker is open.

        Devices start staggered across one poll period, so a gateway's concentrators are not
        all asked at the same instant.
        """
        period = source.config.poll_interval_seconds
        breaker = self.breakers[source.device]
        await asyncio.sleep(period * index / max(1, len(self.sources)))
        health = self.device_health[source.device]
        while True:
            started = time.monotonic()
            if self.pressure == "paused":
                pass  # the buffer is nearly full: the concentrator's history keeps the intervals
            elif breaker.allow():
                try:
                    await self.poll_once(source)
                    if self.metrics is not None:
                        elapsed = time.monotonic() - started
                        self.metrics.poll_seconds.labels(source.config.name).observe(elapsed)
                except BufferUnavailable as exc:  # the disk, not the device: breaker untouched
                    log.warning(
                        "poll of %s not kept (%s); the concentrator keeps its intervals,"
                        " read again at the next poll",
                        source.config.name,
                        exc,
                    )
                except SourceError as exc:
                    self.source_errors[source.config.name] += 1
                    breaker.record_failure()
                    health.failed(exc)
                    log.warning(
                        "poll of %s failed (%s, breaker %s)", source.config.name, exc, breaker.state
                    )
                else:
                    breaker.record_success()
                    health.polled(
                        clock_offset_s=source.clock_offset_s,
                        newest_interval_end=source.last_interval_end,
                    )
            health.follow(breaker)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def poll_once(self, source: ModbusConcentrator) -> int:
        """Read one device once (backfill first, then live) and commit; return new readings.

        A backfill of more than a few intervals (after an outage) shows its progress.
        """
        fresh_total = 0
        backfill: Progress | None = None
        try:
            async for poll in source.poll():
                if backfill is None and poll.backfill >= BACKFILL_SHOWN:
                    what = f"backfill {source.config.name}"
                    backfill = Progress(what, poll.backfill, unit="intervals", log=log)
                async with self._buffering:
                    fresh = await self._buffer_poll(source, poll)
                source.delivered(poll)
                if backfill is not None and poll.backfill:  # not the live one read back
                    backfill.advance()
                fresh_total += fresh
                if fresh:
                    self._pending_readings += fresh
                    self._buffered.set()
                    log.log(
                        logging.DEBUG if backfill is not None else logging.INFO,
                        "%s: buffered %d new readings%s",
                        source.config.name,
                        fresh,
                        " from the history" if poll.from_history else "",
                    )
        finally:
            if backfill is not None:
                backfill.close()
        return fresh_total

    async def _buffer_poll(self, source: ModbusConcentrator, poll: Poll) -> int:
        """Pseudonymize, validate and commit one poll; validation's outcome is adopted after."""
        checked = self.step.check(
            poll.records,
            device=source.device,
            interval_end=poll.interval_end,
            poll_time_ms=poll.poll_time_ms,
        )
        fresh = await self.buffer_call(checked.commit)
        self.step.adopt(checked)  # only now: the commit succeeded
        await self.check_pressure()
        self.validation.count(checked.validation)
        return fresh

    async def on_telemetry(self, topic: str, transformer: str, payload: bytes) -> None:
        """Check, validate and commit one MQTT message; a bad one goes to quarantine, raw.

        Returns only once the message is committed (as points or in quarantine), so the MQTT
        source acknowledges nothing that is not on disk.
        """
        try:
            message = decode(payload, transformer=transformer, topic=topic)
        except Malformed as exc:
            reason = str(exc)
            kind = reason.split(maxsplit=1)[0].rstrip(":")
            if self.telemetry[f"malformed:{kind}"] == 0:
                log.warning("quarantined a malformed message on %s: %s", topic, reason)
            self.telemetry[f"malformed:{kind}"] += 1
            await self._waiting_for_space(
                functools.partial(
                    self.buffer.put_quarantine,
                    source="mqtt",
                    device=topic,
                    reason=reason,
                    payload=payload,
                )
            )
            return
        if self.pressure == "paused" or (
            self.pressure == "shedding"
            and (message.time_ms // 60_000) % TELEMETRY_KEEP_EVERY_MINUTES
        ):
            self.telemetry["shed"] += 1  # sensor detail goes first, billing data never
            return
        if self.mqtt_health is not None:
            self.mqtt_health.last_message_ms[transformer or topic] = now_ms()
        points = self.telemetry_validator.validate(message)
        if points is None:
            self.telemetry["duplicate"] += 1
            return
        self._pending_readings += await self._waiting_for_space(
            functools.partial(self.buffer.put_telemetry, points)
        )
        self.telemetry_validator.adopt(message)  # only now: the commit succeeded
        self.telemetry["messages"] += 1
        self._buffered.set()

    async def _waiting_for_space(self, commit: Callable[[], int | None]) -> int:
        """Commit one MQTT message's rows, trying again every second while the buffer refuses.

        The message stays unacknowledged with the broker meanwhile (its in-flight limit holds
        the rest back), and is acknowledged once on disk, without a reconnect or a copy.
        Returns the rows committed (0 for a quarantined message).
        """
        waiting = False
        while True:
            try:
                return await self.buffer_call(commit) or 0
            except BufferUnavailable as exc:
                if not waiting:
                    log.warning("MQTT message waits for the buffer (%s), tried every second", exc)
                waiting = True
                await asyncio.sleep(BUFFER_RETRY_SECONDS)

    async def _seal_loop(self) -> None:
        """Seal pending readings once a batch is full or its oldest reading is old enough."""
        max_readings = self.config.uplink.batch_max_readings
        while True:
            await self._buffered.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.uplink.batch_max_age_seconds):
                    while self._pending_readings < max_readings:
                        self._buffered.clear()
                        await self._buffered.wait()
            self._buffered.clear()
            try:
                await self.seal_pending()
            except BufferUnavailable as exc:
                log.error("cannot seal, retrying within %d s: %s", SEAL_RETRY_SECONDS, exc)  # noqa: TRY400
                # Sooner when a poll or a message commits again (the disk has room again),
                # but never more than once a second: small commits may pass where a seal fails.
                await asyncio.sleep(SEAL_RETRY_MIN_SECONDS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._buffered.wait(), SEAL_RETRY_SECONDS - SEAL_RETRY_MIN_SECONDS
                    )
                self._buffered.set()

    async def seal_pending(self) -> int:
        """Seal every pending reading into batches; return how many batches were made."""
        made = 0
        while await self.buffer_call(
            self.buffer.seal_batch, self.sealer, max_readings=self.config.uplink.batch_max_readings
        ):
            made += 1
            self.uplink.notify()
        # Recount rather than subtract: polls may have committed while the seals ran.
        stats = await self.statistics()
        self._pending_readings = stats.pending_readings + stats.pending_telemetry
        return made

    async def _pressure_loop(self) -> None:
        """Watch the buffer's fill and shed load before the cap is reached.

        The levels are the gauge's (``sinks.pressure``). Shedding: acknowledged batches kept
        for resend are dropped and telemetry is thinned to one value every 5 minutes. Paused:
        no new intervals are read and telemetry is dropped; the concentrators' history keeps
        the intervals for backfill. Every change of level
        is logged as an alarm and written to the buffer, so ``edge-agent status`` shows it.
        """
        while True:
            level = await self.check_pressure()
            if level != "normal":
                await self.buffer_call(self.buffer.prune, retain_seconds=0)
                shed = await self.buffer_call(
                    self.buffer.shed_telemetry, keep_every_minutes=TELEMETRY_KEEP_EVERY_MINUTES
                )
                self.telemetry["shed"] += shed
            await asyncio.sleep(PRESSURE_CHECK_SECONDS)

    @property
    def pressure(self) -> str:
        """The buffer's pressure level now: normal, shedding or paused (``sinks.pressure``)."""
        return self.gauge.level

    async def check_pressure(self) -> str:
        """Measure the buffer's fill, change level (and raise the alarm) if needed."""
        fill = await self.buffer_call(self.buffer.fill)
        before = self.gauge.level
        level = self.gauge.read(fill)
        if level != before:
            log.log(
                logging.INFO if level == "normal" else logging.ERROR,
                "ALARM buffer %.0f %% full: %s -> %s",
                fill * 100,
                before,
                level,
            )
            self.uplink.keep_delivered = level == "normal"
            await self.buffer_call(self.buffer.set_pressure, level)
        return level

    async def _prune_loop(self) -> None:
        while True:
            try:
                pruned = await self.buffer_call(
                    self.buffer.prune, retain_seconds=self.config.buffer.retain_acknowledged_seconds
                )
            except BufferUnavailable as exc:
                log.warning("cannot prune the buffer: %s", exc)
            else:
                if pruned:
                    log.info("pruned %d acknowledged batches past retention", pruned)
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)


# Optional features load their libraries only when configured: a gateway keeps in memory what
# it uses (aiomqtt and paho about 2.5 MB, prometheus-client and its HTTP server 1.5 to 3 MB).


def _metrics() -> EdgeMetrics:
    """The agent's prometheus-client registry, for ``[metrics] listen``."""
    from edge_agent.metrics import EdgeMetrics  # noqa: PLC0415 - see above

    return EdgeMetrics()


def _mqtt_source(config: MqttConfig) -> MqttSource:
    """The transformer telemetry subscription, for ``[mqtt]``."""
    from edge_agent.sources.mqtt import MqttSource  # noqa: PLC0415 - see above

    return MqttSource(config)
