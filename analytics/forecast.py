"""Day-ahead load forecasts with an 80 % band, and the backtest that says how good they are.

A forecast for day D is made with what is known at the end of D-1: hourly load up to then,
the calendar, and D's ambient temperature (observed temperatures stand in for the weather
forecast an operator would feed in). The model is one of scikit-learn's gradient boosting or
random forest on the hour, the day of the week, the ambient temperature and the load a day and
a week earlier; ``choose`` picks it per series by a rolling-origin backtest. The
80 % band comes from the model's own record: the 10th and 90th percentiles of the relative
errors of its day-ahead forecasts of the last two weeks (each made from its own past, as in
service), applied to the point forecast. No distribution is assumed, and the errors are of
forecasts made as this one is, ahead of time (errors of a model refitted on the same data
would be smaller, and the band too narrow).

The backtest runs rolling origins (each day of the test period forecast from everything
before it) against two baselines: seasonal naive (the same hour a week earlier) and the
reference case's family, a random forest on the same features.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from threadpoolctl import threadpool_limits

Regressor: TypeAlias = HistGradientBoostingRegressor | RandomForestRegressor
FEATURES = ("hour", "weekday", "ambient_c", "load_day_before", "load_week_before")
CALIBRATION_DAYS = 14  # the band comes from the errors of the last two weeks' forecasts
MIN_HISTORY_DAYS = 14  # a week of lags, then two weeks to learn from
BAND = (0.1, 0.9)  # the 80 % band's quantiles of the calibration errors
HOURS = 24
WEEK_HOURS = 168


def features(load: pd.Series, ambient_c: pd.Series) -> pd.DataFrame:
    """One row per hour: calendar, ambient temperature, the load a day and a week before."""
    index = load.index
    return pd.DataFrame(
        {
            "hour": index.hour,
            "weekday": index.day_of_week,
            "ambient_c": ambient_c.reindex(index).to_numpy(),
            "load_day_before": load.shift(HOURS).to_numpy(),
            "load_week_before": load.shift(WEEK_HOURS).to_numpy(),
        },
        index=index,
    )


def _gradient_boosting() -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0)


def _forest() -> RandomForestRegressor:
    return RandomForestRegressor(n_estimators=100, min_samples_leaf=2, random_state=0, n_jobs=1)


MODELS: dict[str, Callable[[], Regressor]] = {
    "HistGradientBoostingRegressor": _gradient_boosting,
    "RandomForestRegressor": _forest,  # the reference case's family
}
DEFAULT_MODEL = "HistGradientBoostingRegressor"  # until a backtest has chosen one


def _fit(model: Regressor, table: pd.DataFrame, target: pd.Series) -> Regressor:
    """Fit on one thread.

    The models are small, and OpenMP's threads fighting over a busy machine's cores made each
    fit several times slower than alone.
    """
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit(table, target)


@dataclass(frozen=True, slots=True)
class Forecast:
    """One day's hourly forecast: the point and the 80 % band."""

    point: pd.Series
    lower: pd.Series
    upper: pd.Series


def _day(index: pd.DatetimeIndex, day: dt.date) -> np.ndarray:
    start = pd.Timestamp(day, tz="UTC")
    return np.asarray((index >= start) & (index < start + pd.Timedelta(days=1)))


def point_forecast(
    table: pd.DataFrame, load: pd.Series, day: dt.date, model: str = DEFAULT_MODEL
) -> pd.Series:
    """``model``'s hourly forecast of ``day``, fitted on every usable hour before it.

    Raises:
        ValueError: fewer than three weeks of hourly history before ``day``, or a model this
            release does not know.

    """
    if model not in MODELS:
        known = ", ".join(MODELS)
        raise ValueError(f"no model {model!r} in this release (known: {known}): train again")
    usable = _usable(table, day)
    if usable.sum() < MIN_HISTORY_DAYS * HOURS:
        raise ValueError(f"forecasting {day} needs three weeks of hourly history before it")
    columns = list(FEATURES)
    fitted = _fit(MODELS[model](), table.loc[usable, columns], load[usable])
    target = _day(table.index, day)
    return pd.Series(fitted.predict(table.loc[target, columns]), index=table.index[target])


def _usable(table: pd.DataFrame, day: dt.date) -> np.ndarray:
    before = np.asarray(table.index < pd.Timestamp(day, tz="UTC"))
    return before & table.notna().all(axis=1).to_numpy()


def _through(load: pd.Series, day: dt.date) -> pd.Series:
    """``load`` with every hour up to the end of ``day`` (NaN where not known yet)."""
    end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=HOURS - 1)
    if load.index[-1] >= end:
        return load
    return load.reindex(pd.date_range(load.index[0], end, freq="1h"))


def relative_errors(load: pd.Series, point: pd.Series) -> np.ndarray:
    """(actual - forecast) / forecast, hour by hour."""
    actual = load.reindex(point.index).to_numpy()
    return (actual - point.to_numpy()) / point.to_numpy()


