"""Benchmark: the audit question for one meter and one year, on a 50-million-reading database.

The reference case traced every transformation applied to one customer's data in four hours.
This builds a TimescaleDB database of a year of 15-minute readings of 1,430 meters at 12
substations in four regions (``year_of_readings``: 50.1 million readings, 4,380 ledger
batches, hourly and daily rollups, estimates, corrections, a quarantined copy, an edge key
rotation, audit entries), then times
``governance trace subject`` for one meter over the year, as a user runs it (a new process,
``--format json``), three times.

Baseline, same run, same database: fetching that meter's year of readings alone
(``SELECT * FROM meter_readings WHERE meter_id = ... AND interval_end ...``), the least any
report about them must read.

Usage: .venv/bin/python benchmarks/bench_subject_trace.py [--meters N] [--days D]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from year_of_readings import START, TRACED, readings_count, size_options, year_database

from proto.progress import Progress

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent


def trace_seconds(dsn: str, pseudonym: str, days: int) -> float:
    """Wall time of ``governance trace subject`` for the traced meter's whole period."""
    end = START + dt.timedelta(days=days + 1)
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "governance"), "trace", "subject", "--pseudonym", pseudonym,
         "--from", f"{START:%Y-%m-%d}", "--to", f"{end:%Y-%m-%d}", "--format", "json",
         "--dsn", dsn],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def baseline_seconds(dsn: str, days: int) -> tuple[float, int]:
    """Fetching the traced meter's readings of the period, nothing else."""
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT * FROM meter_readings WHERE meter_id = %s AND interval_end > %s"
            " AND interval_end <= %s",
            (TRACED, START, START + dt.timedelta(days=days + 1)),
        ).fetchall()
    return time.perf_counter() - started, len(rows)


RUNS = 3  # trace and baseline, each


def main() -> None:
    """Build the database, then time the trace and the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_options(parser)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with year_database(options.meters, options.days) as (dsn, built):
        readings = readings_count(dsn)
        with psycopg.connect(dsn) as conn:
            pseudonym = conn.execute(
                "SELECT encode(sha256(pseudonym), 'hex') FROM meters WHERE meter_id = %s",
                (TRACED,),
            ).fetchone()[0]
        print(
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {readings:,} readings"
            f" ({options.meters:,} meters x {options.days} days) built in"
            f" {built:,.0f} s"
        )
        with Progress("trace and baseline", RUNS, unit="runs", log=log) as runs:
            for run in range(1, RUNS + 1):
                seconds = trace_seconds(dsn, pseudonym, options.days)
                base, rows = baseline_seconds(dsn, options.days)
                print(
                    f"run {run}: governance trace subject, one meter, {options.days} days:"
                    f" {seconds:.2f} s (a new process, JSON); baseline: fetching its {rows:,}"
                    f" readings alone {base:.2f} s",
                    flush=True,
                )
                runs.advance()


if __name__ == "__main__":
    main()
