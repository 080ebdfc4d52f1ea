"""The catalog lists what the pipeline stores, without partitions or chunks."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest
from fix_services import BIN

from core_ingest.schema import NATIVE
from core_ingest.schema.dictionary import load_dictionary

pytestmark = pytest.mark.integration


def store_one_reading(dsn: str, storage: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if storage == NATIVE:
            conn.execute(
                "CREATE TABLE meter_readings_p20260101 PARTITION OF meter_readings"
                " FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-01-02 00:00+00')"
            )
        conn.execute(
            "INSERT INTO meter_readings (meter_id, interval_end, energy_wh, register_wh,"
            " quality_flags, poll_time, batch_id, device_no)"
            " VALUES (1, '2026-01-01 00:15+00', 1, 1, 0, '2026-01-01 00:16+00', 1, 1)"
        )


def test_catalog_lists_every_dictionary_object_with_estimated_rows(storage_dsn, storage):
    """Each object appears once, described and owned, whatever partitions lie beneath.

    Stored tables carry the planner's row estimate, views none.
    """
    store_one_reading(storage_dsn, storage)
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
    done = subprocess.run(
        [str(BIN / "governance"), "catalog", "--dsn", storage_dsn],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    datasets = {d["name"]: d for d in json.loads(done.stdout)}
    assert set(datasets) == set(load_dictionary().objects)
    assert {"meter_readings", "region_day_quality", "reading_lineage"} <= set(datasets)
    readings = datasets["meter_readings"]
    assert "pseudonymous meter" in readings["description"]
    assert readings["personal_data"] == "pseudonymized-personal"
    assert readings["owner"]
    assert readings["steward"]
    assert readings["rows_estimated"] == 1
    assert datasets["region_daily"]["rows_estimated"] is None
