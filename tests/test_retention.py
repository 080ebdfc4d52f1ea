"""Retention: what the dictionary says to keep, and nothing longer, on both storages."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from fix_services import governance
from psycopg import sql

from core_ingest.schema import NATIVE
from governance.retention import cutoff

pytestmark = pytest.mark.integration

OLD_DAY = dt.date(2014, 3, 1)  # older than any retention here (P10Y readings, P2Y alerts)
NEW_DAY = dt.date(2026, 11, 30)


def fill(dsn: str, storage: str) -> None:
    """Readings, a batch, refused values, alerts and rollups on an old and a recent day."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO agents (agent_id, public_key, substation) VALUES ('a', %s, 'S1')",
            (bytes(32),),
        )
        for sequence, day in enumerate((OLD_DAY, NEW_DAY), start=1):
            start = dt.datetime.combine(day, dt.time(), dt.UTC)
            if storage == NATIVE:
                for table in ("meter_readings", "transformer_telemetry"):
                    conn.execute(
                        sql.SQL(
                            "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                        ).format(
                            sql.Identifier(f"{table}_p{day:%Y%m%d}"),
                            sql.Identifier(table),
                            sql.Literal(start),
                            sql.Literal(start + dt.timedelta(days=1)),
                        )
                    )
            batch = conn.execute(
                "INSERT INTO batches (agent_id, sequence, payload_sha256, schema_version,"
                " pseudonym_key_id, software_version, register_map_version, devices, created_at,"
                " received_at, meter_readings, telemetry_points, core_version)"
                " VALUES ('a', %s, '', 1, 'k', 't', 1, '{}', %s, %s, 95, 1, 't')"
                " RETURNING batch_id",
                (sequence, start, start),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO meter_readings (meter_id, interval_end, energy_wh, register_wh,"
                " quality_flags, poll_time, batch_id, device_no, region_id)"
                " SELECT 1, %s + i * interval '15 minutes', 10, i, 0, %s, %s, 1, 1"
                " FROM generate_series(1, 95) i",
                (start, start, batch),
            )
            conn.execute(
                "INSERT INTO transformer_telemetry (transformer_id, time, metric, value,"
                " quality_flags, agent_id, batch_sequence, region_id) VALUES ('T1', %s,"
                " 'top_oil_c', 40, 0, 'a', %s, 1)",
                (start + dt.timedelta(hours=1), sequence),
            )
            conn.execute(
                "INSERT INTO refused_values (batch_id, region_id, kind, position, reason, raw)"
                " VALUES (%s, 1, 'meter_reading', 0, 'energy out of range', '{}')",
                (batch,),
            )
            conn.execute(
                "INSERT INTO quality_alerts (kind, window_start, window_end, received, flagged,"
                " threshold, raised_at, raised_by) VALUES ('suspect-share', %s, %s, 1, 1, 0.005,"
                " %s, 'test')",
                (start, start, start),
            )
            conn.execute(
                "INSERT INTO substation_daily (substation, region, day, energy_wh, received,"
                " estimated, suspect) VALUES ('S1', 'North', %s, 950, 95, 0, 0)",
                (start,),
            )


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in (
                "meter_readings",
                "transformer_telemetry",
                "refused_values",
                "quality_alerts",
                "substation_daily",
            )
        }


def test_cutoff_is_calendar_arithmetic():
    now = dt.datetime(2028, 2, 29, 12, tzinfo=dt.UTC)
    assert cutoff("P10Y", now) == dt.datetime(2018, 2, 28, 12, tzinfo=dt.UTC)
    assert cutoff("P1Y6M", now) == dt.datetime(2026, 8, 29, 12, tzinfo=dt.UTC)
    assert cutoff("P90D", now) == now - dt.timedelta(days=90)
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        cutoff("10 years", now)


def test_dry_run_shows_and_apply_removes_whole_chunks_and_old_rows(storage_dsn, storage):
    """Old readings and telemetry go as whole chunks or partitions, other old data as rows.

    Refused values age with their batch; the daily rollups outlive the readings.
    """
    fill(storage_dsn, storage)
    before = counts(storage_dsn)
    dry = governance("retention", "apply", "--dry-run", "--json", "--dsn", storage_dsn)
    assert dry.returncode == 0, dry.stderr
    plan = {r["object"]: r for r in json.loads(dry.stdout)["would_remove"]}
    assert counts(storage_dsn) == before
    assert len(plan["meter_readings"]["parts"]) == 1
    assert plan["meter_readings"]["method"] == (
        "drop partitions" if storage == NATIVE else "drop chunks"
    )
    assert (plan["refused_values"]["rows"], plan["quality_alerts"]["rows"]) == (1, 1)
    assert plan["substation_daily"]["rows"] == 0  # P30Y: the 2014 day stays
    kept = {k["object"] for k in json.loads(dry.stdout)["kept"]}
    assert {"meters", "pseudonym_map"} <= kept

    done = governance("retention", "apply", "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    assert counts(storage_dsn) == {
        "meter_readings": 95,
        "transformer_telemetry": 1,
        "refused_values": 1,
        "quality_alerts": 1,
        "substation_daily": 2,
    }
    with psycopg.connect(storage_dsn) as conn:
        oldest = conn.execute("SELECT min(interval_end) FROM meter_readings").fetchone()[0]
        entries = dict(
            conn.execute(
                "SELECT object, detail FROM audit_log WHERE action = 'retention.apply'"
            ).fetchall()
        )
    assert oldest.date() == NEW_DAY
    assert set(entries) == {
        "meter_readings",
        "transformer_telemetry",
        "refused_values",
        "quality_alerts",
    }
    assert entries["meter_readings"]["parts"] == plan["meter_readings"]["parts"]
    again = governance("retention", "apply", "--json", "--dsn", storage_dsn)
    assert all(not r["parts"] and not r["rows"] for r in json.loads(again.stdout)["removed"])
