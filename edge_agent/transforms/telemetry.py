"""Transformer telemetry: check a JSON payload against its schema, then validate the values.

Pure, like the meter validation. ``decode`` turns one MQTT message (docs/mqtt-topics.md) into
telemetry points or raises ``Malformed`` with the reason; ``TelemetryValidator`` drops
duplicates (same transformer and ``seq``) and flags values out of their physical range, changing
faster than physics allows, or stuck. Its state is small and kept in memory only: after a restart
the first value of each metric is judged by range alone.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass

from proto.quality import QualityFlag

SCHEMA = "meterpipe.transformer-telemetry/1"
GASES = ("H2", "CH4", "C2H6", "C2H4", "C2H2", "CO", "CO2")
PHASES = ("L1", "L2", "L3")
MAX_SEQ = 2**63 - 1  # a signed 64-bit integer, as stored and compared
SEEN_SEQUENCES = 1_000  # per transformer: enough to catch repeats across any reordering


@dataclass(frozen=True, slots=True)
class MetricLimits:
    """Physical plausibility of one metric."""

    low: float
    high: float
    max_change_per_minute: float | None  # None: no rate rule
    stuck_after: int | None  # identical values in a row that mean a stuck sensor


LIMITS = {
    "ambient_c": MetricLimits(-50, 60, 3, 60),
    "top_oil_c": MetricLimits(-40, 130, 3, 60),
    "hot_spot_c": MetricLimits(-40, 180, 10, 60),
    "tap_position": MetricLimits(1, 33, 4, None),
    **{f"load_current_{p.lower()}_a": MetricLimits(0, 100_000, None, None) for p in PHASES},
    **{f"{g.lower()}_ppm": MetricLimits(0, 100_000, None, None) for g in GASES},
}


class Malformed(ValueError):  # noqa: N818 - named for what the message is
    """A payload that does not follow the schema; the message names the first problem."""


@dataclass(frozen=True, slots=True)
class TelemetryPoint:
    """One metric of one transformer at one time."""

    transformer: str
    time_ms: int
    metric: str
    value: float
    quality_flags: int


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded telemetry message."""

    transformer: str
    seq: int
    time_ms: int
    points: list[TelemetryPoint]


def _number(document: dict, key: str, where: str = "") -> float:
    """A finite number: NaN, Infinity and 1e999 are JSON Python reads, but no measurement."""
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{where}{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise Malformed(f"{where}{key} must be a finite number, got {str(value)[:20]}")
    return number


def _table(document: dict, key: str, names: tuple[str, ...]) -> dict[str, float]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise Malformed(f"{key} must be an object with {', '.join(names)}")
    return {name: _number(value, name, f"{key}.") for name in names}


def decode(payload: bytes, *, transformer: str, topic: str = "") -> Message:
    """Check one payload against the schema and turn it into points for ``transformer``.

    An empty ``transformer`` means the topic is not mapped to one in the configuration.

    Raises:
        Malformed: naming the first field at fault.

    """
    if not transformer:
        raise Malformed(f"topic {topic!r} is not mapped to a transformer")
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Malformed("not a JSON object")
    seq, time_ms = _identity(document, transformer)
    points = [
        TelemetryPoint(transformer, time_ms, metric, value, 0)
        for metric, value in _values(document).items()
    ]
    return Message(transformer, seq, time_ms, points)


def _identity(document: dict, transformer: str) -> tuple[int, int]:
    """Schema, transformer, sequence number and time (Unix ms) of a message."""
    if document.get("schema") != SCHEMA:
        raise Malformed(f"schema must be {SCHEMA!r}, got {document.get('schema')!r}")
    if document.get("transformer_id") != transformer:
        raise Malformed(
            f"transformer_id {document.get('transformer_id')!r} does not match "
            f"the topic's {transformer!r}"
        )
    seq = document.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
        raise Malformed(f"seq must be an integer from 1 to 2^63 - 1, got {seq!r}")
    try:
        time = dt.datetime.strptime(f"{document.get('time')}+0000", "%Y-%m-%dT%H:%M:%SZ%z")
    except ValueError:
        raise Malformed(
            f"time must be like 2026-11-02T00:01:00Z, got {document.get('time')!r}"
        ) from None
    return seq, int(time.timestamp() * 1000)


def _values(document: dict) -> dict[str, float]:
    """Every metric of a message by name, checked for type."""
    values = {key: _number(document, key) for key in ("ambient_c", "top_oil_c", "hot_spot_c")}
    tap = document.get("tap_position")
    if isinstance(tap, bool) or not isinstance(tap, int):
        raise Malformed(f"tap_position must be an integer, got {tap!r}")
    values["tap_position"] = float(tap)
    for phase, current in _table(document, "load_current_a", PHASES).items():
        values[f"load_current_{phase.lower()}_a"] = current
    for gas, ppm in _table(document, "gases_ppm", GASES).items():
        values[f"{gas.lower()}_ppm"] = ppm
    return values


@dataclass(slots=True)
class _MetricState:
    time_ms: int
    value: float
    repeats: int


class TelemetryValidator:
    """Duplicate detection and range, rate-of-change and stuck-sensor rules for telemetry.

    Two steps, as the meter readings' validation: ``validate`` judges a message against what
    was taken before and remembers nothing; ``adopt`` remembers it once its points are
    committed. A message whose commit failed (a full disk) comes again from the broker and is
    judged afresh, not dropped as a copy of itself.
    """

    def __init__(self) -> None:
        """Start with no memory: the first value of each metric is judged by range alone."""
        self._seen: dict[str, collections.deque[int]] = {}
        self._metrics: dict[tuple[str, str], _MetricState] = {}

    def validate(self, message: Message) -> list[TelemetryPoint] | None:
        """The message's points with flags set, or None when it repeats one already taken."""
        if message.seq in self._seen.get(message.transformer, ()):
            return None
        return [self._check(point) for point in message.points]

    def adopt(self, message: Message) -> None:
        """Remember ``message`` as taken: its sequence number and each metric's last value."""
        seen = self._seen.setdefault(message.transformer, collections.deque(maxlen=SEEN_SEQUENCES))
        seen.append(message.seq)
        for point in message.points:
            key = (point.transformer, point.metric)
            last = self._metrics.get(key)
            if last is None:
                self._metrics[key] = _MetricState(point.time_ms, point.value, 0)
            elif point.time_ms > last.time_ms:
                repeats = last.repeats + 1 if point.value == last.value else 0
                self._metrics[key] = _MetricState(point.time_ms, point.value, repeats)

    def _check(self, point: TelemetryPoint) -> TelemetryPoint:
        limits = LIMITS[point.metric]
        flags = QualityFlag(0)
        if not limits.low <= point.value <= limits.high:
            flags |= QualityFlag.OUT_OF_RANGE
        last = self._metrics.get((point.transformer, point.metric))
        if last is not None and point.time_ms > last.time_ms:
            minutes = (point.time_ms - last.time_ms) / 60_000
            if (
                limits.max_change_per_minute is not None
                and abs(point.value - last.value) > limits.max_change_per_minute * minutes
            ):
                flags |= QualityFlag.RATE_OF_CHANGE
            repeats = last.repeats + 1 if point.value == last.value else 0
            if limits.stuck_after is not None and repeats + 1 >= limits.stuck_after:
                flags |= QualityFlag.STUCK
        return dataclasses.replace(point, quality_flags=int(flags)) if flags else point
