"""The catalog lists what the pipeline stores, without partitions or chunks."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest
from fix_services import BIN

from core_ingest.migrations import NATIVE

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


def test_catalog_lists_the_stored_datasets_with_descriptions(storage_dsn, storage):
    """Each table appears once, described, whatever partitions or chunks exist beneath."""
    store_one_reading(storage_dsn, storage)
    done = subprocess.run(
        [str(BIN / "governance"), "catalog", "--dsn", storage_dsn],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    datasets = {d["name"]: d for d in json.loads(done.stdout)}
    assert set(datasets) == {
        "agents",
        "batches",
        "meter_readings",
        "schema_migrations",
        "storage_settings",
        "transformer_telemetry",
        "pseudonym_map",
        "meters",
        "reading_quarantine",
        "reading_corrections",
        "refused_values",
        "substation_hourly",
        "substation_daily",
        "quality_alerts",
    }
    assert "pseudonymous meter" in datasets["meter_readings"]["description"]
    assert datasets["meter_readings"]["rows"] == 1
