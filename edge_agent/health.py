"""The agent's health as it sees it: devices, MQTT and the core, written beside the buffer.

What the buffer cannot say (whether a device answers now, its clock, whether the broker and
the core are reachable, how long a round trip takes) lives only in the running agent's memory.
The agent writes it to ``<buffer>.health.json`` every ``HEALTH_SECONDS`` (a new file renamed
over the old one: a reader never sees half of it), so ``edge-agent doctor`` reads it when it is
fresh and probes for itself when it is not (the agent is stopped). Diagnostics only: nothing
the agent stores or sends depends on this file, and losing it loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import msgspec

from edge_agent.errors import SourceError
from edge_agent.sources.breaker import CircuitBreaker

HEALTH_SECONDS = 10.0  # how often the running agent rewrites its health record
STALE_AFTER_SECONDS = 3 * HEALTH_SECONDS  # older than this: the agent is not running


def now_ms() -> int:
    """The gateway's clock, Unix milliseconds."""
    return time.time_ns() // 1_000_000


class DeviceHealth(msgspec.Struct, kw_only=True):
    """One concentrator as the poll loop last saw it."""

    name: str
    address: str  # host:port unit N
    reachable: bool | None = None  # the last attempt's outcome; None before the first
    last_attempt_ms: int = 0
    last_good_ms: int = 0
    failing_since_ms: int = 0  # the first failure of the current run of failures; 0 if none
    errors: dict[str, int] = msgspec.field(default_factory=dict)  # SourceError.kind -> count
    last_error: str = ""
    last_error_kind: str = ""
    breaker: str = "closed"
    next_trial_ms: int = 0  # when an open breaker lets the next poll through
    clock_offset_s: float | None = None  # device clock - gateway clock, last header read
    newest_interval_end: int = 0  # the newest interval committed, Unix seconds

    def polled(self, *, clock_offset_s: float | None, newest_interval_end: int) -> None:
        """A poll succeeded: the device answers and its readings are committed."""
        self.reachable = True
        self.last_attempt_ms = self.last_good_ms = now_ms()
        self.failing_since_ms = 0
        self.clock_offset_s = clock_offset_s
        self.newest_interval_end = newest_interval_end

    def failed(self, error: Exception) -> None:
        """A poll failed; counted by kind (a buffer that cannot take the poll is ``buffer``)."""
        kind = error.kind if isinstance(error, SourceError) else "buffer"
        self.reachable = kind not in ("unreachable", "no_reply")
        self.last_attempt_ms = now_ms()
        self.failing_since_ms = self.failing_since_ms or self.last_attempt_ms
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = str(error)
        self.last_error_kind = kind

    def follow(self, breaker: CircuitBreaker) -> None:
        """Copy the breaker's state, and when its next trial is due."""
        self.breaker = breaker.state
        wait = breaker.seconds_to_trial()
        self.next_trial_ms = now_ms() + round(wait * 1000) if wait else 0


class MqttHealth(msgspec.Struct, kw_only=True):
    """The broker connection and the last message from each transformer."""

    broker: str  # host:port
    connected: bool = False
    last_message_ms: dict[str, int] = msgspec.field(default_factory=dict)  # transformer -> ms


class CoreHealth(msgspec.Struct, kw_only=True):
    """The core as the agent last checked it (``Uplink.check_core``)."""

    target: str
    reachable: bool | None = None  # None: not checked yet
    serving: bool = False  # the core reaches its database
    checked_ms: int = 0
    version: str = ""
    detail: str = ""  # why not reachable or not serving
    clock_offset_s: float | None = None  # gateway clock - core clock
    round_trip_s: float | None = None
    stream_open: bool = False  # the uplink has a stream open now (agent running only)
    last_broken: str = ""  # why the last stream ended (agent running only)


class AgentHealth(msgspec.Struct, kw_only=True):
    """Everything the running agent knows that its buffer does not hold."""

    agent_id: str
    pid: int
    started_ms: int
    written_ms: int
    devices: list[DeviceHealth]
    core: CoreHealth
    mqtt: MqttHealth | None = None
    stopped_ms: int = 0  # set by an agent that stopped in order; 0 while it runs


def health_path(buffer_path: Path) -> Path:
    """Where the agent whose buffer is ``buffer_path`` writes its health record."""
    return buffer_path.with_name(buffer_path.name + ".health.json")


class HealthWriter:
    """Writes one agent's health record, one write at a time; nothing after the last one.

    The agent writes from a worker thread every few seconds and once more, marked stopped,
    as it stops: a write still in flight then must not land after (and over) the last one.
    """

    def __init__(self, path: Path) -> None:
        """Write to ``path`` (``health_path`` of the buffer)."""
        self.path = path
        self._lock = threading.Lock()
        self._stopped = False

    def write(self, health: AgentHealth) -> None:
        """Replace the record in one rename (no fsync: it is rewritten in seconds)."""
        with self._lock:
            if self._stopped:
                return
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_bytes(msgspec.json.encode(health))
            temporary.replace(self.path)
            self._stopped = bool(health.stopped_ms)


def read_health(path: Path) -> AgentHealth | None:
    """The record the agent last wrote, or None (never written, or not a record).

    Raises:
        PermissionError: the record exists and this user may not read it (the doctor says so
            rather than taking the agent for stopped).

    """
    try:
        data = path.read_bytes()
    except PermissionError:
        raise
    except OSError:
        return None
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        return msgspec.json.decode(data, type=AgentHealth)
    return None


def is_running(health: AgentHealth, *, at_ms: int) -> bool:
    """Whether the agent that wrote the record runs: not stopped, recent, its process alive."""
    if health.stopped_ms or at_ms - health.written_ms > STALE_AFTER_SECONDS * 1000:
        return False
    try:
        os.kill(health.pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False  # killed, not stopped in order: its last record is still recent
    except PermissionError:
        return True  # it exists, under the agent's user
    return True
