"""The agent's Prometheus metrics (``[metrics] listen``), through prometheus-client.

Imported only when ``[metrics] listen`` is set: an agent nobody scrapes does not load
prometheus-client and its HTTP machinery (1.5 to 3 MB of a gateway's memory) to observe
histograms nobody reads.

Latency histograms are observed where things happen: a device's poll (read, validate, commit),
each buffer commit, each batch's round trip to the core. Everything else is read at each scrape
from the agent's last ``snapshot()``: counters it keeps as plain integers, and the buffer's
statistics as of the last refresh (the scrape runs on prometheus-client's thread, which must
never touch the buffer's SQLite connection).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_agent.health import DeviceHealth
from edge_agent.sinks.buffer import PRESSURE_LEVELS, BufferStatistics
from edge_agent.snapshot import AgentSnapshot

log = logging.getLogger(__name__)

POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUND_TRIP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class EdgeMetrics:
    """The agent's registry: three latency histograms and the snapshot's counters."""

    def __init__(self) -> None:
        """A registry of its own (tests run several agents in one process)."""
        self.registry = CollectorRegistry()
        self.poll_seconds = Histogram(
            "meterpipe_edge_poll_seconds",
            "One poll of a device: read, pseudonymize, validate, commit",
            ["device"],
            registry=self.registry,
            buckets=POLL_BUCKETS,
        )
        self.buffer_commit_seconds = Histogram(
            "meterpipe_edge_buffer_commit_seconds",
            "One commit to the buffer, by operation",
            ["operation"],
            registry=self.registry,
            buckets=COMMIT_BUCKETS,
        )
        self.batch_round_trip_seconds = Histogram(
            "meterpipe_edge_batch_round_trip_seconds",
            "From sending a batch to the core's answer",
            registry=self.registry,
            buckets=ROUND_TRIP_BUCKETS,
        )

    def publish(self, snapshot: Callable[[], AgentSnapshot]) -> None:
        """Read ``snapshot()`` at every scrape."""
        self.registry.register(_SnapshotCollector(snapshot))


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], AgentSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        now = self.snapshot()
        if now.buffer is not None:
            yield from _buffer(now.buffer, now.now_ms)
        yield from _devices(now.devices)
        yield _labelled(
            CounterMetricFamily, "poll_errors", "Failed polls, by device", "device", now.poll_errors
        )
        yield _labelled(
            CounterMetricFamily,
            "stage_errors",
            "Unexpected failures of a loop (restarted), by loop",
            "stage",
            now.stage_errors,
        )
        yield _labelled(
            GaugeMetricFamily,
            "breaker_open",
            "1 while a device's circuit breaker is open (0.5 half open)",
            "device",
            {d: {"open": 1.0, "half_open": 0.5}.get(s, 0.0) for d, s in now.breakers.items()},
        )
        yield _labelled(
            CounterMetricFamily,
            "readings_validated",
            "Readings through validation, by outcome",
            "outcome",
            now.readings_validated,
        )
        yield _labelled(
            CounterMetricFamily,
            "telemetry_messages",
            "MQTT messages, by outcome",
            "outcome",
            now.telemetry,
        )
        uplink = now.uplink
        yield _labelled(
            CounterMetricFamily,
            "batches_answered",
            "Core answers, by answer",
            "answer",
            uplink.answers,
        )
        yield CounterMetricFamily(
            "meterpipe_edge_uplink_bytes", "Batch bytes sent", value=uplink.bytes_sent
        )
        yield CounterMetricFamily(
            "meterpipe_edge_uplink_sessions", "Streams opened", value=uplink.sessions
        )
        yield GaugeMetricFamily(
            "meterpipe_edge_batches_unanswered",
            "Sent, answer not recorded",
            value=uplink.unanswered,
        )


def _labelled(
    family: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    help_text: str,
    label: str,
    values: dict[str, float] | dict[str, int],
) -> Metric:
    metric = family(f"meterpipe_edge_{name}", help_text, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric


def _devices(devices: list[DeviceHealth]) -> Iterator[Metric]:
    """Each device's poll health: answering, last good read, clock, errors by kind."""
    up = GaugeMetricFamily(
        "meterpipe_edge_device_up",
        "1 if the device's last poll succeeded, 0 if it failed (absent before the first)",
        labels=["device"],
    )
    last_good = GaugeMetricFamily(
        "meterpipe_edge_device_last_good_poll_timestamp_seconds",
        "When the device was last read and its readings committed (Unix time)",
        labels=["device"],
    )
    clock = GaugeMetricFamily(
        "meterpipe_edge_device_clock_offset_seconds",
        "The device's clock minus the gateway's, at the last header read",
        labels=["device"],
    )
    errors = CounterMetricFamily(
        "meterpipe_edge_device_errors",
        "Failed polls by kind: unreachable, no_reply, exception, malformed, buffer, failed",
        labels=["device", "kind"],
    )
    for device in devices:
        if device.reachable is not None:
            up.add_metric([device.name], float(device.last_good_ms == device.last_attempt_ms))
        if device.last_good_ms:
            last_good.add_metric([device.name], device.last_good_ms / 1000)
        if device.clock_offset_s is not None:
            clock.add_metric([device.name], device.clock_offset_s)
        for kind, count in sorted(device.errors.items()):
            errors.add_metric([device.name, kind], count)
    yield from (up, last_good, clock, errors)


def _buffer(stats: BufferStatistics, now_ms: int) -> Iterator[Metric]:
    """The buffer as of the last refresh: what waits, how full, how old the oldest is."""
    for name, help_text, value in (
        ("pending_readings", "Readings not sealed into a batch yet", stats.pending_readings),
        ("pending_telemetry", "Telemetry points not sealed yet", stats.pending_telemetry),
        ("pending_batches", "Sealed batches the core has not accepted yet", stats.pending_batches),
        ("rejected_batches", "Batches the core refused, kept", stats.rejected_batches),
        ("quarantined", "Readings and messages in quarantine", stats.quarantined),
        ("fill_ratio", "Share of the buffer's cap in use", stats.fill),
    ):
        yield GaugeMetricFamily(f"meterpipe_edge_buffer_{name}", help_text, value=value)
    oldest = stats.oldest_pending_poll_ms
    yield GaugeMetricFamily(
        "meterpipe_edge_buffer_oldest_pending_age_seconds",
        "Age of the oldest reading not sealed yet (0 when none)",
        value=max(0.0, (now_ms - oldest) / 1000) if oldest else 0.0,
    )
    pressure = GaugeMetricFamily(
        "meterpipe_edge_buffer_pressure", "1 for the current pressure level", labels=["level"]
    )
    for level in PRESSURE_LEVELS:
        pressure.add_metric([level], float(level == stats.pressure))
    yield pressure
