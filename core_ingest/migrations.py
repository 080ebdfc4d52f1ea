"""Versioned schema migrations, recorded in ``schema_migrations`` so re-running is safe.

Storage is chosen once, by the first migration, and recorded in ``storage_settings``:
``timescaledb`` (hypertables) when the extension is installed and preloaded, otherwise
``native-partitioning`` (declarative range partitions by day, created as data arrives).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from core_ingest.errors import SchemaError

TIMESCALEDB = "timescaledb"
NATIVE = "native-partitioning"
STORAGE_CHOICES = ("auto", TIMESCALEDB, NATIVE)
# Time-partitioned tables and their time column; one partition (or chunk) per day.
PARTITIONED_TABLES = {"meter_readings": "interval_end", "transformer_telemetry": "time"}

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""

BASE_SCHEMA = """
CREATE TABLE storage_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    storage text NOT NULL CHECK (storage IN ('timescaledb', 'native-partitioning'))
);
CREATE TABLE agents (
    agent_id text PRIMARY KEY CHECK (length(agent_id) BETWEEN 1 AND 64),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    enrolled_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
COMMENT ON TABLE agents IS 'Edge agents allowed to send batches, with their Ed25519 public keys';
CREATE TABLE batches (
    agent_id text NOT NULL REFERENCES agents,
    sequence bigint NOT NULL CHECK (sequence > 0),
    payload_sha256 bytea NOT NULL,
    schema_version integer NOT NULL,
    pseudonym_key_id text NOT NULL,
    software_version text NOT NULL,
    register_map_version integer NOT NULL,
    devices text[] NOT NULL,
    created_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    meter_readings integer NOT NULL,
    telemetry_points integer NOT NULL,
    core_version text NOT NULL,
    PRIMARY KEY (agent_id, sequence)
);
COMMENT ON TABLE batches IS
    'Batch ledger: one row per committed batch, committed in one transaction with its readings';
CREATE TABLE meter_readings (
    meter bytea NOT NULL,
    interval_end timestamptz NOT NULL,
    energy_wh bigint NOT NULL,
    register_wh bigint NOT NULL,
    quality_flags integer NOT NULL,
    poll_time timestamptz NOT NULL,
    device text NOT NULL,
    agent_id text NOT NULL,
    batch_sequence bigint NOT NULL
) {meter_partitioning};
COMMENT ON TABLE meter_readings IS '15-minute interval readings by pseudonymous meter';
CREATE TABLE transformer_telemetry (
    transformer_id text NOT NULL,
    time timestamptz NOT NULL,
    metric text NOT NULL,
    value double precision NOT NULL,
    quality_flags integer NOT NULL,
    agent_id text NOT NULL,
    batch_sequence bigint NOT NULL
) {telemetry_partitioning};
COMMENT ON TABLE transformer_telemetry IS 'Transformer sensor values by transformer and metric';
"""

BASE_INDEXES = """
CREATE INDEX meter_readings_meter_time ON meter_readings (meter, interval_end);
CREATE INDEX meter_readings_batch ON meter_readings (agent_id, batch_sequence);
CREATE INDEX transformer_telemetry_device_time ON transformer_telemetry (transformer_id, time);
"""


def _create_base_schema(conn: psycopg.Connection, storage: str) -> None:
    native = storage == NATIVE
    conn.execute(
        BASE_SCHEMA.format(
            meter_partitioning="PARTITION BY RANGE (interval_end)" if native else "",
            telemetry_partitioning="PARTITION BY RANGE (time)" if native else "",
        ).encode()
    )
    if storage == TIMESCALEDB:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table, column in PARTITIONED_TABLES.items():
            conn.execute(
                "SELECT create_hypertable(%s::regclass, by_range(%s, INTERVAL '1 day'))",
                (table, column),
            )
    conn.execute(BASE_INDEXES.encode())
    conn.execute("INSERT INTO storage_settings (storage) VALUES (%s)", (storage,))


@dataclass(frozen=True, slots=True)
class Migration:
    """One named schema step; ``apply`` gets the connection and the chosen storage."""

    version: int
    name: str
    apply: Callable[[psycopg.Connection, str], None]


def _add_header_hash(conn: psycopg.Connection, _storage: str) -> None:
    """Keep the header's digest too: a re-signed batch with another header is not a resend."""
    conn.execute("ALTER TABLE batches ADD COLUMN header_sha256 bytea")


def _add_pseudonym_map(conn: psycopg.Connection, _storage: str) -> None:
    """Where an edge rotated its pseudonymization key: old pseudonym -> current one."""
    conn.execute(PSEUDONYM_MAP.encode())


PSEUDONYM_MAP = """
CREATE TABLE pseudonym_map (
    old_meter bytea PRIMARY KEY,
    new_meter bytea NOT NULL,
    old_key_id text NOT NULL,
    new_key_id text NOT NULL,
    agent_id text NOT NULL,
    batch_sequence bigint NOT NULL
);
COMMENT ON TABLE pseudonym_map IS
    'Edge key rotations: every older pseudonym of a meter mapped to its current one';
CREATE VIEW meter_readings_continuous AS
    SELECT coalesce(p.new_meter, r.meter) AS meter_now, r.*
    FROM meter_readings r LEFT JOIN pseudonym_map p ON p.old_meter = r.meter;
COMMENT ON VIEW meter_readings_continuous IS
    'Readings with meter_now: one pseudonym per meter across edge key rotations';
"""


def _add_validation_ruleset(conn: psycopg.Connection, _storage: str) -> None:
    """Which VEE ruleset set a batch's quality flags (lineage of every flag)."""
    conn.execute("ALTER TABLE batches ADD COLUMN validation_ruleset text")


MIGRATIONS = (
    Migration(1, "base-schema", _create_base_schema),
    Migration(2, "batch-header-hash", _add_header_hash),
    Migration(3, "pseudonym-map", _add_pseudonym_map),
    Migration(4, "batch-validation-ruleset", _add_validation_ruleset),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def timescaledb_usable(conn: psycopg.Connection) -> bool:
    """Whether the server has TimescaleDB installed and preloaded."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries') LIKE '%%timescaledb%%'"
    ).fetchone()
    return bool(row and row[0] and row[1])


def choose_storage(conn: psycopg.Connection, requested: str) -> str:
    """Resolve ``auto`` and check that a requested TimescaleDB is really there."""
    if requested not in STORAGE_CHOICES:
        raise SchemaError(f"storage must be one of {STORAGE_CHOICES}, got {requested!r}")
    usable = timescaledb_usable(conn)
    if requested == TIMESCALEDB and not usable:
        raise SchemaError(
            "storage 'timescaledb' requested, but the extension is not installed and preloaded "
            "(shared_preload_libraries = 'timescaledb'); run scripts/install-timescaledb.sh"
        )
    if requested == "auto":
        return TIMESCALEDB if usable else NATIVE
    return requested


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """Applied migrations by version, with their applied_at time as text (reads only)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return {}
    rows = conn.execute("SELECT version, applied_at::text FROM schema_migrations").fetchall()
    return dict(rows)


def recorded_storage(conn: psycopg.Connection) -> str | None:
    """The storage chosen when the schema was created, or None before the first migration."""
    exists = conn.execute("SELECT to_regclass('storage_settings') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return None
    row = conn.execute("SELECT storage FROM storage_settings").fetchone()
    return row[0] if row else None


def migrate(
    conn: psycopg.Connection, *, storage: str = "auto", stop_before: int | None = None
) -> list[Migration]:
    """Apply pending migrations in one transaction (all or none); return those applied.

    Concurrent callers (two cores starting at once) serialize on an advisory lock.
    """
    applied: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('meterpipe.migrate'))")
        conn.execute(BOOKKEEPING.encode())
        done = applied_versions(conn)
        newest = max(done, default=0)
        if newest > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema version {newest} is newer than this release's {SCHEMA_VERSION}"
            )
        chosen = recorded_storage(conn) or choose_storage(conn, storage)
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            if stop_before is not None and migration.version >= stop_before:
                break
            with conn.transaction():
                migration.apply(conn, chosen)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration)
    return applied
