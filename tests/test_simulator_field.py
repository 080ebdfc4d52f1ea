"""The simulated field without a network: load shapes, energy balance, physics, ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from fix_services import field_scenario

from substation_sim import Field, FieldRecord, load_scenario, parse_scenario
from substation_sim.profiles import CLASS_CODES, shape_factor
from substation_sim.thermal import nominal_current_a, temperatures

MONDAY = 1_793_577_600  # 2026-11-02 00:00 UTC
SATURDAY = MONDAY + 5 * 86_400
ALL_METER_FAULTS = (
    {"kind": "missing", "start_hour": 0, "hours": 6, "share": 0.01},
    {"kind": "spike", "start_hour": 1, "hours": 2, "share": 0.01, "factor": 6},
    {"kind": "zero", "start_hour": 1.5, "hours": 2, "share": 0.01},
    {"kind": "negative", "start_hour": 2, "hours": 1, "share": 0.01},
    {"kind": "stuck", "start_hour": 0, "hours": 4, "share": 0.01},
    {"kind": "storm", "start_hour": 3, "hours": 2, "share": 0.02},
    {"kind": "rollover", "start_hour": 2.5, "share": 0.01},
    {"kind": "reset", "start_hour": 4, "hours": 0.5, "share": 0.01},
    {"kind": "clock_skew", "start_hour": 5, "hours": 0.75, "seconds": 40},
)


def run_field(tmp_path, name, *, intervals, inject=True, faults=ALL_METER_FAULTS):
    record = FieldRecord(tmp_path / f"{name}.sqlite")
    field = Field(
        field_scenario(meters=2000, concentrators=2, faults=faults),
        record=record,
        inject_faults=inject,
    )
    for _ in range(intervals):
        field.close_interval()
    return field, record


def test_residential_demand_peaks_in_the_evening():
    """For households 19:00 is the day's highest hour and well above the night."""
    residential = np.array([CLASS_CODES["residential"]])
    by_hour = [float(shape_factor(residential, MONDAY + h * 3600)[0]) for h in range(24)]
    assert max(range(24), key=lambda h: by_hour[h]) == 19
    assert by_hour[19] > 3 * by_hour[3]


def test_weekday_and_weekend_differ_by_class():
    """Offices are busy on Monday noon, not on Saturday noon; households use more on Saturday."""
    commercial, residential = np.array([CLASS_CODES["commercial"]]), np.array([0])
    noon = 12 * 3600
    assert (
        shape_factor(commercial, MONDAY + noon)[0]
        > 2 * shape_factor(commercial, SATURDAY + noon)[0]
    )
    assert (
        shape_factor(residential, SATURDAY + noon)[0] > shape_factor(residential, MONDAY + noon)[0]
    )


def test_same_seed_same_field_other_seed_other_field(tmp_path):
    """The whole served record repeats under a seed."""
    _, first = run_field(tmp_path, "a", intervals=3)
    _, second = run_field(tmp_path, "b", intervals=3)
    assert first.served() == second.served()
    scenario = field_scenario(meters=50)
    other = parse_scenario(
        {
            "scenario": {"name": "o", "seed": 8},
            "regions": [{"name": "North", "meters_per_concentrator": 50}],
        }
    )
    a = Field(scenario, record=FieldRecord(tmp_path / "c.sqlite"))
    b = Field(other, record=FieldRecord(tmp_path / "d.sqlite"))
    a.close_interval()
    b.close_interval()
    assert [r.energy_wh for r in a.record.served()] != [r.energy_wh for r in b.record.served()]


def test_feeder_head_energy_is_customer_energy_plus_the_configured_losses(tmp_path):
    """Per interval, (feeder head - sum of customer meters) / feeder head = losses_share (7 %)."""
    field, record = run_field(tmp_path, "balance", intervals=8, inject=False)
    served = record.served()
    head_serial = field.substations[0].feeder_head_serial
    for end in {r.interval_end for r in served}:
        head = next(
            r.energy_wh for r in served if r.serial == head_serial and r.interval_end == end
        )
        customers = sum(
            r.energy_wh for r in served if r.serial != head_serial and r.interval_end == end
        )
        assert abs((head - customers) / head - 0.07) < 1e-4


