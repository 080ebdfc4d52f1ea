"""Interval energy of simulated meters: a residential day shape with per-meter scale and noise.

Deterministic: the same seed, meter and interval always give the same energy, so a run can be
repeated and a test can recompute what a meter should have served.
"""

from __future__ import annotations

import math
import random

# Relative demand by hour of day, normalised to a mean of about 1: night trough, morning bump,
# evening peak around 19:00 (typical residential load shape).
_RESIDENTIAL_SHAPE = (
    0.55,
    0.48,
    0.45,
    0.44,
    0.46,
    0.55,
    0.80,
    1.05,
    1.00,
    0.90,
    0.85,
    0.85,
    0.88,
    0.86,
    0.84,
    0.88,
    1.00,
    1.30,
    1.65,
    1.80,
    1.70,
    1.45,
    1.10,
    0.75,
)
MEAN_POWER_W = 450.0  # an average household: about 3,900 kWh a year
NOISE_SHARE = 0.15  # per-interval random variation, as a share of the expected value


def interval_energy_wh(*, seed: int, serial: int, interval_end: int, interval_seconds: int) -> int:
    """Energy in Wh that meter ``serial`` records for the interval ending at ``interval_end``."""
    hour = ((interval_end - interval_seconds) // 3600) % 24
    scale_rng = random.Random(f"{seed}:{serial}")  # noqa: S311 - simulation, not secrecy
    household_scale = 0.4 + 1.2 * scale_rng.random()  # 0.4x to 1.6x of the average home
    noise_rng = random.Random(f"{seed}:{serial}:{interval_end}")  # noqa: S311
    noise = 1.0 + NOISE_SHARE * (2.0 * noise_rng.random() - 1.0)
    mean_wh = MEAN_POWER_W * interval_seconds / 3600.0
    return max(0, math.floor(mean_wh * household_scale * _RESIDENTIAL_SHAPE[hour] * noise))
