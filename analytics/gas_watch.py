"""Watching a transformer's dissolved gases over time: when to raise the alarm, and why.

A series of gas samples (ppm, one column per gas, a time index) is watched sample by sample,
as a daily job would see it: each gas's concentration against its typical value, and its rate
of increase (the slope of a least-squares line over the last ``rate_window`` of samples,
ppm a year) against its typical rate (``analytics.dga``). The first sample that breaches
either raises the alarm, with the IEC 60599 ratio fault and the Duval zone of that sample.

Only the gases of incipient faults are watched (H2 and the hydrocarbons): CO and CO2 come from
the paper's own ageing and are read apart (IEC 60599 treats cellulose separately).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.dga import TYPICAL_PPM, TYPICAL_PPM_PER_YEAR, duval_zone, iec_ratio_fault

FAULT_GASES = ("H2", "CH4", "C2H6", "C2H4", "C2H2")
RATE_WINDOW = pd.Timedelta(days=7)
MIN_RATE_SPAN = pd.Timedelta(days=1)  # fewer days of samples than this give no rate yet
SECONDS_PER_YEAR = 365.25 * 86_400


@dataclass(frozen=True, slots=True)
class FirstAlarm:
    """The first sample that breached a typical value or rate, and what it points to."""

    at: pd.Timestamp
    reasons: tuple[str, ...]  # e.g. "C2H4 rate 1,930 ppm/year > 146"
    iec_fault: str
    duval_zone: str | None


def rates_per_year(samples: pd.DataFrame, window: pd.Timedelta = RATE_WINDOW) -> pd.DataFrame:
    """Each gas's least-squares slope over the trailing ``window``, in ppm a year.

    NaN until the samples span ``MIN_RATE_SPAN``. Computed with rolling sums, not a fit per
    sample, so a year of hourly samples takes milliseconds.
    """
    seconds = pd.Series(
        (samples.index - samples.index[0]).total_seconds(), index=samples.index, dtype=float
    )
    rolling = seconds.rolling(window)
    count = rolling.count()
    mean_t = rolling.mean()
    var_t = (seconds * seconds).rolling(window).mean() - mean_t * mean_t
    span = seconds - seconds.rolling(window).min()
    rates = {}
    for gas in samples.columns:
        y = samples[gas].astype(float)
        cov = (seconds * y).rolling(window).mean() - mean_t * y.rolling(window).mean()
        slope = cov / var_t.where(var_t > 0)
        rates[gas] = (slope * SECONDS_PER_YEAR).where(
            (span >= MIN_RATE_SPAN.total_seconds()) & (count > 2)  # noqa: PLR2004 - a line needs 3
        )
    return pd.DataFrame(rates, index=samples.index)


def first_alarm(
    samples: pd.DataFrame,
    *,
    typical: dict[str, float] = TYPICAL_PPM,
    typical_rate: dict[str, float] = TYPICAL_PPM_PER_YEAR,
) -> FirstAlarm | None:
    """The first sample whose fault gases breach a typical value or rate (None: never)."""
    gases = [gas for gas in FAULT_GASES if gas in samples.columns]
    watched = samples[gases]
    rates = rates_per_year(watched)
    over_value = watched.gt(pd.Series({g: typical[g] for g in gases}))
    over_rate = rates.gt(pd.Series({g: typical_rate[g] for g in gases}))
    breached = (over_value | over_rate).any(axis=1).to_numpy()
    if not breached.any():
        return None
    i = int(np.argmax(breached))
    row, rate = watched.iloc[i], rates.iloc[i]
    reasons = tuple(
        [f"{g} {row[g]:,.1f} ppm > {typical[g]:,.0f}" for g in gases if over_value.iloc[i][g]]
        + [
            f"{g} rate {rate[g]:,.0f} ppm/year > {typical_rate[g]:,.0f}"
            for g in gases
            if over_rate.iloc[i][g]
        ]
    )
    sample = {gas: float(samples.iloc[i][gas]) for gas in samples.columns}
    return FirstAlarm(samples.index[i], reasons, iec_ratio_fault(sample), duval_zone(sample))