def test_every_injected_fault_is_in_the_ground_truth_and_nothing_else(tmp_path):
    """Served values differ from the clean run exactly where the ground truth says."""
    intervals = 24
    _, faulty = run_field(tmp_path, "faulty", intervals=intervals)
    _, clean = run_field(tmp_path, "clean", intervals=intervals, inject=False)
    served = {(r.serial, r.interval_end): r for r in faulty.served()}
    truth = faulty.truth()
    skew = {
        (t.device, int(t.true_value)): int(t.served_value) - int(t.true_value)
        for t in truth
        if t.kind == "clock_skew"
    }
    device_of = {r.serial: r.device for r in clean.served()}
    value_faults = {
        (int(t.subject), t.start): t
        for t in truth
        if t.kind not in ("clock_skew", "rollover", "reset")
    }
    resets = {}
    for t in truth:
        if t.kind == "reset":
            resets.setdefault(int(t.subject), t.start)
    assert {t.kind for t in truth} >= {
        "missing",
        "spike",
        "zero",
        "negative",
        "stuck",
        "storm",
        "rollover",
        "reset",
        "clock_skew",
    }
    explained = set()
    for good in clean.served():
        key = (good.serial, good.interval_end)
        shifted = good.interval_end + skew.get((good.device, good.interval_end), 0)
        got = served.get((good.serial, shifted))
        if got is None:
            assert value_faults[key].kind == "missing", key
            explained.add(key)
            continue
        if got.energy_wh != good.energy_wh:
            fault = value_faults[key]
            assert (fault.true_value, fault.served_value) == (good.energy_wh, got.energy_wh)
            explained.add(key)
        if got.register_wh != good.register_wh:
            assert resets.get(good.serial, 2**63) <= good.interval_end, key
    assert explained == set(value_faults), "ground truth names faults that changed nothing"
    assert all(device_of[int(t.subject)] == t.device for t in truth if t.subject)


def test_rollover_wraps_the_register_at_its_capacity_in_the_fault_interval(tmp_path):
    """Each rollover row is a register that passed 999,999,999 Wh and restarted near zero."""
    _, record = run_field(
        tmp_path,
        "roll",
        intervals=12,
        inject=False,
        faults=({"kind": "rollover", "start_hour": 2, "share": 0.05},),
    )
    rows = [t for t in record.truth() if t.kind == "rollover"]
    assert rows, "no meter rolled over"
    by_key = {(r.serial, r.interval_end): r for r in record.served()}
    for row in rows:
        assert row.start == MONDAY + 2 * 3600
        now = by_key[(int(row.subject), row.start)]
        before = by_key[(int(row.subject), row.start - 900)]
        assert before.register_wh > 999_000_000
        assert now.register_wh == before.register_wh + now.energy_wh - 1_000_000_000


def test_hot_spot_rises_with_load_and_stays_within_iec_limits_at_rated_load():
    """Hotter with more load; at rated load and 20 °C within IEC 60076-7 limits.

    Limits for normal cyclic loading: hot spot 120 °C, top oil 105 °C (steady state after a day).
    """
    rated = nominal_current_a(630)
    hot = []
    for share in (0.4, 0.7, 1.0):
        top, hot_spot = temperatures(
            630,
            np.full(1440, rated * share),
            np.full(1440, 20.0),
            start=MONDAY,
            initial_top_oil_c=None,
        )
        hot.append(hot_spot[-1])
        if share == 1.0:
            assert hot_spot[-1] <= 120
            assert top[-1] <= 105
    assert hot[0] < hot[1] < hot[2]


def test_transformer_telemetry_follows_the_daily_load(tmp_path):
    """Afternoon load makes the transformer warmer and busier than the small hours."""
    field = Field(field_scenario(meters=2000), record=FieldRecord(tmp_path / "t.sqlite"))
    night = field.telemetry(MONDAY + 4 * 3600)[0]
    day = field.telemetry(MONDAY + 15 * 3600)[0]
    assert day.currents_a[0] > 1.3 * night.currents_a[0]
    assert day.hot_spot_c > night.hot_spot_c
    assert day.top_oil_c > night.top_oil_c
    assert set(day.gases_ppm) == {"H2", "CH4", "C2H6", "C2H4", "C2H2", "CO", "CO2"}


def test_incipient_fault_makes_gases_rise_over_days(tmp_path):
    """Ethylene and methane climb for days after a thermal fault starts; truth records it."""
    faults = ({"kind": "incipient_fault", "start_hour": 1, "hours": 96},)
    field = Field(
        field_scenario(meters=100, faults=faults), record=FieldRecord(tmp_path / "g.sqlite")
    )
    start = field.telemetry(MONDAY)[0].gases_ppm
    later = field.telemetry(MONDAY + 4 * 86_400)[0].gases_ppm
    assert later["C2H4"] > 5 * start["C2H4"]
    assert later["CH4"] > 2 * start["CH4"]
    (row,) = field.incipient_fault_truth()
    assert (row.kind, row.start) == ("incipient_fault", MONDAY + 3600)
    assert row.detail == "thermal: C2H4, CH4, H2 rising"
    # the gases alone, as the fault scorecard samples them, are what the transformer publishes
    reading = field.telemetry(MONDAY + 4 * 86_400)[0]
    assert field.sensors[reading.transformer].gases_at(MONDAY + 4 * 86_400) == later


@pytest.mark.parametrize("name", ["small", "storm", "outage", "national-slice"])
def test_shipped_scenarios_load(name):
    """Every scenario that ships is valid."""
    assert load_scenario(name).name == name
