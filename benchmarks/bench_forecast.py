"""Benchmark: day-ahead load forecasts, backtested with rolling origins against two baselines.

Nine weeks of hourly load of a simulated region (two substations of 600 meters, 80 %
households; ``tests/load_history.py``: the simulator's own profiles and noise, its ambient
temperature), the last two weeks forecast day by day, each from everything before it
(``analytics.forecast.backtest``): the model's MAPE against seasonal naive (the same hour a
week earlier) and a random forest on the same features (the reference case's family), and the
share of outcomes inside the 80 % band. Goals: MAPE at least 20 % lower than seasonal naive;
the band covering 78-82 %. ``--model`` picks the model backtested (with its own band):
``chosen`` (the default) is what ``analytics forecast train`` does, each series' model chosen
by a backtest of the week before the test period (``analytics.forecast.choose``).

Usage: .venv/bin/python benchmarks/bench_forecast.py [--seeds 1 2 3] [--model NAME|chosen]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from analytics.forecast import MODELS, backtest, choose
from proto.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from load_history import hourly_load, scenario

log = logging.getLogger(__name__)

HISTORY_DAYS = 63  # nine weeks from Monday 2026-09-07
TEST_DAYS = 14
CHOICE_DAYS = 7  # the week before the test period, as `analytics forecast train --days 7`
CHOSEN = "chosen"


def main() -> None:
    """Backtest each substation and the region, for each seed; print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="simulator seeds")
    parser.add_argument("--model", choices=[*sorted(MODELS), CHOSEN], default=CHOSEN)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    first = dt.date(2026, 9, 7) + dt.timedelta(days=HISTORY_DAYS - TEST_DAYS)
    days = [first + dt.timedelta(days=i) for i in range(TEST_DAYS)]
    before = [first - dt.timedelta(days=CHOICE_DAYS - i) for i in range(CHOICE_DAYS)]
    coverages = []
    with Progress("series backtested", 3 * len(options.seeds), unit="series", log=log) as done:
        for seed in options.seeds:
            load, ambient = hourly_load(scenario(seed=seed), HISTORY_DAYS)
            series = {name: load[name] for name in load.columns} | {"region": load.sum(axis=1)}
            for name, values in series.items():
                model = options.model
                if model == CHOSEN:
                    model = choose(values, ambient, before).model
                found = backtest(values, ambient, days, model)
                print(
                    f"seed {seed} {name:>6}: {model} MAPE {found.mape:.2%}, seasonal naive"
                    f" {found.mape_seasonal_naive:.2%} ({found.gain_over_naive:.0%} lower),"
                    f" random forest {found.mape_random_forest:.2%}; 80 % band covers"
                    f" {found.coverage:.1%} of {found.days * 24} hours",
                    flush=True,
                )
                coverages.append(found.coverage)
                done.advance()
    print(
        f"all {len(coverages)} series: the 80 % band covers"
        f" {sum(coverages) / len(coverages):.1%} of {len(coverages) * TEST_DAYS * 24} hours"
    )


if __name__ == "__main__":
    main()
