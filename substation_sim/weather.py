"""Ambient temperature at the substations: the scenario's mean, a daily swing and slow weather."""

from __future__ import annotations

import math

WARMEST_HOUR = 15.0  # afternoon maximum
WEATHER_PERIOD_DAYS = 3.3  # passing weather systems
WEATHER_SWING_C = 2.0


def ambient_c(seconds: float, *, mean_c: float, daily_swing_c: float) -> float:
    """Ambient temperature (°C) at UTC time ``seconds``."""
    hour = (seconds % 86_400) / 3_600
    daily = daily_swing_c * math.cos(2 * math.pi * (hour - WARMEST_HOUR) / 24)
    weather = WEATHER_SWING_C * math.sin(2 * math.pi * seconds / (WEATHER_PERIOD_DAYS * 86_400))
    return mean_c + daily + weather
