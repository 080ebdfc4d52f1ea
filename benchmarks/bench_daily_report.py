"""Benchmark: the daily report for one day of a 50-million-reading database.

The reference case's daily management reporting took 30 minutes (4 hours before its
pipeline). This builds a TimescaleDB database of a year of 15-minute readings of 1,430 meters
at 12 substations in four regions (``year_of_readings``: 50.1 million readings, rollups), adds
what the report's other sections read for the last day (a feeder-head meter per substation,
each region's day-ahead forecast, a health record per transformer for every day of the year,
the day's batches at one per agent and interval, a refused batch, a quality alert), then
times ``analytics report daily`` as a user runs it (a new process, an operations login, row-level
security on), three times.

Baseline, same run, same database: one pass over the day's raw readings grouped by region
(``SELECT region_id, count(*), sum(energy_wh) FROM meter_readings WHERE interval_end ...``),
the least a report computing the day from readings instead of rollups must read.

Usage: .venv/bin/python benchmarks/bench_daily_report.py [--meters N] [--days D]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from year_of_readings import START, SUBSTATIONS, readings_count, size_options, year_database

from governance import access

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import OPERATOR_LOGIN, as_login

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
RUNS = 3  # report and baseline, each


def add_the_days_sections(conn: psycopg.Connection, day: dt.date, days: int) -> None:
    """Feeder heads, forecasts, transformer health, the day's batches, a refusal, an alert."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    conn.execute(  # the first meter of each substation measures what enters it
        "UPDATE meters SET role = 'feeder_head' WHERE meter_id IN"
        " (SELECT min(meter_id) FROM meters GROUP BY substation)"
    )
    conn.execute(
        "INSERT INTO load_forecasts (series, region, hour, point_kwh, lower_kwh, upper_kwh, model,"
        " model_version, training_from, training_to) SELECT 'region:' || region, region, hour,"
        " energy_wh / 1000.0 * 1.01, energy_wh / 1000.0 * 0.98, energy_wh / 1000.0 * 1.04,"
        " 'RandomForestRegressor', 'bench', %s, %s FROM region_hourly"
        " WHERE hour >= %s AND hour < %s + interval '1 day'",
        (START, start, start, start),
    )
    conn.execute(
        "INSERT INTO transformer_assets (transformer_id, substation, region, rated_kva)"
        " SELECT substation || '-T1', substation, region, 630 FROM agents"
    )
    conn.execute(
        "INSERT INTO transformer_health (transformer_id, day, region, samples, hot_spot_max_c,"
        " top_oil_max_c, minutes_over_hot_spot_limit, minutes_over_top_oil_limit, ageing_days,"
        " peak_ageing_rate, iec_fault, duval_zone, model, model_version, input_from, input_to)"
        " SELECT a.transformer_id, d::date, a.region, 1440, 70 + random() * 50, 60 + random() * 40,"
        " 0, 0, random() * 0.5, random() * 2, 'T1', 'T1', 'bench', 'bench', d - interval '7 days',"
        " d + interval '1 day' FROM transformer_assets a,"
        " generate_series(%s::date, %s::date, interval '1 day') d",
        (START, START + dt.timedelta(days=days - 1)),
    )
    conn.execute(
        "INSERT INTO batches (agent_id, sequence, payload_sha256, header_sha256, schema_version,"
        " pseudonym_key_id, software_version, register_map_version, devices, created_at,"
        " received_at, meter_readings, telemetry_points, core_version, validation_ruleset,"
        " substation, region, readings_stored, oldest_interval_end, newest_interval_end)"
        " SELECT a.agent_id, 1000000 + i, sha256((a.agent_id || '/day/' || i)::bytea),"
        " sha256((i || '/day/' || a.agent_id)::bytea), 1, 'k1', '0.1.0', 1,"
        " ARRAY['modbus://10.0.0.1'], e + interval '20 s', e + interval '21 s', 119, 0, '0.1.0',"
        " 'vee-1', a.substation, a.region, 119, e, e FROM agents a,"
        " generate_series(1, 96) i, LATERAL (SELECT %s + i * interval '15 minutes' AS e) t",
        (start,),
    )
    conn.execute(
        "INSERT INTO batch_refusals (agent_id, reason, refusals, first_at, last_at,"
        " last_sequence, last_detail, region) SELECT agent_id, 'BAD_SIGNATURE', 3,"
        " %s + interval '10 hours', %s + interval '11 hours', 7, 'signature does not verify',"
        " region FROM agents LIMIT 1",
        (start, start),
    )
    conn.execute(
        "INSERT INTO quality_alerts (kind, window_start, window_end, received, flagged, threshold,"
        " raised_by) VALUES ('suspect-share', %s + interval '9 hours', %s + interval '10 hours',"
        " 4000, 300, 0.05, 'bench')",
        (start, start),
    )
    conn.execute("ANALYZE")


def report_seconds(dsn: str, day: dt.date, out: Path) -> float:
    """Wall time of ``analytics report daily`` for ``day``."""
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "analytics"), "report", "daily", "--date", day.isoformat(), "--out", str(out),
         "--dsn", dsn],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def baseline_seconds(dsn: str, day: dt.date) -> tuple[float, int]:
    """One pass over the day's readings, grouped by region."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT region_id, count(*), sum(energy_wh) FROM meter_readings"
            " WHERE interval_end > %s AND interval_end <= %s GROUP BY region_id",
            (start, start + dt.timedelta(days=1)),
        ).fetchall()
    return time.perf_counter() - started, sum(row[1] for row in rows)


def main() -> None:
    """Build the database, then time the report and the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_options(parser)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    day = (START + dt.timedelta(days=options.days - 1)).date()
    with year_database(options.meters, options.days) as (dsn, built):
        with psycopg.connect(dsn, autocommit=True) as conn:
            add_the_days_sections(conn, day, options.days)
            access.grant(conn, OPERATOR_LOGIN, "operations")
        operator = as_login(dsn, OPERATOR_LOGIN)
        readings = readings_count(dsn)
        print(
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {readings:,} readings of"
            f" {options.meters:,} meters at {SUBSTATIONS} substations, built in {built:,.0f} s;"
            f" the report of {day}",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="daily-report-") as tmp:
            for run in range(1, RUNS + 1):
                seconds = report_seconds(operator, day, Path(tmp) / f"run-{run}")
                scanned, rows = baseline_seconds(operator, day)
                pages = sorted(p.name for p in (Path(tmp) / f"run-{run}").iterdir())
                print(
                    f"run {run}: report {seconds:.2f} s ({len(pages)} files); baseline, one pass"
                    f" over the day's {rows:,} readings: {scanned:.2f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
