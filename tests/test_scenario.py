"""Scenario files: defaults, and errors that name the key at fault."""

from __future__ import annotations

import pytest

from substation_sim import ScenarioError, load_scenario, parse_scenario

MINIMAL = {"scenario": {"name": "x"}, "regions": [{"name": "North"}]}


def with_changes(**tables):
    data = {"scenario": dict(MINIMAL["scenario"]), "regions": [dict(MINIMAL["regions"][0])]}
    for table, values in tables.items():
        if table == "region":
            data["regions"][0].update(values)
        elif table == "fault":
            data["faults"] = [values]
        else:
            data.setdefault(table, {}).update(values)
    return data


def test_minimal_scenario_gets_documented_defaults():
    """One region with defaults: 1 substation, 1 concentrator of 1,000 meters, speed 900."""
    scenario = parse_scenario(with_changes())
    assert (scenario.meters, scenario.speed, scenario.history_intervals) == (1000, 900.0, 96)
    assert scenario.mqtt_port is None
    assert scenario.losses_share == 0.07


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (with_changes(region={"name": "Middle"}), "regions[0].name"),
        (
            with_changes(region={"meters_per_concentrator": 5000}),
            "regions[0].meters_per_concentrator",
        ),
        (with_changes(region={"mix": {"residential": 0.5}}), "regions[0].mix"),
        (with_changes(region={"mix": {"farms": 1.0}}), "regions[0].mix.farms"),
        (with_changes(scenario={"start": "2026-11-02T00:05:00Z"}), "scenario.start"),
        (with_changes(scenario={"start": "yesterday"}), "scenario.start"),
        (with_changes(scenario={"history_intervals": 10}), "scenario.history_intervals"),
        (with_changes(scenario={"speed": "fast"}), "scenario.speed"),
        (with_changes(fault={"kind": "gremlins"}), "faults[0].kind"),
        (with_changes(fault={"kind": "spike", "region": "South"}), "faults[0].region"),
        (with_changes(fault={"kind": "spike", "share": 2}), "faults[0].share"),
        (
            with_changes(
                modbus={"base_port": 65_000},
                region={"substations": 400, "concentrators_per_substation": 2},
            ),
            "modbus.base_port",
        ),
        (with_changes(scenario={"sped": 10.0}), "scenario.sped"),
        (with_changes(region={"substation": 3}), "regions[0].substation"),
        (with_changes(fault={"kind": "spike", "hour": 3}), "faults[0].hour"),
        (with_changes(mqt={"port": 1883}), "mqt"),
    ],
)
def test_error_names_the_key(data, key):
    """Each kind of mistake is reported against its dotted key."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert caught.value.key == key, str(caught.value)


def test_unknown_scenario_lists_the_shipped_ones():
    """A typo in a scenario name says which names exist."""
    with pytest.raises(ScenarioError, match="national-slice"):
        load_scenario("smal")


def test_a_misspelt_key_names_the_likely_one():
    with pytest.raises(ScenarioError, match="did you mean 'speed'"):
        parse_scenario(with_changes(scenario={"sped": 10.0}))
