"""Dissolved-gas analysis on textbook samples: each IEC 60599 ratio row, each Duval zone."""

from __future__ import annotations

import pytest

from analytics.dga import duval_zone, gas_alarms, iec_ratio_fault, ratios


def sample(h2: float, ch4: float, c2h6: float, c2h4: float, c2h2: float) -> dict[str, float]:
    return {"H2": h2, "CH4": ch4, "C2H6": c2h6, "C2H4": c2h4, "C2H2": c2h2, "CO": 300, "CO2": 3000}


@pytest.mark.parametrize(
    ("gases", "fault", "zone"),
    [
        # hydrogen with a little methane: corona in gas-filled cavities
        (sample(1_000, 50, 20, 0.5, 0), "PD", "PD"),
        # acetylene above ethylene, methane low against hydrogen: sparking
        (sample(100, 20, 5, 10, 40), "D1", "D1"),
        # acetylene and ethylene together, ethylene far above ethane: arcing
        (sample(100, 70, 10, 80, 60), "D2", "D2"),
        # methane and ethane, little ethylene: a hot spot below 300 °C
        (sample(100, 150, 200, 30, 0), "T1", "T1"),
        # ethylene above ethane, no acetylene to speak of: 300 to 700 °C
        (sample(100, 200, 60, 150, 5), "T2", "T2"),
        # ethylene dominant: above 700 °C (an overheated joint, circulating currents)
        (sample(100, 200, 30, 400, 10), "T3", "T3"),
    ],
)
def test_each_fault_type_by_ratios_and_triangle(gases, fault, zone):
    assert iec_ratio_fault(gases) == fault
    assert duval_zone(gases) == zone


def test_ratios_and_their_missing_denominators():
    r = ratios(sample(100, 200, 60, 150, 5))
    assert (r.c2h2_c2h4, r.ch4_h2, r.c2h4_c2h6) == pytest.approx((5 / 150, 2.0, 2.5))
    assert ratios(sample(0, 10, 0, 0, 0)).ch4_h2 is None
    assert iec_ratio_fault(sample(0, 10, 0, 0, 0)) == "undetermined"


def test_ratios_outside_every_row_are_undetermined():
    """Methane low, ethylene above ethane, some acetylene: no row of the table; the triangle."""
    gases = sample(1_000, 40, 10, 30, 15)  # r1 0.5, r2 0.04, r3 3
    assert iec_ratio_fault(gases) == "undetermined"
    assert duval_zone(gases) == "D2"


@pytest.mark.parametrize(
    ("ch4", "c2h4", "c2h2", "zone"),
    [
        (40, 40, 20, "DT"),  # thermal and electrical together
        (97, 2, 1, "T1"),  # just below the PD corner
        (98, 1.5, 0.5, "PD"),
        (50, 20, 30, "D1"),  # ethylene under 23 %, acetylene high: low-energy discharges
        (40, 30, 30, "D2"),  # ethylene over 23 %, acetylene over 29 %: high energy
        (60, 27, 13, "D2"),
        (49, 50, 1, "T3"),  # ethylene at 50 %: T3 begins
        (51, 49, 0, "T2"),
    ],
)
def test_duval_zone_boundaries(ch4, c2h4, c2h2, zone):
    assert duval_zone({"CH4": ch4, "C2H4": c2h4, "C2H2": c2h2}) == zone


def test_no_hydrocarbons_no_zone():
    assert duval_zone({"CH4": 0, "C2H4": 0, "C2H2": 0}) is None


def test_alarms_name_gases_above_their_typical_value_or_rising_too_fast():
    found = gas_alarms(sample(100, 200, 60, 150, 25), {"C2H4": 200.0, "H2": 10.0})
    assert [(a.gas, a.kind) for a in found] == [
        ("CH4", "concentration"),
        ("C2H2", "concentration"),
        ("C2H4", "rate"),
    ]
    assert gas_alarms(sample(15, 8, 5, 3, 0.2)) == []  # the simulator's healthy oil
