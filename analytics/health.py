"""Transformer health by day: limits, insulation ageing and dissolved gases, stored with lineage.

For each registered transformer and UTC day, from its telemetry (``transformer_telemetry``):
the highest hot-spot and top-oil temperatures and the minutes above the asset's limits, the
loss of life of the day by the asset's paper (``analytics.ageing``), the day's last gas sample
with its IEC 60599 and Duval diagnoses, and the first gas alarm of the watch
(``analytics.gas_watch``) over the week before and the day. One row per transformer and day
in ``transformer_health``, recomputed in place when run again, with what it was computed from
(the input window), by what (``MODEL`` and the release's version), by whom and when.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from analytics.ageing import ageing
from analytics.dga import GASES, duval_zone, iec_ratio_fault
from analytics.gas_watch import RATE_WINDOW, first_alarm
from analytics.upsert import upsert
from proto.version import __version__

MODEL = "analytics.health"
TEMPERATURES = ("hot_spot_c", "top_oil_c")
GAS_METRICS = {f"{gas.lower()}_ppm": gas for gas in GASES}  # as the edge stores them


@dataclass(frozen=True, slots=True)
class Asset:
    """What the registry says of one transformer, as the health job needs it."""

    transformer_id: str
    region: str
    insulation: str
    hot_spot_limit_c: float
    top_oil_limit_c: float


def assets(conn: psycopg.Connection) -> list[Asset]:
    """The registered transformers this login may see."""
    rows = conn.execute(
        "SELECT transformer_id, region, insulation, hot_spot_limit_c, top_oil_limit_c"
        " FROM transformer_assets ORDER BY transformer_id"
    ).fetchall()
    return [Asset(*row) for row in rows]


def telemetry(
    conn: psycopg.Connection, transformer: str, start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """The transformer's temperatures and gases from ``start`` to ``end``, one column each."""
    rows = conn.execute(
        "SELECT time, metric, value FROM transformer_telemetry"
        " WHERE transformer_id = %s AND time >= %s AND time < %s AND metric = ANY(%s)",
        (transformer, start, end, [*TEMPERATURES, *GAS_METRICS]),
    ).fetchall()
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows, columns=["time", "metric", "value"])
    wide = frame.pivot_table(index="time", columns="metric", values="value", aggfunc="last")
    wide.index = pd.to_datetime(wide.index, utc=True)
    return wide.sort_index().rename(columns=GAS_METRICS)


def day_health(asset: Asset, samples: pd.DataFrame, day: dt.date) -> dict[str, Any]:
    """One row of ``transformer_health`` from the week's samples (the day's and the 7 before)."""
    start = pd.Timestamp(day, tz="UTC")
    today = samples[(samples.index >= start) & (samples.index < start + pd.Timedelta(days=1))]
    row: dict[str, Any] = {
        "transformer_id": asset.transformer_id,
        "day": day,
        "region": asset.region,
        "samples": len(today),
        **_temperatures(asset, today),
        **_gases(samples[samples.index < start + pd.Timedelta(days=1)], today),
    }
    return row


def _temperatures(asset: Asset, today: pd.DataFrame) -> dict[str, Any]:
    step = _step_minutes(today)
    found: dict[str, Any] = {
        "hot_spot_max_c": None,
        "top_oil_max_c": None,
        "minutes_over_hot_spot_limit": 0,
        "minutes_over_top_oil_limit": 0,
        "ageing_days": None,
        "peak_ageing_rate": None,
    }
    if "hot_spot_c" in today:
        hot_spot = today["hot_spot_c"].dropna()
        if len(hot_spot) > 1:
            used = ageing(hot_spot, asset.insulation)
            found |= {"ageing_days": used.days_aged, "peak_ageing_rate": used.peak_rate}
        if len(hot_spot):
            found["hot_spot_max_c"] = float(hot_spot.max())
            over = int((hot_spot > asset.hot_spot_limit_c).sum())
            found["minutes_over_hot_spot_limit"] = round(over * step)
    if "top_oil_c" in today:
        top_oil = today["top_oil_c"].dropna()
        if len(top_oil):
            found["top_oil_max_c"] = float(top_oil.max())
            over = int((top_oil > asset.top_oil_limit_c).sum())
            found["minutes_over_top_oil_limit"] = round(over * step)
    return found


def _gases(watched: pd.DataFrame, today: pd.DataFrame) -> dict[str, Any]:
    gases = [gas for gas in GASES if gas in watched]
    found: dict[str, Any] = {
        "gases_ppm": None,
        "iec_fault": None,
        "duval_zone": None,
        "gas_alarm_at": None,
        "gas_alarm_reasons": [],
    }
    if len(gases) < len(GASES) or today[gases].dropna().empty:
        return found
    last = today[gases].dropna().iloc[-1].to_dict()
    found |= {
        "gases_ppm": Jsonb(last),
        "iec_fault": iec_ratio_fault(last),
        "duval_zone": duval_zone(last),
    }
    hourly = watched[gases].dropna().resample("1h").mean().dropna()
    alarm = first_alarm(hourly) if len(hourly) else None
    if alarm is not None:
        found |= {
            "gas_alarm_at": alarm.at.to_pydatetime(),
            "gas_alarm_reasons": list(alarm.reasons),
        }
    return found


def _step_minutes(samples: pd.DataFrame) -> float:
    """The usual time between samples, in minutes (one sample stands for that long)."""
    if len(samples) < 2:  # noqa: PLR2004
        return 1.0
    return float(samples.index.to_series().diff().median().total_seconds() / 60)


def run_day(conn: psycopg.Connection, day: dt.date) -> list[dict[str, Any]]:
    """Compute and store every registered transformer's record for ``day``; return them."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    window = (start - RATE_WINDOW.to_pytimedelta(), start + dt.timedelta(days=1))
    rows = []
    for asset in assets(conn):
        samples = telemetry(conn, asset.transformer_id, *window)
        row = day_health(asset, samples, day) if len(samples) else _empty(asset, day)
        rows.append(row | {"input_from": window[0], "input_to": window[1]})
    with conn.transaction():
        for row in rows:
            _store(conn, row)
    return rows


def _empty(asset: Asset, day: dt.date) -> dict[str, Any]:
    return day_health(asset, pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC")), day)


def _store(conn: psycopg.Connection, row: dict[str, Any]) -> None:
    values = row | {"model": MODEL, "model_version": __version__}
    upsert(conn, "transformer_health", values, key=("transformer_id", "day"), stamped=True)
