"""A batch's meter readings as the database takes them: one binary COPY buffer, and counts.

The core's hot path. Every column of a batch becomes one numpy array, and the rows are laid out
in PostgreSQL's binary COPY format by a structured array with a fixed-width record per row,
so building the COPY costs a few array operations per batch, not Python work per reading.
The same arrays give the batch's quality counts (and, in ``rollups``, the rollup deltas).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from proto import pb
from proto.quality import SUSPECT, QualityFlag

# Column order of every COPY into meter_readings (and its staging table).
COPY_COLUMNS = (
    "meter_id, interval_end, energy_wh, register_wh, quality_flags, poll_time, batch_id, device_no,"
    " clock_offset_s, region_id"
)
INTERVAL_SECONDS = 900  # the register map's interval length; an interval starts 900 s before
PG_EPOCH_S = 946_684_800  # PostgreSQL timestamps count microseconds from 2000-01-01 UTC
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
FIELDS = (  # (name, big-endian type) per column, in COPY_COLUMNS order
    ("meter_id", ">i4"),
    ("interval_end", ">i8"),
    ("energy_wh", ">i8"),
    ("register_wh", ">i8"),
    ("quality_flags", ">i4"),
    ("poll_time", ">i8"),
    ("batch_id", ">i8"),
    ("device_no", ">i2"),
    ("clock_offset_s", ">i2"),
    ("region_id", ">i2"),
)
# Each binary COPY tuple: a field count, then per field its byte length and its value.
ROW = np.dtype(
    [("fields", ">i2")]
    + [part for name, kind in FIELDS for part in ((f"{name}_len", ">i4"), (name, kind))]
)
Int64s = npt.NDArray[np.int64]


def _int64s(values: object) -> Int64s:
    return np.array(values, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class ReadingColumns:
    """A batch's meter readings, one int64 array per column (times in Unix seconds / ms).

    ``interval_end`` is on the 15-minute grid: the device's time rounded to the nearest
    interval end, so a meter's interval is one row whatever its clock says (11:30:00 and
    11:30:02 are the same interval, stored once and rolled up once). How far the device's
    clock was off is kept in ``clock_offset_s`` (-450..449 s).
    """

    meter_index: Int64s
    interval_end: Int64s
    energy_wh: Int64s
    register_wh: Int64s
    quality_flags: Int64s
    poll_time_ms: Int64s
    device_index: Int64s
    clock_offset_s: Int64s

    @classmethod
    def of(cls, readings: pb.MeterReadings) -> ReadingColumns:
        """Copy the protobuf columns into arrays (envelope checks made them equally long)."""
        device_end = _int64s(readings.interval_end)
        on_grid = (device_end + INTERVAL_SECONDS // 2) // INTERVAL_SECONDS * INTERVAL_SECONDS
        return cls(
            meter_index=_int64s(readings.meter_index),
            interval_end=on_grid,
            energy_wh=_int64s(readings.energy_wh),
            # uint64 on the wire: one at or above 2^63 becomes negative, which the bounds refuse
            register_wh=np.array(readings.register_wh, dtype=np.uint64).astype(np.int64),
            quality_flags=_int64s(readings.quality_flags),
            poll_time_ms=_int64s(readings.poll_time_ms),
            device_index=_int64s(readings.device_index),
            clock_offset_s=device_end - on_grid,
        )

    def __len__(self) -> int:
        """The number of readings."""
        return len(self.interval_end)

    def select(self, mask: npt.NDArray[np.bool_]) -> ReadingColumns:
        """Only the readings where ``mask`` is true."""
        return ReadingColumns(
            meter_index=self.meter_index[mask],
            interval_end=self.interval_end[mask],
            energy_wh=self.energy_wh[mask],
            register_wh=self.register_wh[mask],
            quality_flags=self.quality_flags[mask],
            poll_time_ms=self.poll_time_ms[mask],
            device_index=self.device_index[mask],
            clock_offset_s=self.clock_offset_s[mask],
        )

    def poll_window(self) -> tuple[dt.datetime, dt.datetime] | None:
        """Earliest and latest poll time of the readings, for the batch's lineage."""
        return _window_ms(self.poll_time_ms)

    def interval_window(self) -> tuple[dt.datetime, dt.datetime] | None:
        """Earliest and latest interval end of the readings: how late and how far back."""
        return _window_ms(self.interval_end * 1000)


