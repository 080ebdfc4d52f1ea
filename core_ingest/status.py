"""What ``core-ingest status`` reports: server, storage, schema versions and estimated rows."""

from __future__ import annotations

from typing import Any

import psycopg

from core_ingest.schema import MIGRATIONS, SCHEMA_VERSION, applied_versions, recorded_storage
from core_ingest.schema.sizes import estimated_rows
from proto.version import __version__


def database_status(conn: psycopg.Connection) -> dict[str, Any]:
    """A JSON-ready summary of the database as this release sees it."""
    server = conn.execute("SHOW server_version").fetchone()
    timescaledb = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    applied = applied_versions(conn)
    status: dict[str, Any] = {
        "core_version": __version__,
        "server_version": server[0] if server else None,
        "timescaledb_version": timescaledb[0] if timescaledb else None,
        "storage": recorded_storage(conn),
        "schema_version": max(applied, default=0),
        "release_schema_version": SCHEMA_VERSION,
        "pending_migrations": [m.name for m in MIGRATIONS if m.version not in applied],
    }
    if applied:
        tables = ("agents", "batches", "meter_readings", "transformer_telemetry")
        # The planner's estimates (see core_ingest.schema.sizes): exact counts read every chunk.
        status |= {f"{t}_rows_estimated": n for t, n in estimated_rows(conn, tables).items()}
    return status
