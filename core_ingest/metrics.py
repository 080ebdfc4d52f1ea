"""The core's Prometheus metrics (``[metrics] listen``), through prometheus-client.

Latency is a histogram observed as each batch is answered. Everything else is read at each
scrape from the stages' ``statistics()`` snapshots (the receiving service's, the quality
watch's, the lineage emitter's, the connection pool's): the hot path only adds to plain
integers, and the scrape, on prometheus-client's own thread, never waits for the ingest loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core_ingest.lineage.emitter import LineageStatistics
from core_ingest.quality_watch import WatchStatistics
from core_ingest.receive import IngestStatistics
from core_ingest.store.reading_rows import ReadingColumns

log = logging.getLogger(__name__)

# A batch takes milliseconds when all is well and seconds when the database is slow.
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A reading's age at commit: seconds when all is well, hours after an outage, a day of history.
LATENCY_BUCKETS = (
    0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 900.0, 1_800.0, 3_600.0, 10_800.0, 43_200.0, 86_400.0, 259_200.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stages:
    """Where the scrape reads each stage's snapshot (the emitter only with [openlineage])."""

    service: Callable[[], IngestStatistics]
    watch: Callable[[], WatchStatistics]
    pool: Callable[[], dict[str, int]]
    lineage: Callable[[], LineageStatistics] | None = None


class CoreMetrics:
    """The core's registry: the commit-latency histogram and the stages' counters."""

    def __init__(self) -> None:
        """A registry of its own (not the library's global one: tests run several cores)."""
        self.registry = CollectorRegistry()
        self.commit_seconds = Histogram(
            "meterpipe_core_commit_seconds",
            "From receiving a batch to its answer: verified and committed (or refused)",
            ["outcome"],
            registry=self.registry,
            buckets=COMMIT_BUCKETS,
        )

        self.reading_latency = ReadingLatency()
        self.registry.register(self.reading_latency)

    def publish(self, stages: Stages) -> None:
        """Read the stages' snapshots at every scrape."""
        self.registry.register(_StagesCollector(stages))


class ReadingLatency(Collector):
    """Each stored reading's age at commit, from its interval end and from its poll.

    A histogram fed a whole batch at a time: the bucket counts are added with numpy (one
    ``searchsorted`` per batch), where prometheus-client's Histogram would take a Python call
    per reading. ``since="interval_end"`` is the end-to-end latency (the interval closed at
    the meter, the reading committed centrally); ``since="poll"`` leaves out the wait for the
    agent's next poll.
    """

    SINCE = ("interval_end", "poll")

    def __init__(self) -> None:
        """Empty buckets (the last one is +Inf)."""
        self._lock = threading.Lock()  # observed on the event loop, read by the scrape thread
        self._bounds = np.array(LATENCY_BUCKETS)
        self._counts = {since: np.zeros(len(LATENCY_BUCKETS) + 1, np.int64) for since in self.SINCE}
        self._sums = dict.fromkeys(self.SINCE, 0.0)

    def observe(self, committed_at: float, columns: ReadingColumns) -> None:
        """Add a committed batch's readings (``committed_at`` in Unix seconds)."""
        ages = {
            "interval_end": committed_at - columns.interval_end,
            "poll": committed_at - columns.poll_time_ms / 1000,
        }
        with self._lock:
            for since, seconds in ages.items():
                slots = np.searchsorted(self._bounds, seconds, side="left")
                self._counts[since] += np.bincount(slots, minlength=len(self._bounds) + 1)
                self._sums[since] += float(seconds.sum())

    def collect(self) -> Iterator[Metric]:
        """The two histograms, cumulative as Prometheus wants them."""
        family = HistogramMetricFamily(
            "meterpipe_core_reading_latency_seconds",
            "A stored reading's age when its batch committed, since its interval end or its poll",
            labels=["since"],
        )
        with self._lock:
            for since in self.SINCE:
                cumulative = np.cumsum(self._counts[since])
                bounds = [*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"]
                family.add_metric(
                    [since],
                    buckets=list(zip(bounds, (int(c) for c in cumulative), strict=True)),
                    sum_value=self._sums[since],
                )
        yield family


class _StagesCollector(Collector):
    def __init__(self, stages: Stages) -> None:
        self.stages = stages

    def collect(self) -> Iterator[Metric]:
        service = self.stages.service()
        batches = CounterMetricFamily(
            "meterpipe_core_batches",
            "Batches answered, by status and refusal reason",
            labels=["status", "reason"],
        )
        for (status, reason), count in sorted(service.outcomes.items()):
            batches.add_metric([status, reason], count)
        yield batches
        yield CounterMetricFamily(
            "meterpipe_core_readings_stored",
            "Meter readings newly stored",
            value=service.readings_stored,
        )
        watch = self.stages.watch()
        yield CounterMetricFamily(
            "meterpipe_core_quality_alerts",
            "Suspect-share alerts raised by this process",
            value=watch.alerts_raised,
        )
        yield CounterMetricFamily(
            "meterpipe_core_quality_checks_failed",
            "Quality checks that could not run (database unreachable)",
            value=watch.checks_failed,
        )
        yield from _pool(self.stages.pool())
        if self.stages.lineage is not None:
            yield from _lineage(self.stages.lineage())


def _pool(stats: dict[str, int]) -> Iterator[Metric]:
    """psycopg_pool's counters that say whether batches wait for a connection."""
    for key, help_text in (
        ("pool_size", "Connections the pool holds now"),
        ("pool_available", "Of those, idle"),
        ("requests_waiting", "Batches waiting for a connection"),
    ):
        name = key.removeprefix("pool_")
        yield GaugeMetricFamily(f"meterpipe_core_pool_{name}", help_text, value=stats.get(key, 0))


def _lineage(stats: LineageStatistics) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "meterpipe_core_lineage_events", "OpenLineage events, by result", labels=["result"]
    )
    for result, value in (
        ("emitted", stats.emitted),
        ("failed", stats.failed),
        ("dropped", stats.dropped),
    ):
        events.add_metric([result], value)
    yield events
    yield GaugeMetricFamily(
        "meterpipe_core_lineage_queued", "OpenLineage events waiting to be sent", value=stats.queued
    )
