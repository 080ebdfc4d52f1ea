"""``edge-agent doctor``: what is wrong at this gateway, and what to do about it.

Each finding names a part (the agent, a device, MQTT, the buffer, the uplink, the clocks, the
keys), says what was seen and, when something needs doing, what to do. While the agent runs,
what only it knows (devices, broker, core) comes from its health record (``edge_agent.health``);
when it does not, the doctor probes for itself. The buffer is read directly either way (read
only, beside a running agent), and the keys and certificates are checked on disk. Nothing here
needs the core to be reachable: an unreachable core is one of the findings.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from edge_agent.config import AgentConfig, ModbusSourceConfig
from edge_agent.errors import EdgeError
from edge_agent.health import (
    AgentHealth,
    CoreHealth,
    DeviceHealth,
    health_path,
    is_running,
    now_ms,
    read_health,
)
from edge_agent.keys import load_client_tls, load_pseudonym_key, load_signing_key
from edge_agent.probe import probe_modbus, probe_mqtt
from edge_agent.sinks.buffer import Buffer, BufferStatistics, DeliveryRecord
from edge_agent.sinks.uplink import check_core
from proto.diagnosis import ACTION, OK, WARN, Finding, as_json, iso, needs_action, render, when

CLOCK_RESOLUTION_SECONDS = 1.5  # whole seconds in the register, and half a round trip
CLOCK_WARN_SECONDS = 10.0  # device or gateway clock off by more: a warning
CLOCK_ACTION_SECONDS = 30.0  # off by more: set the clock (interval ends carry device time)
CERTIFICATE_ACTION_DAYS = 30  # renew a TLS certificate this long before it expires
BACKLOG_WARN_SECONDS = 3_600  # readings waiting longer than this for the core: a warning
FILL_WARN = 0.5  # the buffer's fill (below the shedding level) that deserves a look
DISK_ACTION_BYTES = 100 * 1024 * 1024  # free space on the buffer's disk below this: act
SILENT_TRANSFORMER_SECONDS = 900  # no MQTT message from a transformer for this long
CORE_TIMEOUT_SECONDS = 5.0

# What to do about a device failing in each way (SourceError.kind).
DEVICE_ADVICE = {
    "unreachable": "check the concentrator's power, cable and IP address, then"
    " `edge-agent probe modbus {address}`",
    "no_reply": "it takes connections but does not answer: check the unit id, that no other"
    " master polls it, and power-cycle it; `edge-agent probe modbus {address}`",
    "exception": "it answers with Modbus exceptions: check the unit id and that it speaks"
    " register map version 1",
    "malformed": "it answers outside the register map: check word_order and byte_order in"
    " [[sources.modbus]]; `edge-agent probe modbus {address}`",
    "buffer": "its readings could not be committed: see BUFFER",
    "failed": "see the agent's log: `journalctl -u edge-agent`",
}


HEADINGS = {
    "agent": "AGENT",
    "device": "DEVICES",
    "mqtt": "MQTT",
    "buffer": "BUFFER",
    "uplink": "UPLINK",
    "clock": "CLOCK",
    "keys": "KEYS AND CERTIFICATES",
}


@dataclass
class Diagnosis:
    """All findings, and how they were made."""

    agent_id: str
    checked_ms: int
    agent_running: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def needs_action(self) -> bool:
        """Whether any finding needs action (the command's exit code is then 1)."""
        return needs_action(self.findings)

    def as_json(self) -> dict[str, Any]:
        """For ``--json``: the findings, with times as ISO 8601."""
        title = {"agent_id": self.agent_id, "agent_running": self.agent_running}
        return as_json(title, self.checked_ms, self.findings)

    def screen(self) -> str:
        """The findings on one 80-column screen."""
        title = f"edge-agent doctor: agent {self.agent_id}, {iso(self.checked_ms)}"
        return render(title, HEADINGS, self.findings)


async def diagnose(config: AgentConfig) -> Diagnosis:
    """Look at everything and say what stands how."""
    checked = now_ms()
    path = health_path(config.buffer.path)
    unreadable: Finding | None = None
    try:
        health = read_health(path)
    except PermissionError:
        health = None
        unreadable = Finding(
            "agent",
            str(path),
            ACTION,
            "this user may not read the agent's health record; devices, broker and core"
            " probed by the doctor itself",
            "run the doctor as the agent's user or root: `sudo -u edge-agent edge-agent doctor`",
        )
    running = health is not None and is_running(health, at_ms=checked)
    diagnosis = Diagnosis(config.agent.id, checked, running)
    found = diagnosis.findings
    found.append(unreadable or _agent(health if running else None, health, checked))
    # The core is asked now either way: the agent's own check may be a minute old.
    core = await check_core(
        config.uplink.target, _tls_or_none(config), timeout_seconds=CORE_TIMEOUT_SECONDS
    )
    if running and health is not None:
        found += [_device(device, checked) for device in health.devices]
        found += _mqtt_running(config, health, checked)
        core.stream_open, core.last_broken = health.core.stream_open, health.core.last_broken
    else:
        found += await _devices_probed(config)
        found += await _mqtt_probed(config)
    buffered, delivery = _buffer(config, checked)
    found += buffered
    found += [_core(core, delivery, checked, running=running), _clock(core)]
    found += _keys(config, checked)
    return diagnosis


def _agent(running: AgentHealth | None, last: AgentHealth | None, at_ms: int) -> Finding:
    if running is not None:
        return Finding(
            "agent",
            f"pid {running.pid}",
            OK,
            f"running since {when(running.started_ms, at_ms)}; figures below are its own",
        )
    seen = "not running"
    if last is not None and last.stopped_ms:
        seen += f" (stopped {when(last.stopped_ms, at_ms)})"
    elif last is not None:
        seen += f" (last alive {when(last.written_ms, at_ms)}: killed or crashed)"
    return Finding(
        "agent",
        "edge-agent",
        ACTION,
        seen + "; devices, broker and core probed by the doctor itself",
        "start it: `systemctl start edge-agent`; why it stopped: `journalctl -u edge-agent`",
    )


def _device(device: DeviceHealth, at_ms: int) -> Finding:
    """A device as the running agent's poll loop saw it."""
    address = device.address.replace(" unit ", " --unit ")
    if device.reachable is None and not device.errors:
        return Finding("device", device.name, WARN, f"{device.address}: not polled yet")
    if device.last_attempt_ms != device.last_good_ms:
        kind = device.last_error_kind or "failed"
        seen = f"{device.address}: {KIND_WORDS.get(kind, kind)} since"
        seen += f" {when(device.failing_since_ms, at_ms)}"
        seen += f"; failed polls: {_counts(device.errors)}"
        if device.last_good_ms:
            seen += f"; last good read {when(device.last_good_ms, at_ms)}"
        if device.breaker == "open" and device.next_trial_ms > at_ms:
            seen += f"; breaker open, next try {when(device.next_trial_ms, at_ms)}"
        elif device.breaker != "closed":
            seen += "; breaker open, a try is due now"
        return Finding(
            "device", device.name, ACTION, seen, DEVICE_ADVICE[kind].format(address=address)
        )
    seen = f"{device.address}: read {when(device.last_good_ms, at_ms)}"
    if device.newest_interval_end:
        seen += f", newest interval {when(device.newest_interval_end * 1000, at_ms)}"
    return _with_clock(Finding("device", device.name, OK, seen), device.clock_offset_s)


KIND_WORDS = {
    "unreachable": "unreachable",
    "no_reply": "not answering (connects, no reply)",
    "exception": "answering with exceptions",
    "malformed": "answering outside the register map",
    "buffer": "read, but not committed",
    "failed": "failing",
}


def _with_clock(finding: Finding, offset: float | None) -> Finding:
    """Add the device's clock to an answering device's finding, raised when far off."""
    if offset is None:
        return Finding(
            finding.part, finding.subject, finding.state, finding.seen + "; clock not reported"
        )
    seen = f"{finding.seen}; clock {_offset(offset)} the gateway's"
    if abs(offset) <= CLOCK_WARN_SECONDS:
        return Finding(finding.part, finding.subject, finding.state, seen)
    state = ACTION if abs(offset) > CLOCK_ACTION_SECONDS else WARN
    return Finding(
        finding.part,
        finding.subject,
        state,
        seen,
        "set the concentrator's clock (its time source or NTP): readings carry its interval"
        " ends, so a wrong clock shifts them",
    )


async def _devices_probed(config: AgentConfig) -> list[Finding]:
    """Each configured device asked once, all at the same time."""
    return list(await asyncio.gather(*(_device_probed(source) for source in config.sources.modbus)))


async def _device_probed(source: ModbusSourceConfig) -> Finding:
    probe = await probe_modbus(source, count=0)
    address = f"{source.host}:{source.port} unit {source.unit_id}"
    if not probe.ok or probe.header is None:
        advice = DEVICE_ADVICE.get(probe.kind, DEVICE_ADVICE["failed"])
        return Finding(
            "device",
            source.name,
            ACTION,
            f"{address}: {KIND_WORDS.get(probe.kind, probe.kind)} ({probe.error})",
            advice.format(address=address.replace(" unit ", " --unit ")),
        )
    header = probe.header
    meters = header.meter_count
    seen = f"{address}: answers, {meters} meter{'s' if meters != 1 else ''}"
    if header.last_interval_end:
        seen += f", newest interval {when(header.last_interval_end * 1000, now_ms())}"
    return _with_clock(Finding("device", source.name, OK, seen), probe.clock_offset_s)


def _mqtt_running(config: AgentConfig, health: AgentHealth, at_ms: int) -> list[Finding]:
    mqtt, seen_by = config.mqtt, health.mqtt
    if mqtt is None or seen_by is None:
        return []
    if not seen_by.connected:
        return [_broker_down(seen_by.broker, "the agent is not connected")]
    found = [Finding("mqtt", seen_by.broker, OK, "connected")]
    for transformer in sorted({t.transformer_id for t in mqtt.transformers}):
        last = seen_by.last_message_ms.get(transformer)
        if last is not None and at_ms - last <= SILENT_TRANSFORMER_SECONDS * 1000:
            found.append(Finding("mqtt", transformer, OK, f"last message {when(last, at_ms)}"))
            continue
        seen = f"last message {when(last, at_ms)}" if last else "no message since the agent started"
        found.append(
            Finding(
                "mqtt",
                transformer,
                WARN,
                seen,
                "check the sensor's gateway and its topic: `edge-agent probe mqtt`",
            )
        )
    return found


async def _mqtt_probed(config: AgentConfig) -> list[Finding]:
    mqtt = config.mqtt
    if mqtt is None:
        return []
    probe = await probe_mqtt(mqtt.host, mqtt.port, {}, listen_seconds=0)
    if not probe.connected:
        return [_broker_down(probe.broker, probe.error)]
    return [Finding("mqtt", probe.broker, OK, "the broker accepts connections")]


def _broker_down(broker: str, why: str) -> Finding:
    return Finding(
        "mqtt",
        broker,
        ACTION,
        f"broker unreachable ({why}); transformers queue at their side or are lost",
        "check the broker: `systemctl status mosquitto`, and [mqtt] host and port",
    )


def _buffer(config: AgentConfig, at_ms: int) -> tuple[list[Finding], DeliveryRecord | None]:
    """The buffer's findings, and its delivery record for the uplink's (None: unreadable)."""
    path = config.buffer.path
    if not path.exists():
        return [Finding("buffer", str(path), WARN, "no buffer yet", "start the agent")], None
    try:
        buffer = Buffer(path, read_only=True)
        try:
            stats, delivery = buffer.statistics(), buffer.delivery()
        finally:
            buffer.close()
    except EdgeError as exc:
        return [
            Finding("buffer", str(path), ACTION, str(exc), "see `edge-agent check-config`")
        ], None
    found = [
        _buffer_fill(config, path, stats),
        _disk(path),
        _backlog(stats, delivery, at_ms),
        *_refused(delivery),
    ]
    return found, delivery


def _buffer_fill(config: AgentConfig, path: Path, stats: BufferStatistics) -> Finding:
    wal = Path(f"{path}-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    seen = (
        f"{stats.fill:.0%} of {_size(config.buffer.max_bytes)} used, pressure {stats.pressure};"
        f" file {_size(path.stat().st_size)}, WAL {_size(wal_bytes)}"
    )
    if stats.pressure != "normal":
        return Finding(
            "buffer",
            "fill",
            ACTION,
            seen + (": polling paused" if stats.pressure == "paused" else ": telemetry thinned"),
            "get batches delivered (see UPLINK), or raise buffer.max_bytes if the disk has room",
        )
    if stats.fill > FILL_WARN:
        return Finding("buffer", "fill", WARN, seen, "watch the uplink: the buffer is filling")
    return Finding("buffer", "fill", OK, seen)


def _disk(path: Path) -> Finding:
    usage = shutil.disk_usage(path.parent)
    seen = f"{_size(usage.free)} free of {_size(usage.total)} on {path.parent}"
    if usage.free < DISK_ACTION_BYTES:
        return Finding(
            "buffer", "disk", ACTION, seen, "free space there: the buffer cannot grow, nor the WAL"
        )
    return Finding("buffer", "disk", OK, seen)


def _backlog(stats: BufferStatistics, delivery: DeliveryRecord, at_ms: int) -> Finding:
    waiting = [t for t in (stats.oldest_pending_poll_ms, delivery.oldest_pending_batch_ms) if t]
    seen = (
        f"{stats.pending_batches} batches and {stats.pending_readings + stats.pending_telemetry}"
        " values unsent"
    )
    if not waiting:
        return Finding("buffer", "backlog", OK, seen)
    oldest = min(waiting)
    seen += f", oldest {when(oldest, at_ms)}"
    if at_ms - oldest > BACKLOG_WARN_SECONDS * 1000:
        return Finding("buffer", "backlog", WARN, seen, "see UPLINK: the core is not taking them")
    return Finding("buffer", "backlog", OK, seen)


def _refused(delivery: DeliveryRecord) -> list[Finding]:
    if not delivery.refused:
        return []
    return [
        Finding(
            "buffer",
            "refused",
            ACTION,
            f"the core refused {_counts(delivery.refused)} (kept on disk)",
            "ask central operations why (`core-ingest agents list`); once fixed,"
            " `edge-agent resend --from-sequence N` (`edge-agent status` lists them)",
        )
    ]


def _core(
    core: CoreHealth, delivery: DeliveryRecord | None, at_ms: int, *, running: bool
) -> Finding:
    last = ""
    if delivery is not None and delivery.last_answer_ms:
        last = (
            f"; last answer {when(delivery.last_answer_ms, at_ms)}"
            f" (batch {delivery.last_answer_sequence})"
        )
    if not core.reachable:
        return Finding(
            "uplink",
            core.target,
            ACTION,
            f"core unreachable ({core.detail.split(';')[0]}){last}; batches wait in the buffer",
            "check the WAN link and the core (`core-ingest doctor` at the center);"
            " nothing is lost while the buffer has room",
        )
    seen = f"core {core.version} answers in {(core.round_trip_s or 0) * 1000:.0f} ms"
    if not core.serving:
        return Finding(
            "uplink",
            core.target,
            ACTION,
            f"{seen} but cannot reach its database ({core.detail}){last}; batches wait",
            "tell central operations: the core's database is down",
        )
    if running:
        seen += (
            "; stream open"
            if core.stream_open
            else f"; no stream ({core.last_broken or 'nothing sent yet'})"
        )
    return Finding("uplink", core.target, OK, seen + last)


def _clock(core: CoreHealth) -> Finding:
    offset = core.clock_offset_s
    if offset is None:
        return Finding("clock", "gateway", WARN, "not compared: the core did not answer")
    seen = f"gateway clock {_offset(offset)} the core's"
    if abs(offset) <= CLOCK_WARN_SECONDS:
        return Finding("clock", "gateway", OK, seen)
    return Finding(
        "clock",
        "gateway",
        ACTION if abs(offset) > CLOCK_ACTION_SECONDS else WARN,
        seen,
        "fix the gateway's time: `timedatectl status` (NTP synchronized?)",
    )


def _keys(config: AgentConfig, at_ms: int) -> list[Finding]:
    checks: list[tuple[str, Callable[[], object]]] = [
        (
            str(config.agent.signing_key_file),
            lambda: load_signing_key(config.agent.signing_key_file),
        ),
        (
            str(config.pseudonymization.key_file),
            lambda: load_pseudonym_key(config.pseudonymization.key_file),
        ),
    ]
    tls = config.uplink.tls
    if tls is not None:
        checks.append((str(tls.cert), lambda: load_client_tls(tls, agent_id=config.agent.id)))
    found = []
    for subject, check in checks:
        try:
            check()
        except EdgeError as exc:
            found.append(
                Finding("keys", subject, ACTION, str(exc), "`edge-agent check-config` says more")
            )
        else:
            found.append(Finding("keys", subject, OK, "present, readable by the agent only"))
    if tls is not None and tls.cert.exists():
        found.append(_certificate(tls.cert, at_ms))
    return found


def _certificate(path: Path, at_ms: int) -> Finding:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Finding("keys", str(path), ACTION, f"unreadable certificate: {exc}")
    expires_ms = int(certificate.not_valid_after_utc.timestamp() * 1000)
    days = (expires_ms - at_ms) / 86_400_000
    seen = f"certificate expires {when(expires_ms, at_ms)}"
    if days > CERTIFICATE_ACTION_DAYS:
        return Finding("keys", str(path), OK, seen)
    return Finding(
        "keys",
        str(path),
        ACTION,
        seen + (" (expired)" if days < 0 else ""),
        "renew it: `core-ingest ca issue-agent` at the center, then restart the agent",
    )


def _tls_or_none(config: AgentConfig) -> Any:  # noqa: ANN401 - ClientTls or None
    """The uplink's TLS material for the doctor's own core check (None when unusable)."""
    if config.uplink.tls is None:
        return None
    try:
        return load_client_tls(config.uplink.tls, agent_id=config.agent.id)
    except EdgeError:
        return None  # the keys finding says why; the check then fails as the agent would


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))


def _offset(seconds: float) -> str:
    if abs(seconds) < CLOCK_RESOLUTION_SECONDS:
        return "within a second of"
    return f"{abs(seconds):.0f} s {'ahead of' if seconds > 0 else 'behind'}"


def _size(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