def _window_ms(values: Int64s) -> tuple[dt.datetime, dt.datetime] | None:
    if not len(values):
        return None
    return _utc_ms(int(values.min())), _utc_ms(int(values.max()))


def _utc_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def copy_buffer(
    columns: ReadingColumns, meter_ids: npt.NDArray[np.int32], *, batch_id: int, region_id: int
) -> bytes:
    """The whole binary COPY stream (signature, rows, trailer) of the readings.

    Args:
        columns: the batch's readings.
        meter_ids: the meters dimension's id of each of the batch's meters, by meter index.
        batch_id: the ledger row the readings belong to.
        region_id: the region of the agent that sent them (as enrolled).

    """
    rows = np.empty(len(columns), dtype=ROW)
    rows["fields"] = len(FIELDS)
    for name, kind in FIELDS:
        rows[f"{name}_len"] = np.dtype(kind).itemsize
    rows["meter_id"] = meter_ids[columns.meter_index]
    rows["interval_end"] = (columns.interval_end - PG_EPOCH_S) * 1_000_000
    rows["energy_wh"] = columns.energy_wh
    rows["register_wh"] = columns.register_wh
    rows["quality_flags"] = columns.quality_flags
    rows["poll_time"] = (columns.poll_time_ms - PG_EPOCH_S * 1000) * 1000
    rows["batch_id"] = batch_id
    rows["device_no"] = columns.device_index + 1  # PostgreSQL arrays count from 1
    rows["clock_offset_s"] = columns.clock_offset_s
    rows["region_id"] = region_id
    return SIGNATURE + rows.tobytes() + TRAILER


CUSTOMER = pb.METER_ROLE_CUSTOMER  # the only role whose energy is consumption
ROLE_NAMES = {
    int(value): name.removeprefix("METER_ROLE_").lower() for name, value in pb.MeterRole.items()
}


def device_roles(payload: pb.BatchPayload) -> list[int]:
    """Each device's MeterRole; customer where the agent sent none or one this core lacks."""
    sent = list(payload.device_roles) or [CUSTOMER] * len(payload.devices)
    return [role if role in ROLE_NAMES else CUSTOMER for role in sent]


def batch_roles(columns: ReadingColumns, roles: Sequence[int]) -> Int64s:
    """Each reading's MeterRole: the role of the device it was read from."""
    return np.asarray(roles, dtype=np.int64)[columns.device_index]


def meter_roles(columns: ReadingColumns, meters: int, roles: Sequence[int]) -> list[str]:
    """Each meter's role name (``customer``, ``feeder_head``...), by the batch's meter index.

    A meter none of whose readings is in ``columns`` (all refused) is named ``customer``;
    such meters are never added to the dimension anyway.
    """
    by_meter = np.full(meters, CUSTOMER, dtype=np.int64)
    by_meter[columns.meter_index] = batch_roles(columns, roles)
    return [ROLE_NAMES[int(v)] for v in by_meter]


def meter_devices(columns: ReadingColumns, meters: int, devices: Sequence[str]) -> list[str]:
    """Each meter's device in the batch (its feeder's concentrator), by meter index.

    A meter none of whose readings is in ``columns`` gets "" (never added to the dimension).
    """
    by_meter = np.full(meters, -1, dtype=np.int64)
    by_meter[columns.meter_index] = columns.device_index
    return [devices[int(i)] if i >= 0 else "" for i in by_meter]


def quality_counts(flags: Int64s) -> dict[str, int]:
    """Readings carrying each quality flag, by flag name (flags no reading carries left out)."""
    counts = {}
    for flag in QualityFlag:
        carried = int(np.count_nonzero(flags & int(flag)))
        if carried:
            counts[str(flag.name)] = carried
    return counts


def suspect_count(flags: Int64s) -> int:
    """Readings with at least one flag that says the value is probably wrong."""
    return int(np.count_nonzero(flags & int(SUSPECT)))
