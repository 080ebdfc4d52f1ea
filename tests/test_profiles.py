"""Simulated load: repeatable, with a residential evening peak."""

from __future__ import annotations

from substation_sim.profiles import interval_energy_wh

DAY = 1_790_035_200 - 1_790_035_200 % 86_400  # a UTC midnight


def energy(serial: int, hour: int, seed: int = 1) -> int:
    return interval_energy_wh(
        seed=seed, serial=serial, interval_end=DAY + hour * 3600 + 900, interval_seconds=900
    )


def test_same_seed_same_energy_other_seed_other_energy():
    """The field is repeatable under a seed and different under another."""
    assert energy(42, 12) == energy(42, 12)
    assert [energy(s, 12) for s in range(20)] != [energy(s, 12, seed=2) for s in range(20)]


def test_evening_peak_is_above_the_night_trough_for_the_average_meter():
    """Summed over many meters, 19:00 is at least three times 03:00."""
    evening = sum(energy(s, 19) for s in range(500))
    night = sum(energy(s, 3) for s in range(500))
    assert evening > 3 * night
