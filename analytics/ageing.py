"""Insulation ageing per IEC 60076-7, with transformer-thermal-model's own functions.

The relative ageing rate V (days of life used per day) and the loss of life over a window
come from ``transformer_thermal_model.aging``; nothing here re-derives them. This module
chooses the paper (normal Kraft paper: V = 1 at a 98 °C hot spot, doubling every 6 K;
thermally upgraded paper: V = 1 at 110 °C) from the asset registry's ``insulation``, and
turns a hot-spot series into what a report shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from transformer_thermal_model.aging import aging_rate_profile, days_aged
from transformer_thermal_model.transformer import PaperInsulationType

PAPER = {
    "normal": PaperInsulationType.NORMAL,
    "thermally_upgraded": PaperInsulationType.THERMAL_UPGRADED,
}


@dataclass(frozen=True, slots=True)
class Ageing:
    """What a window's hot-spot temperatures did to the insulation."""

    days_aged: float  # loss of life over the window, in days
    window_days: float  # the window's length
    peak_rate: float  # the highest relative ageing rate reached
    peak_hot_spot_c: float

    @property
    def mean_rate(self) -> float:
        """Days of life used per day of the window (1.0: ageing as designed)."""
        return self.days_aged / self.window_days if self.window_days else 0.0


def paper(insulation: str) -> PaperInsulationType:
    """The library's paper type for the registry's ``insulation``.

    Raises:
        ValueError: naming the insulation and the ones known.

    """
    try:
        return PAPER[insulation]
    except KeyError:
        known = ", ".join(sorted(PAPER))
        raise ValueError(f"insulation {insulation!r} is not one of {known}") from None


def ageing(hot_spot_c: pd.Series, insulation: str) -> Ageing:
    """Loss of life and ageing rates of a hot-spot series (a time index, UTC)."""
    kind = paper(insulation)
    rates = aging_rate_profile(hot_spot_c, kind)
    index = hot_spot_c.index
    window = (index[-1] - index[0]).total_seconds() / 86_400 if len(index) > 1 else 0.0
    return Ageing(
        days_aged=float(days_aged(hot_spot_c, kind)),
        window_days=window,
        peak_rate=float(rates.max()) if len(rates) else 0.0,
        peak_hot_spot_c=float(hot_spot_c.max()) if len(hot_spot_c) else float("nan"),
    )
