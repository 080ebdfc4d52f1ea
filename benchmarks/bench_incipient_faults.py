"""Benchmark: the incipient-fault scorecard of the gas watch, against the simulator's truth.

For each fault nature the simulator injects (thermal, partial discharge, arcing) and each seed,
a field of four transformers develops the fault from day 10; the benchmark samples each
transformer's dissolved gases hourly (what the transformers publish, without running the
servers), finds the first alarm of ``analytics.gas_watch`` and the moment the fault's key gas
reaches its failure level (``substation_sim.thermal.FAILURE_PPM``: ten times typical), and
reports the share flagged before failure (goal: 90 %, the reference case's figure), the lead
time, and the IEC 60599 and Duval diagnoses of the last sample before failure. On clean runs
(no fault, a year per transformer) it counts the false alarms per transformer-year (goal:
none).

Usage: .venv/bin/python benchmarks/bench_incipient_faults.py [--seeds 5] [--days 40]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from analytics.gas_watch import first_alarm
from proto.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fault_fields import EXPECTED, NATURES, Outcome, field, gas_samples, score

log = logging.getLogger(__name__)


def main() -> None:
    """Score every nature over the seeds, then the clean runs; print the scorecard."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per fault nature")
    parser.add_argument("--days", type=int, default=40, help="days sampled per faulty run")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(
            "fault runs", len(NATURES) * options.seeds + options.seeds, unit="fields", log=log
        ) as runs,
    ):
        folder = Path(tmp)
        outcomes: dict[str, list[Outcome]] = {n: [] for n in NATURES}
        for nature in NATURES:
            for seed in range(1, options.seeds + 1):
                built = field(seed, nature, folder)
                outcomes[nature] += [
                    score(gas_samples(built, name, options.days), nature) for name in built.sensors
                ]
                runs.advance()
        false_alarms, transformer_years = 0, 0.0
        for seed in range(1, options.seeds + 1):
            built = field(seed, None, folder)
            for name in built.sensors:
                false_alarms += first_alarm(gas_samples(built, name, 365)) is not None
                transformer_years += 1.0
            runs.advance()
    report(outcomes, false_alarms, transformer_years)


def report(outcomes: dict[str, list[Outcome]], false_alarms: int, years: float) -> None:
    """One line per nature, one for all, one for the clean runs."""
    everything = [o for found in outcomes.values() for o in found]
    for nature, found in [*outcomes.items(), ("all", everything)]:
        flagged = [o for o in found if o.flagged_before]
        leads = [o.lead_days for o in flagged]
        line = (
            f"{nature:>17}: {len(flagged)}/{len(found)} flagged before failure"
            f" ({len(flagged) / len(found):.0%}); lead time median"
            f" {statistics.median(leads):.1f} d, min {min(leads):.1f} d"
        )
        if nature in EXPECTED:
            iec = sum(o.iec == EXPECTED[nature] for o in found)
            duval = sum(o.duval == EXPECTED[nature] for o in found)
            line += (
                f"; diagnosed {EXPECTED[nature]} before failure: IEC ratios {iec}/{len(found)},"
                f" Duval {duval}/{len(found)}"
            )
        print(line)
    print(
        f"clean runs: {false_alarms} false alarms in {years:.0f} transformer-years"
        f" ({false_alarms / years:.2f} per transformer-year)"
    )


if __name__ == "__main__":
    main()
