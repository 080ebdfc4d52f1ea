"""The substation rollups: what newly stored customer readings add to each hour and day.

Rollups are kept in the batch's transaction, as exact integer sums, so they always agree with
the readings stored: a re-sent batch adds nothing, a late reading lands in its own hour and
day, and an estimate replaced by the real reading moves the sums by the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from core_ingest.store.reading_rows import INTERVAL_SECONDS, Int64s, ReadingColumns
from core_ingest.store.readings import Corrections
from proto.quality import SUSPECT, QualityFlag

MAX_DENSE_BUCKETS = 4096  # rollup buckets counted in one dense array; sparser spans use unique
ROLLUP_TABLES = (("substation_hourly", "hour", 3600), ("substation_daily", "day", 86_400))


def _rollup_upsert(table: str, column: str) -> psycopg.sql.Composed:
    """Add per-bucket sums (arrays named after the table) to one rollup table."""
    return psycopg.sql.SQL(
        "INSERT INTO {table} AS t (substation, region, {column}, energy_wh, received, estimated,"
        " suspect) SELECT %(substation)s, %(region)s, to_timestamp(d.bucket), d.energy_wh,"
        " d.received, d.estimated, d.suspect FROM unnest({bucket}::int8[], {energy}::int8[],"
        " {received}::int8[], {estimated}::int8[], {suspect}::int8[])"
        " AS d(bucket, energy_wh, received, estimated, suspect)"
        " ON CONFLICT (substation, {column}) DO UPDATE SET"
        " energy_wh = t.energy_wh + excluded.energy_wh,"
        " received = t.received + excluded.received,"
        " estimated = t.estimated + excluded.estimated,"
        " suspect = t.suspect + excluded.suspect"
    ).format(
        table=psycopg.sql.Identifier(table),
        column=psycopg.sql.Identifier(column),
        **{
            name: psycopg.sql.Placeholder(f"{table}_{name}")
            for name in ("bucket", "energy", "received", "estimated", "suspect")
        },
    )


# Both rollups in one statement: one round trip per batch.
ADD_TO_ROLLUPS = psycopg.sql.SQL("WITH hourly AS ({}) {}").format(
    *(_rollup_upsert(table, column) for table, column, _period in ROLLUP_TABLES)
)


async def add_to_rollups(  # noqa: PLR0913 - keyword-only: what was stored, and where
    conn: psycopg.AsyncConnection,
    *,
    stored: ReadingColumns,
    corrected: Corrections,
    customer: npt.NDArray[np.bool_],
    substation: str,
    region: str,
) -> None:
    """Add newly stored customer readings to their substation's hourly and daily rollups.

    Only readings stored by this transaction are added, so a re-sent batch (DUPLICATE)
    or a re-read reading adds nothing, and a late one lands in its own hour and day. A
    replaced estimate is taken out as its real reading goes in: the energy moves by the
    difference, one reading moves from estimated to received. Only meters whose role in
    the dimension is customer (``customer``, by meter index) are consumption: feeder-head
    and transformer meters are compared with these sums in the losses view.
    """
    stored = stored.select(customer[stored.meter_index])
    corrected = corrected.customers()
    if not len(stored) and not len(corrected.interval_end):
        return
    ends = np.concatenate([stored.interval_end, corrected.interval_end, corrected.interval_end])
    energy = np.concatenate([stored.energy_wh, corrected.energy_wh, corrected.estimated_energy_wh])
    flags = np.concatenate([stored.quality_flags, corrected.flags, corrected.estimated_flags])
    sign = np.concatenate(
        [
            np.ones(len(stored) + len(corrected.interval_end), np.int64),
            -np.ones_like(corrected.interval_end),
        ]
    )
    params: dict[str, object] = {"substation": substation, "region": region}
    for table, _column, period in ROLLUP_TABLES:
        delta = rollup_delta(ends, energy, flags, period, sign)
        params |= {f"{table}_{name}": values for name, values in delta.columns().items()}
    await conn.execute(ADD_TO_ROLLUPS, params)


@dataclass(frozen=True, slots=True)
class RollupDelta:
    """What a set of newly stored readings adds to each period bucket (hour or day)."""

    bucket: list[int]  # Unix seconds of each bucket's start
    energy_wh: list[int]
    received: list[int]
    estimated: list[int]
    suspect: list[int]

    def columns(self) -> dict[str, list[int]]:
        """The sums by column name, as the rollup statement takes them."""
        return {
            "bucket": self.bucket,
            "energy": self.energy_wh,
            "received": self.received,
            "estimated": self.estimated,
            "suspect": self.suspect,
        }


def rollup_delta(
    interval_end: Int64s,
    energy_wh: Int64s,
    flags: Int64s,
    period: int,
    sign: Int64s | None = None,
) -> RollupDelta:
    """Sum readings into buckets of ``period`` seconds by the start of their interval.

    An interval belongs to the bucket its start falls in: the interval ending 01:00 UTC is
    counted in the hour 00:00-01:00. Buckets come out sorted, so concurrent transactions
    update the same rows in the same order and cannot deadlock on them. ``sign`` (+1 or -1
    per reading, default +1) takes readings out again: an estimate replaced by the real
    reading is subtracted as the real one is added.
    """
    start = interval_end - INTERVAL_SECONDS
    number = start // period
    low = int(number.min())
    slot = number - low
    if int(slot.max()) >= MAX_DENSE_BUCKETS:  # a batch spanning years: number them sparsely
        numbers, slot = np.unique(number, return_inverse=True)
    else:
        numbers = np.arange(low, low + int(slot.max()) + 1)
    size = len(numbers)

    signs = np.ones(len(slot), dtype=np.int64) if sign is None else sign

    def per_bucket(values: npt.NDArray) -> npt.NDArray[np.int64]:
        total = np.zeros(size, dtype=np.int64)
        np.add.at(total, slot, values * signs)  # exact integer sums, never through a float
        return total

    count = per_bucket(np.ones(len(slot), dtype=np.int64))
    estimated = per_bucket((flags & int(QualityFlag.ESTIMATED)) != 0)
    present = np.bincount(slot, minlength=size) > 0
    return RollupDelta(
        bucket=(numbers[present] * period).tolist(),
        energy_wh=per_bucket(energy_wh)[present].tolist(),
        received=(count - estimated)[present].tolist(),
        estimated=estimated[present].tolist(),
        suspect=per_bucket((flags & int(SUSPECT)) != 0)[present].tolist(),
    )
