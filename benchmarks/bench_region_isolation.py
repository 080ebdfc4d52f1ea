"""Benchmark: what region isolation costs, on a 50-million-reading database.

The reference case organised its data by regional domains; here the database itself keeps a
login limited to its regions (row-level security, migration 14). This builds the database of
``year_of_readings`` (a year of 1,430 meters at 12 substations in four regions, 50.1 million
readings) and times three questions a regional user asks, each as

- ``operations`` without a region scope (the baseline: no policy filters anything), and
- a member of ``operations`` limited to North (the policies filter every row it reads),

both asking for North explicitly, so the answers are equal (checked); and the limited login
also without naming the region (the policy alone filters). Each run asks the three in turn;
printed are the baseline's median and the median ratio of each other to it within a run.

Target (issue 12): limited within 20 % of the baseline.

Usage: .venv/bin/python benchmarks/bench_region_isolation.py [--meters N] [--days D]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import time
from pathlib import Path

import psycopg
from year_of_readings import (
    REGIONS,
    START,
    TRACED,
    readings_count,
    size_options,
    year_database,
)

from governance import access
from proto.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import as_login

log = logging.getLogger(__name__)

BASELINE, LIMITED = "bench_ops_all", "bench_ops_north"
REGION = REGIONS[0]
# (name, query): %(region)s is the region's name, %(region_id)s its id, %(meter)s one of its
# meters, %(since)s / %(until)s the period. ``compare`` also runs it without the region.
QUESTIONS = (
    (
        "daily energy of the region, one week, from the readings",
        (
            "SELECT date_trunc('day', interval_end - interval '15 minutes', 'UTC') AS day,"
            " sum(energy_wh) FROM meter_readings WHERE region_id = %(region_id)s"
            " AND interval_end > %(since)s AND interval_end <= %(since)s + interval '7 days'"
            " GROUP BY 1 ORDER BY 1"
        ),
    ),
    (
        "daily energy of the region, the year, from the daily rollup",
        (
            "SELECT day, energy_wh FROM region_daily WHERE region = %(region)s"
            " AND day >= %(since)s AND day < %(until)s ORDER BY day"
        ),
    ),
    (
        "one meter's readings, the year",
        (
            "SELECT * FROM meter_readings WHERE meter_id = %(meter)s"
            " AND interval_end > %(since)s AND interval_end <= %(until)s"
        ),
    ),
)


def logins(dsn: str) -> None:
    """The baseline login and the one limited to North, both members of operations."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for login in (BASELINE, LIMITED):
            conn.execute(f"CREATE ROLE {login} LOGIN")
        access.grant(conn, BASELINE, "operations")
        access.grant(conn, LIMITED, "operations", regions=[REGION])


def timed(dsn: str, query: str, params: dict[str, object]) -> tuple[float, list[tuple]]:
    """Seconds to run ``query`` and fetch every row, and the rows."""
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        found = conn.execute(query, params).fetchall()
        return time.perf_counter() - started, found


def compare(dsn: str, query: str, params: dict[str, object], repeat: int) -> dict[str, float]:
    """Median seconds of the baseline, and median ratios to it of the same run's other two.

    Each run asks the three in turn, so a busy moment of the shared machine slows all three;
    the ratio of each run is what is compared. The answers must be equal.
    """
    unscoped = query.replace(" region_id = %(region_id)s AND", "").replace(
        " region = %(region)s AND", ""
    )
    base: list[float] = []
    ratios: dict[str, list[float]] = {"North": [], "North, unnamed": []}
    with Progress("interleaved runs", repeat, unit="runs", log=log) as runs:
        for _ in range(repeat):
            seconds, expected = timed(as_login(dsn, BASELINE), query, params)
            limited, got = timed(as_login(dsn, LIMITED), query, params)
            alone, alone_got = timed(as_login(dsn, LIMITED), unscoped, params)
            if not (got == expected == alone_got) or not expected:
                raise SystemExit(f"answers differ or are empty for: {query}")
            base.append(seconds)
            ratios["North"].append(limited / seconds)
            ratios["North, unnamed"].append(alone / seconds)
            runs.advance()
    return {"operations": statistics.median(base)} | {
        who: statistics.median(values) for who, values in ratios.items()
    }


def main() -> None:
    """Build the database, then time each question per login."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_options(parser)
    parser.add_argument("--repeat", type=int, default=15, help="runs per question and login")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with year_database(options.meters, options.days) as (dsn, built):
        logins(dsn)
        with psycopg.connect(dsn) as conn:
            region_id, meter = conn.execute(
                "SELECT g.region_id, min(m.meter_id) FROM regions g JOIN meters m"
                " ON m.region = g.name WHERE g.name = %s AND m.meter_id >= %s GROUP BY 1",
                (REGION, TRACED),
            ).fetchone()
        print(
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {readings_count(dsn):,} readings"
            f" ({options.meters:,} meters x {options.days} days, {len(REGIONS)} regions) built"
            f" in {built:,.0f} s; {options.repeat} runs each"
        )
        params = {
            "region": REGION,
            "region_id": region_id,
            "meter": meter,
            "since": START,
            "until": START + dt.timedelta(days=options.days + 1),
        }
        for name, query in QUESTIONS:
            found = compare(dsn, query, params, options.repeat)
            print(
                f"{name}: operations {found['operations'] * 1000:.1f} ms;"
                f" limited to {REGION} {found['North']:.2f}x;"
                f" limited, region not named {found['North, unnamed']:.2f}x"
            )


if __name__ == "__main__":
    main()
