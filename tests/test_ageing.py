"""Insulation ageing per IEC 60076-7: the design values, and the library's on a load cycle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from transformer_thermal_model.aging import days_aged
from transformer_thermal_model.model import Model
from transformer_thermal_model.schemas import InputProfile
from transformer_thermal_model.transformer import PaperInsulationType

from analytics.ageing import ageing, paper
from substation_sim.thermal import iec_model, nominal_current_a


def constant(hot_spot_c: float, days: float = 1.0) -> pd.Series:
    index = pd.date_range("2026-11-02", periods=int(days * 96) + 1, freq="15min", tz="UTC")
    return pd.Series(hot_spot_c, index=index)


@pytest.mark.parametrize(
    ("insulation", "hot_spot_c", "rate"),
    [
        ("normal", 98.0, 1.0),  # the design value: a day of life a day
        ("normal", 104.0, 2.0),  # doubling every 6 K
        ("normal", 92.0, 0.5),
        ("thermally_upgraded", 110.0, 1.0),
    ],
)
def test_the_standards_design_values(insulation, hot_spot_c, rate):
    result = ageing(constant(hot_spot_c), insulation)
    assert result.days_aged == pytest.approx(rate, rel=1e-9)
    assert result.mean_rate == pytest.approx(rate, rel=1e-9)
    assert result.peak_hot_spot_c == hot_spot_c


def test_a_daily_load_cycle_ages_as_the_library_and_the_formula_say():
    """The thermal model's hot spot under four days of load (1.1 pu each evening, 20 °C)."""
    index = pd.date_range(
        "2026-07-01", periods=4 * 96, freq="15min"
    )  # naive, as the model takes it
    hours = index.hour + index.minute / 60
    load = 0.5 + 0.6 * np.exp(-(((hours - 19) / 3) ** 2))  # per unit of nominal current
    rated_kva = 630.0
    profile = InputProfile.create(
        datetime_index=index,
        load_profile=load * nominal_current_a(rated_kva),
        ambient_temperature_profile=np.full(len(index), 20.0),
    )
    hot_spot = Model(temperature_profile=profile, transformer=iec_model(rated_kva)).run()
    hot_spot_c = hot_spot.hot_spot_temp_profile
    result = ageing(hot_spot_c, "normal")
    assert result.days_aged == pytest.approx(days_aged(hot_spot_c, PaperInsulationType.NORMAL))
    # and IEC 60076-7's formula integrated by hand: V = 2^((theta_h - 98) / 6)
    seconds = np.diff(hot_spot_c.index.to_numpy()) / np.timedelta64(1, "s")
    by_hand = float(np.sum(2 ** ((hot_spot_c.to_numpy()[1:] - 98) / 6) * seconds) / 86_400)
    assert result.days_aged == pytest.approx(by_hand, rel=1e-9)
    assert result.peak_rate > result.mean_rate  # the evening peak ages faster than the day
    assert result.window_days == pytest.approx(4 - 1 / 96)


def test_an_unknown_insulation_is_named():
    with pytest.raises(ValueError, match="insulation 'cotton' is not one of normal"):
        paper("cotton")
