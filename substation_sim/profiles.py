"""Interval energy of simulated meters: class shapes by hour and weekday, season, weather, noise.

Vectorized over all meters of a concentrator. Deterministic: the same seed, device and interval
always give the same energies, so runs repeat and tests can recompute the clean field.
"""

from __future__ import annotations

import math

import numpy as np

CUSTOMER_CLASSES = ("residential", "commercial", "industrial")
CLASS_CODES = {name: code for code, name in enumerate(CUSTOMER_CLASSES)}
# Mean power by class (W): a household (~3,900 kWh a year), a shop or office, a small plant.
MEAN_POWER_W = np.array([450.0, 4_000.0, 40_000.0])
NOISE_SHARE = np.array([0.15, 0.06, 0.04])  # per-interval variation, standard deviation
HEATING_PER_DEGREE = np.array([0.02, 0.015, 0.005])  # share more per degree below 15 °C
COOLING_PER_DEGREE = np.array([0.015, 0.02, 0.005])  # share more per degree above 22 °C
PEAK_FACTOR = 1.9  # expected peak of a mixed feeder over its mean, used to rate transformers
SEASON_SWING = 0.2  # winter demand is 20 % above the annual mean, summer 20 % below

# Relative demand by hour (0-23), normalised to a daily mean of about 1, by (class, weekend).
# fmt: off
_SHAPES = {
    (0, False): (0.55, 0.48, 0.45, 0.44, 0.46, 0.55, 0.80, 1.05, 1.00, 0.90, 0.85, 0.85,
                 0.88, 0.86, 0.84, 0.88, 1.00, 1.30, 1.65, 1.80, 1.70, 1.45, 1.10, 0.75),
    (0, True): (0.60, 0.52, 0.48, 0.46, 0.46, 0.50, 0.60, 0.75, 0.95, 1.10, 1.15, 1.15,
                1.15, 1.05, 1.00, 1.00, 1.05, 1.30, 1.55, 1.65, 1.60, 1.40, 1.10, 0.80),
    (1, False): (0.35, 0.33, 0.32, 0.32, 0.33, 0.40, 0.70, 1.20, 1.60, 1.75, 1.80, 1.80,
                 1.70, 1.75, 1.75, 1.70, 1.60, 1.40, 1.00, 0.70, 0.55, 0.45, 0.40, 0.37),
    (1, True): (0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.35, 0.45, 0.55, 0.60, 0.62, 0.62,
                0.60, 0.58, 0.55, 0.50, 0.45, 0.40, 0.38, 0.35, 0.33, 0.32, 0.31, 0.30),
    (2, False): (0.70, 0.70, 0.70, 0.70, 0.72, 0.80, 1.15, 1.25, 1.25, 1.25, 1.25, 1.20,
                 1.15, 1.25, 1.25, 1.25, 1.25, 1.20, 1.10, 1.05, 1.00, 0.95, 0.80, 0.72),
    (2, True): (0.50, 0.50, 0.50, 0.50, 0.50, 0.50, 0.52, 0.55, 0.58, 0.60, 0.60, 0.60,
                0.60, 0.60, 0.60, 0.58, 0.55, 0.52, 0.50, 0.50, 0.50, 0.50, 0.50, 0.50),
}
# fmt: on
SHAPES = np.array(
    [[_SHAPES[(c, w)] for w in (False, True)] for c in range(3)]
)  # [class, weekend, hour]


def shape_factor(classes: np.ndarray, seconds: float) -> np.ndarray:
    """Relative demand at UTC time ``seconds`` for each class, interpolated between hours."""
    day = seconds // 86_400
    weekend = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday: +3 makes Monday 0  # noqa: PLR2004
    hour = (seconds % 86_400) / 3_600
    low = int(hour) % 24
    frac = hour - int(hour)
    table = SHAPES[:, int(weekend)]
    return table[classes, low] * (1 - frac) + table[classes, (low + 1) % 24] * frac


def season_factor(seconds: float) -> float:
    """Demand relative to the annual mean on this day of the year (peak mid-January)."""
    day_of_year = (seconds / 86_400) % 365.25
    return 1.0 + SEASON_SWING * math.cos(2 * math.pi * (day_of_year - 15) / 365.25)


def temperature_factor(classes: np.ndarray, ambient_c: float) -> np.ndarray:
    """Extra demand for heating below 15 °C and cooling above 22 °C."""
    return (
        1.0
        + HEATING_PER_DEGREE[classes] * max(0.0, 15.0 - ambient_c)
        + COOLING_PER_DEGREE[classes] * max(0.0, ambient_c - 22.0)
    )


def expected_power_w(
    classes: np.ndarray, scales: np.ndarray, seconds: float, ambient_c: float
) -> np.ndarray:
    """Mean power of each meter at that moment, before per-interval noise."""
    return (
        MEAN_POWER_W[classes]
        * scales
        * shape_factor(classes, seconds)
        * season_factor(seconds)
        * temperature_factor(classes, ambient_c)
    )


def interval_energy_wh(  # noqa: PLR0913 - keywords only, one per input of the model
    *,
    seed: int,
    device_key: int,
    classes: np.ndarray,
    scales: np.ndarray,
    interval_end: int,
    interval_seconds: int,
    ambient_c: float,
) -> np.ndarray:
    """Energy (Wh, int64) each meter records in the interval ending at ``interval_end``."""
    middle = interval_end - interval_seconds / 2
    power = expected_power_w(classes, scales, middle, ambient_c)
    rng = np.random.default_rng([seed, 2, device_key, interval_end])
    noise = np.clip(rng.normal(1.0, NOISE_SHARE[classes]), 0.0, None)
    return np.floor(power * noise * interval_seconds / 3_600).astype(np.int64)
