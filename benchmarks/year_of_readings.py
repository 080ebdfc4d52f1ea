"""A year of 15-minute readings in a TimescaleDB database, as the core would have stored them.

Shared by the benchmarks that need a big database: agents at ``SUBSTATIONS`` substations
spread over four regions, their meters, one ledger batch per substation and day, the readings
(every 97th an estimate), hourly and daily rollups, and one meter's history of corrections, a
quarantined copy and an edge key rotation. Loaded day by day with INSERT ... SELECT, about
125,000 readings a second here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from core_ingest.schema import migrate
from core_ingest.schema.dictionary import load_dictionary
from governance import access

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import OWNER_LOGIN, PostgresCluster, as_login, free_loopback_port

START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
SUBSTATIONS = 12
REGIONS = ("North", "South", "East", "West")  # the reference case's regional domains
TRACED = 7  # the meter_id whose history is filled in


def region_of(substation: int) -> str:
    """Substations 1..12 go to the regions in turn."""
    return REGIONS[(substation - 1) % len(REGIONS)]


def build(dsn: str, owner_dsn: str, meters: int, days: int) -> None:
    """Migrate as the schema's owner, grant (``governance access init``), then load the year.

    ``dsn`` is a superuser's, which loads the data; ``owner_dsn`` the same database's as its
    owner, who must not bypass row-level security (the views filter by region as their owner).
    """
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        migrate(conn, storage="timescaledb")
    with psycopg.connect(dsn, autocommit=True) as conn:
        access.init(conn, load_dictionary())
        conn.execute(
            "INSERT INTO regions (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            (list(REGIONS),),
        )
        conn.execute(
            "INSERT INTO agents (agent_id, public_key, substation, region)"
            " SELECT 'sub-' || s, sha256(s::text::bytea), 'S' || s, (%s::text[])[(s - 1) %% 4 + 1]"
            " FROM generate_series(1, %s) s",
            (list(REGIONS), SUBSTATIONS),
        )
        conn.execute(
            "INSERT INTO meters (pseudonym, substation, region, first_agent_id, role)"
            " SELECT sha256(('meter' || m)::bytea), a.substation, a.region, a.agent_id,"
            " 'customer' FROM generate_series(1, %s) m"
            " JOIN agents a ON a.agent_id = 'sub-' || (m %% %s + 1)",
            (meters, SUBSTATIONS),
        )
        conn.execute(
            "INSERT INTO batches (agent_id, sequence, payload_sha256, header_sha256,"
            " schema_version, pseudonym_key_id, software_version, register_map_version, devices,"
            " created_at, received_at, meter_readings, telemetry_points, core_version,"
            " validation_ruleset, substation, region, readings_stored)"
            " SELECT a.agent_id, d + 1, sha256((a.agent_id || '/' || d)::bytea),"
            " sha256((d || '/' || a.agent_id)::bytea), 1, 'k1', '0.1.0', 1,"
            " ARRAY['modbus://10.0.0.1'], %s + (d + 1) * interval '1 day',"
            " %s + (d + 1) * interval '1 day', 96 * %s / %s, 0, '0.1.0', 'vee-1', a.substation,"
            " a.region, 96 * %s / %s FROM agents a, generate_series(0, %s - 1) d",
            (START, START, meters, SUBSTATIONS, meters, SUBSTATIONS, days),
        )
    for day in range(days):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO meter_readings (meter_id, interval_end, energy_wh, register_wh,"
                " quality_flags, poll_time, batch_id, device_no, region_id)"
                " SELECT m.meter_id, t, 50 + (m.meter_id * 7 + i) %% 200, 100000 + i * 120,"
                " CASE WHEN (m.meter_id + i) %% 97 = 0 THEN 2 ELSE 0 END,"
                " t + interval '20 seconds', b.batch_id, 1, g.region_id"
                " FROM meters m JOIN batches b ON b.substation = m.substation"
                " AND b.sequence = %s + 1 JOIN regions g ON g.name = m.region,"
                " LATERAL (SELECT i, %s + (%s * 96 + i) * interval '15 minutes' AS t"
                "          FROM generate_series(1, 96) i) s",
                (day, START, day),
            )
        if day % 30 == 0:
            print(f"  day {day + 1} of {days} loaded", file=sys.stderr, flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _history_of_the_traced_meter(conn)
        for table, unit in (("substation_hourly", "hour"), ("substation_daily", "day")):
            conn.execute(
                f"INSERT INTO {table} (substation, region, {unit}, energy_wh, received,"  # noqa: S608
                " estimated, suspect) SELECT m.substation, min(m.region),"
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
        " quality_flags, batch_id, region_id) SELECT meter_id, interval_end, energy_wh - 5,"
        " register_wh, 2, batch_id, energy_wh, quality_flags, batch_id, region_id"
        " FROM meter_readings WHERE meter_id = %s AND quality_flags = 0"
        " AND extract(minute FROM interval_end) = 45 AND extract(hour FROM interval_end) = 3",
        (TRACED,),
    )
    conn.execute(
        "INSERT INTO reading_quarantine (meter_id, interval_end, energy_wh, register_wh,"
        " quality_flags, poll_time, batch_id, device_no, region_id, reason)"
        " SELECT meter_id, interval_end, 9999, register_wh, 0, poll_time, batch_id, 1,"
        " region_id, 'conflicts-with-stored' FROM meter_readings WHERE meter_id = %s LIMIT 3",
        (TRACED,),
    )
    conn.execute(
        "INSERT INTO pseudonym_map SELECT m.pseudonym, sha256(m.pseudonym), 'k1', 'k2',"
        " m.first_agent_id, 100, g.region_id FROM meters m JOIN regions g ON g.name = m.region"
        " WHERE m.meter_id = %s",
        (TRACED,),
    )


def readings_count(dsn: str) -> int:
    """Readings stored, from the chunks' statistics (after the build's ANALYZE)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT sum(greatest(c.reltuples, 0))::bigint FROM pg_class c"
            " JOIN pg_inherits i ON i.inhrelid = c.oid"
            " WHERE i.inhparent = 'meter_readings'::regclass"
        ).fetchone()[0]


def size_options(parser: argparse.ArgumentParser) -> None:
    """``--meters`` and ``--days``: the size of the year built."""
    parser.add_argument("--meters", type=int, default=1_430, help="meters (default 1,430)")
    parser.add_argument("--days", type=int, default=365, help="days of readings (default 365)")


@contextlib.contextmanager
def year_database(meters: int, days: int) -> Iterator[tuple[str, float]]:
    """A throwaway TimescaleDB cluster holding the year: its superuser DSN, seconds to build."""
    cluster = PostgresCluster(port=free_loopback_port(), timescaledb=True)
    cluster.start()
    try:
        dsn = cluster.create_database("meters")
        started = time.perf_counter()
        build(dsn, as_login(dsn, OWNER_LOGIN), meters, days)
        yield dsn, time.perf_counter() - started
    finally:
        cluster.stop()
