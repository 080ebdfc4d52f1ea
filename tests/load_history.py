"""Hourly load history of a simulated field, for the forecasting tests and benchmark.

Each meter's interval energy as the simulator's concentrators serve it (its profile model,
``substation_sim.profiles.interval_energy_wh``, with the per-meter noise), summed per
substation and hour, without serving anything: weeks of history in seconds. The ambient
temperature is the simulator's own.
"""

from __future__ import annotations

import pandas as pd

from substation_sim import profiles
from substation_sim.scenario import Scenario, parse_scenario
from substation_sim.topology import build_topology
from substation_sim.weather import ambient_c

INTERVAL_SECONDS = 900


def scenario(seed: int = 1, substations: int = 2, meters: int = 300) -> Scenario:
    """One region of ``substations``, two concentrators of ``meters`` each, from a Monday."""
    return parse_scenario(
        {
            "scenario": {"name": "forecast", "seed": seed, "start": "2026-09-07T00:00:00Z"},
            "regions": [
                {
                    "name": "North",
                    "substations": substations,
                    "concentrators_per_substation": 2,
                    "meters_per_concentrator": meters,
                    "mix": {"residential": 0.8, "commercial": 0.15, "industrial": 0.05},
                }
            ],
        }
    )


def hourly_load(chosen: Scenario, days: int) -> tuple[pd.DataFrame, pd.Series]:
    """KWh per substation and hour over ``days``, and the hourly ambient temperature (°C)."""
    ends = range(
        chosen.start + INTERVAL_SECONDS, chosen.start + days * 86_400 + 1, INTERVAL_SECONDS
    )
    temperatures = {
        end: ambient_c(
            end, mean_c=chosen.ambient_mean_c, daily_swing_c=chosen.ambient_daily_swing_c
        )
        for end in ends
    }
    columns = {}
    for substation in build_topology(chosen):
        energy = [
            sum(
                int(
                    profiles.interval_energy_wh(
                        seed=chosen.seed,
                        device_key=c.key,
                        classes=c.meters.classes,
                        scales=c.meters.scales,
                        interval_end=end,
                        interval_seconds=INTERVAL_SECONDS,
                        ambient_c=temperatures[end],
                    ).sum()
                )
                for c in substation.concentrators
            )
            for end in ends
        ]
        # an interval counts in the hour it starts in
        starts = pd.to_datetime([end - INTERVAL_SECONDS for end in ends], unit="s", utc=True)
        columns[substation.name] = pd.Series(energy, index=starts).resample("1h").sum() / 1000
    load = pd.DataFrame(columns)
    hours = load.index
    ambient = pd.Series(
        [
            ambient_c(
                t.timestamp() + 1_800,
                mean_c=chosen.ambient_mean_c,
                daily_swing_c=chosen.ambient_daily_swing_c,
            )
            for t in hours
        ],
        index=hours,
    )
    return load, ambient
