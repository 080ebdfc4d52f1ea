"""The gas watch: rates by least squares, the first alarm, and the simulator's faults found.

Each fault nature the simulator injects is flagged days before its key gas reaches the failure
level and diagnosed as its textbook type by the IEC 60599 ratios; a clean year raises nothing.
``benchmarks/bench_incipient_faults.py`` prints the whole scorecard over more seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fault_fields import EXPECTED, field, gas_samples, score

from analytics.gas_watch import first_alarm, rates_per_year

HEALTHY = {"H2": 20.0, "CH4": 10.0, "C2H6": 6.0, "C2H4": 4.0, "C2H2": 0.2}


def hourly(days: float, **rising_per_year: float) -> pd.DataFrame:
    """Healthy oil for ``days``, hourly, with the named gases rising linearly."""
    index = pd.date_range("2026-01-05", periods=int(days * 24), freq="h", tz="UTC")
    years = np.arange(len(index)) / (24 * 365.25)
    return pd.DataFrame(
        {gas: base + rising_per_year.get(gas, 0.0) * years for gas, base in HEALTHY.items()},
        index=index,
    )


def test_rates_are_the_least_squares_slope_once_a_day_is_sampled():
    rates = rates_per_year(hourly(10, C2H4=300.0))
    assert rates["C2H4"].iloc[:23].isna().all()  # under a day of samples: no rate
    assert rates["C2H4"].iloc[30:].to_numpy() == pytest.approx(300.0)
    assert rates["H2"].iloc[30:].to_numpy() == pytest.approx(0.0, abs=1e-6)


def test_healthy_oil_raises_nothing():
    assert first_alarm(hourly(60)) is None


def test_a_gas_rising_faster_than_typical_is_the_alarm_and_its_reason():
    alarm = first_alarm(hourly(10, C2H4=300.0))  # typical rate: 146 ppm a year
    assert alarm is not None
    assert alarm.at == pd.Timestamp("2026-01-06 00:00", tz="UTC")  # a day of samples
    assert alarm.reasons == ("C2H4 rate 300 ppm/year > 146",)


def test_a_gas_above_its_typical_value_is_the_alarm():
    samples = hourly(2)
    samples.loc[samples.index[5] :, "C2H2"] = 25.0  # typical: 20 ppm
    alarm = first_alarm(samples)
    assert alarm is not None
    assert alarm.at == samples.index[5]
    assert alarm.reasons[0] == "C2H2 25.0 ppm > 20"


@pytest.mark.parametrize("nature", sorted(EXPECTED))
def test_each_simulated_fault_is_flagged_before_failure_and_diagnosed(nature, tmp_path):
    built = field(1, nature, tmp_path)
    for name in built.sensors:
        outcome = score(gas_samples(built, name, 40), nature)
        assert outcome.flagged_before, name
        assert outcome.lead_days > 5, name
        assert outcome.iec == EXPECTED[nature], name


def test_a_clean_year_raises_no_alarm(tmp_path):
    built = field(2, None, tmp_path)
    for name in built.sensors:
        assert first_alarm(gas_samples(built, name, 365)) is None, name
