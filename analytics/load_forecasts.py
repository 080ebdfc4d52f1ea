"""Load forecasts from the database and back: history in, a day's forecasts stored with lineage.

The history is the core's ``substation_hourly`` rollup (kWh per substation and hour: customer
meters, estimates included) and the hourly mean of the ambient temperature the region's
transformers report. Each substation is one series, each region's sum another
(``region:<name>``). ``predict`` forecasts a day for every series and stores it in
``load_forecasts``, each series with the model ``train`` chose for it (``forecast_models``);
``backtest`` scores rolling-origin forecasts of past days.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import psycopg
import sklearn
from psycopg.types.json import Jsonb

from analytics.forecast import DEFAULT_MODEL, Backtest, backtest, choose, day_ahead
from analytics.upsert import upsert
from proto.version import __version__

MODEL_VERSION = f"analytics {__version__}, scikit-learn {sklearn.__version__}"


def history(
    conn: psycopg.Connection, until: dt.date
) -> tuple[dict[str, tuple[str, pd.Series]], pd.Series]:
    """Every series (name -> (region, hourly kWh)) up to ``until``, and the ambient temperature.

    Hours without a rollup row count as no load only inside a series' span; the ambient
    temperature is the mean over every transformer that reported it that hour.
    """
    end = dt.datetime.combine(until, dt.time(), dt.UTC)
    rows = conn.execute(
        "SELECT substation, region, hour, energy_wh / 1000.0 FROM substation_hourly"
        " WHERE hour < %s ORDER BY hour",
        (end,),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["substation", "region", "hour", "kwh"])
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
    series: dict[str, tuple[str, pd.Series]] = {}
    for (substation, region), part in frame.groupby(["substation", "region"]):
        load = part.set_index("hour")["kwh"].astype(float).asfreq("1h", fill_value=0.0)
        series[str(substation)] = (str(region), load)
    for region, part in frame.groupby("region"):
        load = part.groupby("hour")["kwh"].sum().astype(float).asfreq("1h", fill_value=0.0)
        series[f"region:{region}"] = (str(region), load)
    ambient_rows = conn.execute(
        "SELECT date_trunc('hour', time), avg(value) FROM transformer_telemetry"
        " WHERE metric = 'ambient_c' AND time < %s + interval '1 day' GROUP BY 1 ORDER BY 1",
        (end,),
    ).fetchall()
    ambient = pd.Series(
        [float(v) for _, v in ambient_rows],
        index=pd.to_datetime([t for t, _ in ambient_rows], utc=True),
        dtype=float,
    )
    return series, ambient


def predict(conn: psycopg.Connection, day: dt.date) -> list[dict[str, Any]]:
    """Forecast ``day`` for every series and store it (a day forecast again is replaced).

    Each series uses the model ``train`` chose for it, ``DEFAULT_MODEL`` until then.

    Raises:
        ValueError: a series has too little history before ``day`` (named).

    """
    series, ambient = history(conn, day)
    chosen: dict[str, str] = dict(
        conn.execute("SELECT series, model FROM forecast_models").fetchall()
    )
    stored = []
    for name, (region, load) in series.items():
        model = chosen.get(name, DEFAULT_MODEL)
        try:
            forecast = day_ahead(load, ambient, day, model=model)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        lineage = {
            "model": model,
            "model_version": MODEL_VERSION,
            "training_from": load.index[0].to_pydatetime(),
            "training_to": dt.datetime.combine(day, dt.time(), dt.UTC),
        }
        for hour in forecast.point.index:
            row = {
                "series": name,
                "region": region,
                "hour": hour.to_pydatetime(),
                "point_kwh": float(forecast.point[hour]),
                "lower_kwh": float(forecast.lower[hour]),
                "upper_kwh": float(forecast.upper[hour]),
                **lineage,
            }
            stored.append(row)
    with conn.transaction():
        for row in stored:
            upsert(conn, "load_forecasts", row, key=("series", "hour"), stamped=True)
    return stored


def backtests(
    conn: psycopg.Connection, days: list[dt.date], model: str = DEFAULT_MODEL
) -> dict[str, Backtest]:
    """Rolling-origin backtest of every series over ``days`` (history up to the last of them)."""
    series, ambient = history(conn, max(days) + dt.timedelta(days=1))
    return {name: backtest(load, ambient, days, model) for name, (_, load) in series.items()}


def train(conn: psycopg.Connection, days: list[dt.date]) -> list[dict[str, Any]]:
    """Choose each series' model by a rolling-origin backtest over ``days``, and record it.

    Raises:
        ValueError: a series has too little history before the first of ``days`` (named).

    """
    series, ambient = history(conn, max(days) + dt.timedelta(days=1))
    chosen = []
    for name, (region, load) in series.items():
        try:
            choice = choose(load, ambient, days)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        chosen.append(
            {
                "series": name,
                "region": region,
                "model": choice.model,
                "model_version": MODEL_VERSION,
                "mape": Jsonb(choice.mape),
                "backtest_from": min(days),
                "backtest_days": len(days),
                "training_from": load.index[0].to_pydatetime(),
                "training_to": dt.datetime.combine(max(days), dt.time(), dt.UTC)
                + dt.timedelta(days=1),
            }
        )
    with conn.transaction():
        for row in chosen:
            upsert(conn, "forecast_models", row, key=("series",), stamped=True)
    return chosen
