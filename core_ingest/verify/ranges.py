"""Which values of a verified batch the core stores, and why it refuses each of the others.

The bounds are ``proto.limits``, the definition the agent checks before it buffers a reading,
judged here by the core's own clock. A value outside them is refused on its own and kept, raw,
in ``refused_values`` with its reason: one bad reading never costs the good ones beside it,
and a buggy or compromised agent cannot push an absurd value into the rollups. Checked column
by column with numpy for the readings (a clean batch costs a few array comparisons) and point
by point for the telemetry, a few values a minute per transformer.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from core_ingest.store.batch import RefusedValue
from core_ingest.store.reading_rows import ReadingColumns
from proto import limits, pb
from proto.quality import QualityFlag

INT4_MAX = 2**31 - 1
INTERVAL_SECONDS = limits.INTERVAL_SECONDS
SECOND_COPY = "another reading of this meter and interval, with other values, is in the batch"
MAX_NAME_LENGTH = 64  # transformer ids and metric names: the agents' own limit for ids


def _outside(values: npt.NDArray[np.int64], low: float, high: float) -> npt.NDArray[np.bool_]:
    return (values < low) | (values > high)


def split_readings(
    columns: ReadingColumns, meters: list[bytes], *, now_s: float
) -> tuple[npt.NDArray[np.bool_], list[RefusedValue]]:
    """A mask of the readings within bounds, and the others with their reasons."""
    ahead = now_s + limits.MAX_AHEAD_SECONDS
    device_end = columns.interval_end + columns.clock_offset_s  # as sent, before the grid
    bad = (
        _outside(device_end, limits.EARLIEST_INTERVAL_END_S, ahead)
        | _outside(columns.energy_wh, -limits.MAX_INTERVAL_ENERGY_WH, limits.MAX_INTERVAL_ENERGY_WH)
        | (columns.register_wh < 0)  # a uint64 at or above 2^63 arrives here negative
        | _outside(columns.quality_flags, 0, INT4_MAX)
        | _outside(columns.poll_time_ms, limits.EARLIEST_INTERVAL_END_S * 1000, ahead * 1000)
    )
    refused = [_refused_reading(columns, meters, int(i), now_s) for i in np.flatnonzero(bad)]
    copies, conflicting = _second_copies(columns, ~bad)
    refused += [
        _refused_reading(columns, meters, int(i), now_s, reason=SECOND_COPY)
        for i in np.flatnonzero(conflicting)
    ]
    return ~bad & ~copies, refused


def _second_copies(
    columns: ReadingColumns, within: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Readings of a meter and interval already in the batch, and which of them conflict.

    One copy is kept: a real reading before an estimate, then the first. Another copy with the
    same values is dropped; a real one with other values is a conflict (set apart, kept).
    """
    copies = np.zeros(len(columns), dtype=np.bool_)
    conflicting = np.zeros(len(columns), dtype=np.bool_)
    rows = np.flatnonzero(within)
    if len(rows) < 2:  # noqa: PLR2004 - a copy needs two
        return copies, conflicting
    key = (columns.meter_index[rows] << 24) | (columns.interval_end[rows] // INTERVAL_SECONDS)
    estimated = (columns.quality_flags[rows] & int(QualityFlag.ESTIMATED)) != 0
    sort = np.lexsort((rows, estimated, key))
    order, key = rows[sort], key[sort]
    again = np.concatenate([[False], key[1:] == key[:-1]])
    if not again.any():
        return copies, conflicting
    kept = order[np.maximum.accumulate(np.where(again, 0, np.arange(len(order))))]
    copies[order[again]] = True
    differs = (columns.energy_wh[order] != columns.energy_wh[kept]) | (
        columns.register_wh[order] != columns.register_wh[kept]
    )
    real = (columns.quality_flags[order] & int(QualityFlag.ESTIMATED)) == 0
    conflicting[order[again & differs & real]] = True
    return copies, conflicting


def _refused_reading(
    columns: ReadingColumns, meters: list[bytes], i: int, now_s: float, reason: str | None = None
) -> RefusedValue:
    register = int(columns.register_wh[i]) % 2**64  # back to the uint64 that was sent
    end = int(columns.interval_end[i] + columns.clock_offset_s[i])  # as the device sent it
    energy = int(columns.energy_wh[i])
    reason = reason or limits.reading_problem(end, energy, register, now_s=now_s)
    if reason is None and not 0 <= columns.quality_flags[i] <= INT4_MAX:
        reason = f"quality flags {int(columns.quality_flags[i]):#x} use undefined bits"
    if reason is None:
        reason = f"poll time {int(columns.poll_time_ms[i])} ms is outside 2000-01-01 to a day ahead"
    return RefusedValue(
        "meter_reading",
        i,
        reason,
        {
            "meter": meters[int(columns.meter_index[i])].hex(),
            "interval_end": end,
            "energy_wh": energy,
            "register_wh": str(register),
            "quality_flags": int(columns.quality_flags[i]),
            "poll_time_ms": int(columns.poll_time_ms[i]),
            "device_index": int(columns.device_index[i]),
        },
    )


def split_telemetry(
    telemetry: pb.TransformerTelemetry, *, now_s: float
) -> tuple[list[int], list[RefusedValue]]:
    """Positions of the telemetry points within bounds, and the others with their reasons."""
    earliest_ms = limits.EARLIEST_INTERVAL_END_S * 1000
    latest_ms = (now_s + limits.MAX_AHEAD_SECONDS) * 1000
    bad_names = (
        {i for i, name in enumerate(telemetry.transformers) if not _fits_name(name)},
        {i for i, name in enumerate(telemetry.metrics) if not _fits_name(name)},
    )
    kept: list[int] = []
    refused: list[RefusedValue] = []
    for i, (transformer, metric, time_ms, value, flags) in enumerate(
        zip(
            telemetry.transformer_index,
            telemetry.metric_index,
            telemetry.time_ms,
            telemetry.value,
            telemetry.quality_flags,
            strict=True,
        )
    ):
        reason = None
        if transformer in bad_names[0] or metric in bad_names[1]:
            reason = f"transformer or metric name is not 1..{MAX_NAME_LENGTH} printable characters"
        elif not earliest_ms <= time_ms <= latest_ms:
            reason = f"time {time_ms} ms is outside 2000-01-01 to a day ahead of the core's clock"
        elif not math.isfinite(value):
            reason = f"value {value} is not a finite number"
        elif flags > INT4_MAX:
            reason = f"quality flags {flags:#x} use undefined bits"
        if reason is None:
            kept.append(i)
            continue
        raw = {
            "transformer": telemetry.transformers[transformer][:MAX_NAME_LENGTH],
            "metric": telemetry.metrics[metric][:MAX_NAME_LENGTH],
            "time_ms": time_ms,
            "value": repr(value),
            "quality_flags": flags,
        }
        refused.append(RefusedValue("telemetry", i, reason, raw))
    return kept, refused


def _fits_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_NAME_LENGTH and name.isprintable()
