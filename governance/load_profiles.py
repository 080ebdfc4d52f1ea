"""Weekly load profiles of the customer meters, read from the database for an export.

A meter's weekly profile is its mean energy per slot of the week (Monday 00:00 UTC onwards, by
interval start, as the rollups count) over the period asked, at the resolution asked: 672
quarter hours, 168 hours or 7 days. Beside it, what an export may generalize it by: the
meter's feeder (the concentrator it was first read through, one per low-voltage feeder,
numbered within its substation), substation and region, and its mean power (the customer
class is inferred from it: the database holds no tariff data).

Rows are read as the login running the export sees them: a login limited to regions exports
those regions only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

SLOTS_PER_DAY = {"15min": 96, "hour": 24, "day": 1}
DAYS_PER_WEEK = 7


@dataclass(frozen=True, slots=True)
class ProfileQuery:
    """Which meters and readings an export reads."""

    since: dt.datetime  # interval ends after this
    until: dt.datetime  # ... and up to this
    resolution: str  # a key of SLOTS_PER_DAY
    regions: tuple[str, ...] = ()  # none: every region the login sees

    @property
    def slots(self) -> int:
        """Slots in a week at this resolution."""
        return SLOTS_PER_DAY[self.resolution] * DAYS_PER_WEEK


@dataclass(frozen=True, slots=True)
class LoadProfiles:
    """One row per meter: where it stands, how much it uses, and its weekly profile (Wh)."""

    meter_id: npt.NDArray[np.int64]
    feeder: list[str]
    substation: list[str]
    region: list[str]
    mean_power_w: npt.NDArray[np.float64]
    energy_wh: npt.NDArray[np.int64]
    profile_wh: npt.NDArray[np.float64]  # meters x slots
    key_ids: list[str]  # the edge keys the meters' pseudonyms were made with

    def __len__(self) -> int:
        """The number of meters."""
        return len(self.meter_id)


PER_METER = """
SELECT r.meter_id, m.substation, m.region, m.feeder,
       sum(r.energy_wh)::bigint AS energy_wh, count(*) AS readings, m.key_id
FROM meter_readings r
JOIN meters m USING (meter_id)
WHERE m.role = 'customer' AND r.interval_end > %(since)s AND r.interval_end <= %(until)s
  AND (cardinality(%(regions)s::text[]) = 0 OR m.region = ANY(%(regions)s::text[]))
GROUP BY r.meter_id, m.substation, m.region, m.feeder, m.key_id
ORDER BY r.meter_id
"""
PER_SLOT = """
SELECT r.meter_id,
       (extract(isodow FROM s.start)::int - 1) * %(per_day)s
       + floor(extract(epoch FROM s.start::time) * %(per_day)s / 86400)::int AS slot,
       avg(r.energy_wh) * %(intervals)s AS wh
FROM meter_readings r
JOIN meters m USING (meter_id)
CROSS JOIN LATERAL (SELECT (r.interval_end - interval '15 minutes') AT TIME ZONE 'UTC' AS start) s
WHERE m.role = 'customer' AND r.interval_end > %(since)s AND r.interval_end <= %(until)s
  AND (cardinality(%(regions)s::text[]) = 0 OR m.region = ANY(%(regions)s::text[]))
GROUP BY 1, 2
"""


def _feeder_labels(devices: list[tuple[str, str]]) -> list[str]:
    """``substation/fN`` per meter: devices numbered within their substation, not named.

    A device's name is its network address; a release says which feeder, not where it is.
    """
    numbers: dict[tuple[str, str], int] = {}
    for substation, device in sorted(set(devices)):
        numbers[substation, device] = sum(1 for s, _ in numbers if s == substation) + 1
    return [f"{substation}/f{numbers[substation, device]}" for substation, device in devices]


def read_profiles(conn: psycopg.Connection, query: ProfileQuery) -> LoadProfiles:
    """The customer meters of ``query`` with their weekly profiles (slots no reading covers: 0).

    A slot's value is the mean energy of the meter's readings falling in it, times the
    readings a slot holds (4 an hour, 96 a day): the energy of a typical such slot.
    """
    params = {
        "since": query.since,
        "until": query.until,
        "regions": list(query.regions),
        "per_day": SLOTS_PER_DAY[query.resolution],
        "intervals": 96 // SLOTS_PER_DAY[query.resolution],
    }
    with conn.transaction():  # both reads see one snapshot, however fast readings arrive
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        meters = conn.execute(PER_METER, params).fetchall()
        slots = conn.execute(PER_SLOT, params).fetchall()
    position = {row[0]: i for i, row in enumerate(meters)}
    profile = np.zeros((len(meters), query.slots))
    for meter_id, slot, wh in slots:
        profile[position[meter_id], slot] = float(wh)
    energy = np.array([row[4] for row in meters], dtype=np.int64)
    hours = np.array([row[5] for row in meters], dtype=np.float64) / 4  # 15-minute readings
    return LoadProfiles(
        meter_id=np.array([row[0] for row in meters], dtype=np.int64),
        feeder=_feeder_labels([(row[1], row[3] or "") for row in meters]),
        substation=[row[1] for row in meters],
        region=[row[2] for row in meters],
        mean_power_w=energy / hours,
        energy_wh=energy,
        profile_wh=profile,
        key_ids=sorted({row[6] for row in meters if row[6]}),
    )
