"""``core-ingest`` commands against a real database: migrate, status, agents."""

from __future__ import annotations

import json
import os
import subprocess

import psycopg
import pytest
from fix_db import operator_dsn
from fix_services import BIN

from core_ingest.schema import NATIVE, TIMESCALEDB

pytestmark = pytest.mark.integration
# Every migration of this release, in order: an upgrade path is never reordered or renamed.
MIGRATION_NAMES = [
    "base-schema",
    "batch-header-hash",
    "pseudonym-map",
    "batch-validation-ruleset",
    "meters-dimension",
    "quality-rollups-lineage",
    "refused-values",
    "reading-corrections",
    "meter-roles-losses",
    "interval-grid",
    "audit-log",
    "dictionary-versions",
    "partition-function",
    "regions",
    "exports",
    "operations",
    "transformer-health",
    "load-forecasts",
    "forecast-models-report",
    "telemetry-once",
]


def core_ingest(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "core-ingest"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={"CORE_INGEST_DSN": dsn, "PATH": "/usr/bin:/bin", **_python_path()},
    )


def _python_path() -> dict[str, str]:
    """Keep PYTHONPATH, so a checkout tested against another's installed venv runs its own code."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def test_migrate_creates_the_schema_once_and_status_names_the_storage(empty_dsn, storage):
    """First run applies every migration on the requested storage; the second applies nothing."""
    first = core_ingest("migrate", "--storage", storage, dsn=empty_dsn)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["applied"] == MIGRATION_NAMES
    assert report["storage"] == storage
    assert report["schema_version"] == report["release_schema_version"] == len(MIGRATION_NAMES)
    again = json.loads(core_ingest("migrate", dsn=empty_dsn).stdout)
    assert again["applied"] == []
    status = json.loads(core_ingest("status", dsn=empty_dsn).stdout)
    assert status["storage"] == storage
    assert status["server_version"].startswith("15")
    assert (status["timescaledb_version"] is not None) == (storage == TIMESCALEDB)
    assert status["meter_readings_rows_estimated"] == 0
    listing = json.loads(core_ingest("migrate", "--list", dsn=empty_dsn).stdout)
    assert [m["name"] for m in listing] == MIGRATION_NAMES
    assert all(m["applied_at"] is not None for m in listing)


@pytest.mark.parametrize("storage", [NATIVE])
def test_timescaledb_requested_where_it_is_missing_is_a_clear_error(empty_dsn):
    """On a server without the extension preloaded, asking for it fails and says how to fix it."""
    done = core_ingest("migrate", "--storage", "timescaledb", dsn=empty_dsn)
    assert done.returncode == 1
    assert "install-timescaledb.sh" in done.stderr, done.stderr
    status = json.loads(core_ingest("status", dsn=empty_dsn).stdout)
    assert status["schema_version"] == 0


def test_unreachable_database_is_one_line_not_a_traceback(tmp_path):
    """A database that is down gives exit 1 and a message, no traceback."""
    done = core_ingest("status", dsn="postgresql://postgres@127.0.0.1:9/none")
    assert done.returncode == 1
    assert "cannot reach the database" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("storage", [NATIVE])
def test_agents_add_list_revoke(storage_dsn, tmp_path):
    """An enrolled key is listed in full; revocation is recorded; unknown ids are errors."""
    keygen = subprocess.run(
        [str(BIN / "edge-agent"), "keygen", "--out", str(tmp_path / "a.key")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(keygen.stdout)["public_key"] == str(tmp_path / "a.key.pub")
    operator = operator_dsn(storage_dsn)  # enrolling is an operator's: `operations`
    added = core_ingest(
        "agents",
        "add",
        "--agent-id",
        "sub-9",
        "--public-key-file",
        str(tmp_path / "a.key.pub"),
        dsn=operator,
    )
    assert added.returncode == 0, added.stderr
    listed = json.loads(core_ingest("agents", "list", dsn=operator).stdout)
    assert [(a["agent_id"], a["public_key"], a["revoked_at"]) for a in listed] == [
        ("sub-9", json.loads(added.stdout)["public_key"], None)
    ]
    assert core_ingest("agents", "revoke", "--agent-id", "sub-9", dsn=operator).returncode == 0
    assert json.loads(core_ingest("agents", "list", dsn=operator).stdout)[0]["revoked_at"]
    missing = core_ingest("agents", "revoke", "--agent-id", "nobody", dsn=operator)
    assert missing.returncode == 1
    assert "nobody" in missing.stderr
    not_a_key = tmp_path / "junk.pub"
    not_a_key.write_text("hello")
    bad = core_ingest(
        "agents", "add", "--agent-id", "x", "--public-key-file", str(not_a_key), dsn=operator
    )
    assert bad.returncode == 1
    assert "not a PEM public key" in bad.stderr


@pytest.mark.parametrize("storage", [NATIVE])
def test_status_and_list_on_an_empty_database_write_nothing(empty_dsn):
    """Reports only read: no bookkeeping table appears before migrate runs."""
    assert json.loads(core_ingest("status", dsn=empty_dsn).stdout)["schema_version"] == 0
    listing = json.loads(core_ingest("migrate", "--list", dsn=empty_dsn).stdout)
    assert [m["applied_at"] for m in listing] == [None] * len(MIGRATION_NAMES)
    with psycopg.connect(empty_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()[0]
    assert tables == 0
