"""Simulated transformers developing incipient faults, and how the gas watch scores on them.

Shared by ``tests/test_gas_watch.py`` and ``benchmarks/bench_incipient_faults.py``: a field of
four transformers from the simulator (no servers started), their hourly gas samples as they
publish them, and one faulty transformer's outcome against the simulator's failure level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analytics.dga import duval_zone, iec_ratio_fault
from analytics.gas_watch import first_alarm
from substation_sim.field import Field
from substation_sim.record import FieldRecord
from substation_sim.scenario import parse_scenario
from substation_sim.thermal import FAILURE_PPM

NATURES = ("thermal", "partial_discharge", "arcing")
EXPECTED = {"thermal": "T3", "partial_discharge": "PD", "arcing": "D2"}
FAULT_DAY = 10
SAMPLE_SECONDS = 3_600


@dataclass(frozen=True, slots=True)
class Outcome:
    """One faulty transformer: flagged before failure, by how long, diagnosed as what."""

    flagged_before: bool
    lead_days: float
    iec: str
    duval: str | None


def field(seed: int, nature: str | None, folder: Path) -> Field:
    """Four transformers in two substations; a fault of ``nature`` from day 10 (None: clean)."""
    data = {
        "scenario": {
            "name": f"score-{nature}-{seed}",
            "seed": seed,
            "start": "2026-01-05T00:00:00Z",
        },
        "regions": [
            {
                "name": "North",
                "substations": 2,
                "concentrators_per_substation": 1,
                "meters_per_concentrator": 1,
                "transformers_per_substation": 2,
            }
        ],
        "faults": [{"kind": "incipient_fault", "start_hour": FAULT_DAY * 24, "nature": nature}]
        if nature
        else [],
    }
    record = FieldRecord(folder / f"{seed}-{nature}.sqlite")
    return Field(parse_scenario(data), record=record)


def gas_samples(built: Field, name: str, days: int) -> pd.DataFrame:
    """Hourly gas samples of one transformer, as it publishes them."""
    sensors = built.sensors[name]
    start = built.scenario.start
    times = range(start, start + days * 86_400, SAMPLE_SECONDS)
    index = pd.to_datetime(list(times), unit="s", utc=True)
    return pd.DataFrame([sensors.gases_at(t) for t in times], index=index)


def score(samples: pd.DataFrame, nature: str) -> Outcome:
    """The watch's first alarm against the failure level of the fault's key gas."""
    gas, level = FAILURE_PPM[nature]
    failed = samples.index[samples[gas] >= level]
    if not len(failed):
        raise SystemExit(f"{nature}: no failure within the samples; sample more days")
    alarm = first_alarm(samples)
    before = samples[samples.index < failed[0]].iloc[-1].to_dict()
    lead = (failed[0] - alarm.at).total_seconds() / 86_400 if alarm else 0.0
    return Outcome(
        flagged_before=alarm is not None and alarm.at < failed[0],
        lead_days=lead,
        iec=iec_ratio_fault(before),
        duval=duval_zone(before),
    )
