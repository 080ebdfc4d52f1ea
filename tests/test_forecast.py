"""Day-ahead forecasts on simulated load: better than last week's, with a calibrated band.

The full backtest over nine weeks and several seeds is ``benchmarks/bench_forecast.py``; here a
short one, and the properties each forecast has.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from load_history import hourly_load, scenario

from analytics.forecast import backtest, day_ahead

START = dt.date(2026, 9, 7)


@pytest.fixture(scope="module")
def history():
    load, ambient = hourly_load(scenario(substations=1, meters=200), 45)
    return load["N-S01"], ambient


def test_a_day_ahead_forecast_and_its_band(history):
    load, ambient = history
    day = START + dt.timedelta(days=40)
    forecast = day_ahead(load, ambient, day)
    assert len(forecast.point) == 24
    assert forecast.point.index[0] == pd.Timestamp("2026-10-17", tz="UTC")
    assert (forecast.lower < forecast.point).all()
    assert (forecast.point < forecast.upper).all()
    actual = load.loc[forecast.point.index].to_numpy()
    week_before = load.shift(168).loc[forecast.point.index].to_numpy()
    model_error = np.mean(np.abs(actual - forecast.point.to_numpy()) / actual)
    naive_error = np.mean(np.abs(actual - week_before) / actual)
    assert model_error < naive_error


def test_backtest_beats_seasonal_naive_by_a_fifth(history):
    load, ambient = history
    days = [START + dt.timedelta(days=38 + i) for i in range(5)]
    found = backtest(load, ambient, days)
    assert found.days == 5
    assert found.gain_over_naive >= 0.2
    assert 0.6 <= found.coverage <= 1.0  # 120 hours: the benchmark measures it over 336


def test_too_little_history_is_named(history):
    load, ambient = history
    with pytest.raises(ValueError, match="needs three weeks of hourly history"):
        day_ahead(load, ambient, START + dt.timedelta(days=20))
