"""Benchmark: the audit question for one meter and one year, on a 50-million-reading database.

The reference case traced every transformation applied to one customer's data in four hours.
This builds a TimescaleDB database of a year of 15-minute readings of 1,430 meters at 10
substations (50.1 million readings, 3,650 ledger batches, hourly and daily rollups, estimates,
corrections, a quarantined copy, an edge key rotation, audit entries), then times
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
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from core_ingest.schema import migrate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import PostgresCluster, free_loopback_port

BIN = Path(sys.executable).parent
START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
SUBSTATIONS = 10
TRACED = 7  # the meter_id whose year is traced


def build(dsn: str, meters: int, days: int) -> None:
    """Agents, meters, one batch per substation and day, a year of readings, rollups."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, storage="timescaledb")
        conn.execute(
            "INSERT INTO agents (agent_id, public_key, substation, region)"
            " SELECT 'sub-' || s, sha256(s::text::bytea), 'S' || s, 'North'"
            " FROM generate_series(1, %s) s",
            (SUBSTATIONS,),
        )
        conn.execute(
            "INSERT INTO meters (pseudonym, substation, region, first_agent_id, role)"
            " SELECT sha256(('meter' || m)::bytea), 'S' || (m %% %s + 1), 'North',"
            " 'sub-' || (m %% %s + 1), 'customer' FROM generate_series(1, %s) m",
            (SUBSTATIONS, SUBSTATIONS, meters),
        )
        conn.execute(
            "INSERT INTO batches (agent_id, sequence, payload_sha256, header_sha256,"
            " schema_version, pseudonym_key_id, software_version, register_map_version, devices,"
            " created_at, received_at, meter_readings, telemetry_points, core_version,"
            " validation_ruleset, substation, region, readings_stored)"
            " SELECT 'sub-' || s, d + 1, sha256((s || '/' || d)::bytea),"
            " sha256((d || '/' || s)::bytea), 1, 'k1', '0.1.0', 1, ARRAY['modbus://10.0.0.' || s],"
            " %s + (d + 1) * interval '1 day', %s + (d + 1) * interval '1 day', 96 * %s / %s, 0,"
            " '0.1.0', 'vee-1', 'S' || s, 'North', 96 * %s / %s"
            " FROM generate_series(1, %s) s, generate_series(0, %s - 1) d",
            (START, START, meters, SUBSTATIONS, meters, SUBSTATIONS, SUBSTATIONS, days),
        )
    for day in range(days):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO meter_readings (meter_id, interval_end, energy_wh, register_wh,"
                " quality_flags, poll_time, batch_id, device_no)"
                " SELECT m.meter_id, t, 50 + (m.meter_id * 7 + i) %% 200, 100000 + i * 120,"
                " CASE WHEN (m.meter_id + i) %% 97 = 0 THEN 2 ELSE 0 END,"
                " t + interval '20 seconds', b.batch_id, 1"
                " FROM meters m JOIN batches b ON b.substation = m.substation"
                " AND b.sequence = %s + 1,"
                " LATERAL (SELECT i, %s + (%s * 96 + i) * interval '15 minutes' AS t"
                "          FROM generate_series(1, 96) i) g",
                (day, START, day),
            )
        if day % 30 == 0:
            print(f"  day {day + 1} of {days} loaded", file=sys.stderr, flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _history_of_the_traced_meter(conn)
        for table, unit in (("substation_hourly", "hour"), ("substation_daily", "day")):
            conn.execute(
                f"INSERT INTO {table} (substation, region, {unit}, energy_wh, received,"  # noqa: S608
                " estimated, suspect) SELECT m.substation, 'North',"
                f" date_trunc('{unit}', r.interval_end - interval '15 minutes', 'UTC'),"
                " sum(r.energy_wh), count(*) FILTER (WHERE r.quality_flags & 2 = 0),"
                " count(*) FILTER (WHERE r.quality_flags & 2 <> 0), 0"
                " FROM meter_readings r JOIN meters m USING (meter_id) GROUP BY 1, 3"
            )
        conn.execute("VACUUM ANALYZE")


def _history_of_the_traced_meter(conn: psycopg.Connection) -> None:
    """Corrections, a quarantined copy and a key rotation, as the core would have kept them."""
    conn.execute(
        "INSERT INTO reading_corrections (meter_id, interval_end, estimated_energy_wh,"
        " estimated_register_wh, estimated_quality_flags, estimated_batch_id, energy_wh,"
        " quality_flags, batch_id) SELECT meter_id, interval_end, energy_wh - 5, register_wh, 2,"
        " batch_id, energy_wh, quality_flags, batch_id FROM meter_readings"
        " WHERE meter_id = %s AND quality_flags = 0 AND extract(minute FROM interval_end) = 45"
        " AND extract(hour FROM interval_end) = 3",
        (TRACED,),
    )
    conn.execute(
        "INSERT INTO reading_quarantine (meter_id, interval_end, energy_wh, register_wh,"
        " quality_flags, poll_time, batch_id, device_no, reason)"
        " SELECT meter_id, interval_end, 9999, register_wh, 0, poll_time, batch_id, 1,"
        " 'conflicts-with-stored' FROM meter_readings WHERE meter_id = %s LIMIT 3",
        (TRACED,),
    )
    conn.execute(
        "INSERT INTO pseudonym_map SELECT pseudonym, sha256(pseudonym), 'k1', 'k2',"
        " first_agent_id, 100 FROM meters WHERE meter_id = %s",
        (TRACED,),
    )


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


def main() -> None:
    """Build the database, then time the trace and the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1_430, help="meters (default 1,430)")
    parser.add_argument("--days", type=int, default=365, help="days of readings (default 365)")
    options = parser.parse_args()
    cluster = PostgresCluster(port=free_loopback_port(), timescaledb=True)
    cluster.start()
    try:
        dsn = cluster.create_database("meters")
        started = time.perf_counter()
        build(dsn, options.meters, options.days)
        with psycopg.connect(dsn) as conn:
            readings = conn.execute(
                "SELECT sum(greatest(c.reltuples, 0))::bigint FROM pg_class c"
                " JOIN pg_inherits i ON i.inhrelid = c.oid"
                " WHERE i.inhparent = 'meter_readings'::regclass"
            ).fetchone()[0]
            pseudonym = conn.execute(
                "SELECT encode(sha256(pseudonym), 'hex') FROM meters WHERE meter_id = %s",
                (TRACED,),
            ).fetchone()[0]
        print(
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {readings:,} readings"
            f" ({options.meters:,} meters x {options.days} days) built in"
            f" {time.perf_counter() - started:,.0f} s"
        )
        for run in range(1, 4):
            seconds = trace_seconds(dsn, pseudonym, options.days)
            base, rows = baseline_seconds(dsn, options.days)
            print(
                f"run {run}: governance trace subject, one meter, {options.days} days:"
                f" {seconds:.2f} s (a new process, JSON); baseline: fetching its {rows:,}"
                f" readings alone {base:.2f} s"
            )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