def day_ahead(
    load: pd.Series,
    ambient_c: pd.Series,
    day: dt.date,
    errors: np.ndarray | None = None,
    model: str = DEFAULT_MODEL,
) -> Forecast:
    """Forecast ``day`` (UTC) with ``model`` from the hourly ``load`` before it and ``ambient_c``.

    The 80 % band comes from ``errors``: the relative errors of the model's own day-ahead
    forecasts of the days before (as the forecasts table records them); without them, the
    last ``CALIBRATION_DAYS`` days are forecast again, each from its own past.

    Raises:
        ValueError: too little history before ``day``.

    """
    load = _through(load, day)  # the day's hours, unknown, so that they have features
    table = features(load, ambient_c)
    if errors is None:
        errors = np.concatenate(
            [
                relative_errors(
                    load, point_forecast(table, load, day - dt.timedelta(days=back), model)
                )
                for back in range(CALIBRATION_DAYS, 0, -1)
            ]
        )
    point = point_forecast(table, load, day, model)
    low, high = np.quantile(errors, BAND)
    return Forecast(point, point * (1 + low), point * (1 + high))


@dataclass(frozen=True, slots=True)
class Backtest:
    """Rolling-origin figures over the test days."""

    days: int
    mape: float  # the model's mean absolute percentage error
    mape_seasonal_naive: float
    mape_random_forest: float
    coverage: float  # share of outcomes inside the 80 % band

    @property
    def gain_over_naive(self) -> float:
        """How much lower the model's MAPE is than seasonal naive's (0.2: 20 % lower)."""
        return 1 - self.mape / self.mape_seasonal_naive


def backtest(
    load: pd.Series, ambient_c: pd.Series, days: list[dt.date], model: str = DEFAULT_MODEL
) -> Backtest:
    """Forecast each of ``days`` with ``model`` from everything before it, against two baselines.

    Every day from ``CALIBRATION_DAYS`` before the first is forecast as it would have been,
    so each test day's band comes from the errors of the forecasts before it, as in service.
    """
    table = features(load, ambient_c)
    first = min(days)
    errors: dict[dt.date, np.ndarray] = {}
    for back in range(CALIBRATION_DAYS, 0, -1):
        earlier = first - dt.timedelta(days=back)
        errors[earlier] = relative_errors(load, point_forecast(table, load, earlier, model))
    scored: dict[str, list[np.ndarray]] = {"model": [], "naive": [], "forest": []}
    inside = []
    for day in sorted(days):
        recent = [errors[d] for d in sorted(errors)[-CALIBRATION_DAYS:]]
        forecast = day_ahead(load, ambient_c, day, np.concatenate(recent), model)
        target = _day(table.index, day)
        actual = load[target].to_numpy()
        errors[day] = relative_errors(load, forecast.point)
        scored["model"].append(_ape(actual, forecast.point.to_numpy()))
        scored["naive"].append(_ape(actual, table.loc[target, "load_week_before"].to_numpy()))
        forest = point_forecast(table, load, day, "RandomForestRegressor")
        scored["forest"].append(_ape(actual, forest.to_numpy()))
        inside.append((actual >= forecast.lower.to_numpy()) & (actual <= forecast.upper.to_numpy()))
    mape = {name: _mape(found, "the backtest") for name, found in scored.items()}
    return Backtest(
        days=len(days),
        mape=mape["model"],
        mape_seasonal_naive=mape["naive"],
        mape_random_forest=mape["forest"],
        coverage=float(np.mean(np.concatenate(inside))),
    )


@dataclass(frozen=True, slots=True)
class Choice:
    """The model a rolling-origin backtest chose for a series, and every candidate's MAPE."""

    model: str
    mape: dict[str, float]


def choose(load: pd.Series, ambient_c: pd.Series, days: list[dt.date]) -> Choice:
    """Forecast each of ``days`` with every candidate of ``MODELS``; the lowest MAPE wins.

    Each day is forecast from everything before it, as in service; only the point forecasts
    are compared (the band is each model's own, from its errors), on the hours with load.

    Raises:
        ValueError: too little history before the first day, or no hour with load.

    """
    table = features(load, ambient_c)
    mape = {}
    for model in MODELS:
        found = []
        for day in days:
            target = _day(table.index, day)
            point = point_forecast(table, load, day, model)
            found.append(_ape(load[target].to_numpy(), point.to_numpy()))
        mape[model] = _mape(found, "choosing a model")
    return Choice(min(mape, key=mape.__getitem__), mape)


def _ape(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Absolute percentage errors of the hours with load (an outage's empty hour has none)."""
    loaded = actual > 0
    return np.abs(actual[loaded] - predicted[loaded]) / actual[loaded]


def _mape(errors: list[np.ndarray], what: str) -> float:
    """The mean of ``errors``; raises ValueError naming ``what`` when no hour had load."""
    joined = np.concatenate(errors)
    if not joined.size:
        raise ValueError(f"{what}: no hour with load to score")
    return float(np.mean(joined))
