"""Meter readings into ``meter_readings``: binary COPY, or the staged path that replaces estimates.

A batch's readings normally go in with one binary COPY. When the unique (meter_id,
interval_end) index refuses that, some were stored before (a backfill re-read, a batch re-sealed
after a crash, a real reading for an interval estimated before) and the batch's transaction is
run again through a staging table: a real reading replaces a stored estimate (recorded in
``reading_corrections``), the other new readings are inserted, and a stored real reading whose
new copy carries another value is kept in ``reading_quarantine``, never silently replaced.

Binary COPY applies no casts: every column's type is pinned by ``reading_rows``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from core_ingest.store.reading_rows import COPY_COLUMNS, ReadingColumns, copy_buffer
from proto.quality import QualityFlag

METER_COPY = f"COPY meter_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
STAGED_COLUMNS = ", ".join(f"i.{name}" for name in COPY_COLUMNS.split(", "))
ESTIMATED = int(QualityFlag.ESTIMATED)
# Staged real readings already stored by an earlier batch with another value: kept, not
# applied. A staged estimate never conflicts: what is stored (read or estimated) stands.
QUARANTINE_CONFLICTS = (
    f"INSERT INTO reading_quarantine ({COPY_COLUMNS}, reason)"  # noqa: S608 - constants only
    f" SELECT {STAGED_COLUMNS}, 'conflicts-with-stored'"
    " FROM incoming_readings i JOIN meter_readings r USING (meter_id, interval_end)"
    f" WHERE r.batch_id <> %s AND i.quality_flags & {ESTIMATED} = 0"
    " AND (r.energy_wh, r.register_wh) IS DISTINCT FROM (i.energy_wh, i.register_wh)"
)
# A staged real reading replaces a stored estimate of its meter and interval, and the
# correction is recorded. The estimate is re-checked under the row lock (another core may
# have replaced it meanwhile: then this one replaces nothing and records nothing).
REPLACE_ESTIMATES = (
    "WITH replaced AS ("  # noqa: S608 - constants only
    " UPDATE meter_readings r SET energy_wh = i.energy_wh, register_wh = i.register_wh,"
    " quality_flags = i.quality_flags, poll_time = i.poll_time, batch_id = i.batch_id,"
    " device_no = i.device_no, clock_offset_s = i.clock_offset_s, region_id = i.region_id"
    " FROM incoming_readings i JOIN meter_readings o USING (meter_id, interval_end)"
    " WHERE r.meter_id = i.meter_id AND r.interval_end = i.interval_end"
    f" AND r.quality_flags & {ESTIMATED} <> 0 AND i.quality_flags & {ESTIMATED} = 0"
    " RETURNING r.meter_id, r.interval_end, o.energy_wh AS old_energy,"
    " o.register_wh AS old_register, o.quality_flags AS old_flags, o.batch_id AS old_batch,"
    " r.energy_wh, r.quality_flags, r.batch_id, r.region_id)"
    " , recorded AS (INSERT INTO reading_corrections (meter_id, interval_end,"
    " estimated_energy_wh, estimated_register_wh, estimated_quality_flags, estimated_batch_id,"
    " energy_wh, quality_flags, batch_id, region_id)"
    " SELECT meter_id, interval_end, old_energy, old_register, old_flags, old_batch,"
    " energy_wh, quality_flags, batch_id, region_id FROM replaced)"
    " SELECT extract(epoch FROM r.interval_end)::bigint, r.old_energy, r.old_flags, r.energy_wh,"
    " r.quality_flags, (m.role = 'customer')::int FROM replaced r JOIN meters m USING (meter_id)"
)
# The batches whose estimates were replaced no longer hold them.
UNCOUNT_REPLACED = (
    "UPDATE batches b SET readings_stored = b.readings_stored - c.n"
    " FROM (SELECT estimated_batch_id, count(*) AS n FROM reading_corrections"
    " WHERE batch_id = %s GROUP BY 1) c WHERE b.batch_id = c.estimated_batch_id"
)


@dataclass(frozen=True, slots=True)
class Corrections:
    """Stored estimates a batch replaced with real readings: what each was and now is."""

    interval_end: npt.NDArray[np.int64]
    estimated_energy_wh: npt.NDArray[np.int64]
    estimated_flags: npt.NDArray[np.int64]
    energy_wh: npt.NDArray[np.int64]
    flags: npt.NDArray[np.int64]
    customer: npt.NDArray[np.int64]  # 1 for a customer meter's reading, else 0

    @classmethod
    def of(cls, rows: list[tuple[int, int, int, int, int, int]]) -> Corrections:
        """From ``REPLACE_ESTIMATES``' rows."""
        columns = np.array(rows, dtype=np.int64).reshape(-1, 6).T
        return cls(*columns)

    def customers(self) -> Corrections:
        """Only the corrections of customer meters' readings (what the rollups sum)."""
        keep = self.customer == 1
        return Corrections(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))


NO_CORRECTIONS = Corrections.of([])


async def copy_rows(conn: psycopg.AsyncConnection, statement: str, rows: bytes) -> None:
    """Send one prepared binary COPY buffer."""
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        await copy.write(rows)


async def copy_readings(
    conn: psycopg.AsyncConnection,
    columns: ReadingColumns,
    meter_ids: npt.NDArray[np.int32],
    *,
    batch_id: int,
    region_id: int,
) -> None:
    """The normal path: every reading in one binary COPY (the unique index refuses repeats)."""
    rows = copy_buffer(columns, meter_ids, batch_id=batch_id, region_id=region_id)
    await copy_rows(conn, METER_COPY, rows)


async def insert_new_readings(
    conn: psycopg.AsyncConnection,
    columns: ReadingColumns,
    meter_ids: npt.NDArray[np.int32],
    *,
    batch_id: int,
    region_id: int,
) -> tuple[ReadingColumns, Corrections]:
    """The staged path: insert only the readings not stored yet, replacing stored estimates.

    Returns the readings inserted and the estimates replaced (see the module).
    """
    if not len(columns):
        return columns, NO_CORRECTIONS
    await conn.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_readings"
        " (LIKE meter_readings) ON COMMIT DELETE ROWS"
    )
    await copy_rows(
        conn,
        f"COPY incoming_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)",
        copy_buffer(columns, meter_ids, batch_id=batch_id, region_id=region_id),
    )
    ids = meter_ids[columns.meter_index].tolist()
    ends = columns.interval_end.tolist()
    cur = await conn.execute(REPLACE_ESTIMATES)
    corrected = Corrections.of(await cur.fetchall())
    if len(corrected.interval_end):
        await conn.execute(UNCOUNT_REPLACED, (batch_id,))
    cur = await conn.execute(
        f"INSERT INTO meter_readings ({COPY_COLUMNS}) SELECT {COPY_COLUMNS}"  # noqa: S608 - constants
        " FROM incoming_readings ORDER BY meter_id, interval_end"
        " ON CONFLICT (meter_id, interval_end) DO NOTHING"
        " RETURNING meter_id, extract(epoch FROM interval_end)::bigint"
    )
    inserted = set(await cur.fetchall())
    await conn.execute(QUARANTINE_CONFLICTS, (batch_id,))
    await conn.execute(
        "UPDATE batches SET readings_stored = %s WHERE batch_id = %s",
        (len(inserted) + len(corrected.interval_end), batch_id),
    )
    new = np.fromiter(
        ((meter, end) in inserted for meter, end in zip(ids, ends, strict=True)),
        dtype=np.bool_,
        count=len(ends),
    )
    return columns.select(new), corrected
