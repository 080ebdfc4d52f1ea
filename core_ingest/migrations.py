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
from proto.quality import SUSPECT, QualityFlag

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


METERS_DIMENSION = """
ALTER TABLE agents ADD COLUMN substation text;
UPDATE agents SET substation = agent_id;
ALTER TABLE agents ALTER COLUMN substation SET NOT NULL;
ALTER TABLE agents ADD COLUMN region text NOT NULL DEFAULT 'unassigned';
COMMENT ON COLUMN agents.substation IS 'Substation the agent serves; its meters belong to it';
COMMENT ON COLUMN agents.region IS 'Region of the substation: the unit of rollups and access';
CREATE TABLE meters (
    meter_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pseudonym bytea NOT NULL UNIQUE CHECK (length(pseudonym) BETWEEN 1 AND 64),
    substation text NOT NULL,
    region text NOT NULL,
    first_agent_id text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE meters IS
    'Meters dimension: pseudonym -> compact meter_id, with the substation and region it feeds';
CREATE INDEX meters_region ON meters (region, substation);
ALTER TABLE batches ADD COLUMN batch_id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
ALTER TABLE batches ADD COLUMN substation text;
ALTER TABLE batches ADD COLUMN region text;
UPDATE batches b SET substation = a.substation, region = a.region FROM agents a
    WHERE a.agent_id = b.agent_id;
ALTER TABLE batches ADD COLUMN poll_start timestamptz;
ALTER TABLE batches ADD COLUMN poll_end timestamptz;
ALTER TABLE batches ADD COLUMN readings_stored integer;
UPDATE batches SET readings_stored = meter_readings;
ALTER TABLE batches ADD COLUMN quality_counts jsonb NOT NULL DEFAULT '{}';
ALTER TABLE batches ADD COLUMN suspect_readings integer NOT NULL DEFAULT 0;
CREATE INDEX batches_received ON batches (received_at);
INSERT INTO meters (pseudonym, substation, region, first_agent_id)
    SELECT DISTINCT ON (r.meter) r.meter, a.substation, a.region, r.agent_id
    FROM meter_readings r JOIN agents a USING (agent_id) ORDER BY r.meter, r.interval_end;
DROP VIEW meter_readings_continuous;
ALTER TABLE meter_readings ADD COLUMN meter_id integer;
ALTER TABLE meter_readings ADD COLUMN batch_id bigint;
ALTER TABLE meter_readings ADD COLUMN device_no smallint;
UPDATE meter_readings r
    SET meter_id = m.meter_id, batch_id = b.batch_id,
        device_no = array_position(b.devices, r.device)
    FROM meters m, batches b
    WHERE m.pseudonym = r.meter AND b.agent_id = r.agent_id AND b.sequence = r.batch_sequence;
CREATE TABLE reading_quarantine (
    meter_id integer NOT NULL,
    interval_end timestamptz NOT NULL,
    energy_wh bigint NOT NULL,
    register_wh bigint NOT NULL,
    quality_flags integer NOT NULL,
    poll_time timestamptz NOT NULL,
    batch_id bigint NOT NULL,
    device_no smallint NOT NULL,
    reason text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE reading_quarantine IS
    'Readings not stored: another value for the same meter and interval was stored first';
INSERT INTO reading_quarantine
        (meter_id, interval_end, energy_wh, register_wh, quality_flags, poll_time, batch_id,
         device_no, reason)
    SELECT r.meter_id, r.interval_end, r.energy_wh, r.register_wh, r.quality_flags, r.poll_time,
           r.batch_id, r.device_no, 'duplicate-before-schema-5'
    FROM meter_readings r WHERE EXISTS (
        SELECT 1 FROM meter_readings d
        WHERE d.meter_id = r.meter_id AND d.interval_end = r.interval_end
        AND (d.batch_id < r.batch_id OR (d.batch_id = r.batch_id AND d.ctid < r.ctid)));
DELETE FROM meter_readings r USING meter_readings d
    WHERE d.meter_id = r.meter_id AND d.interval_end = r.interval_end
    AND (d.batch_id < r.batch_id OR (d.batch_id = r.batch_id AND d.ctid < r.ctid));
UPDATE batches b SET readings_stored = coalesce(kept.n, 0)
    FROM batches o LEFT JOIN
        (SELECT batch_id, count(*) AS n FROM meter_readings GROUP BY batch_id) kept
        USING (batch_id)
    WHERE o.batch_id = b.batch_id AND b.readings_stored <> coalesce(kept.n, 0);
ALTER TABLE meter_readings DROP COLUMN meter;
ALTER TABLE meter_readings DROP COLUMN device;
ALTER TABLE meter_readings DROP COLUMN agent_id;
ALTER TABLE meter_readings DROP COLUMN batch_sequence;
ALTER TABLE meter_readings ALTER COLUMN meter_id SET NOT NULL;
ALTER TABLE meter_readings ALTER COLUMN batch_id SET NOT NULL;
ALTER TABLE meter_readings ALTER COLUMN device_no SET NOT NULL;
CREATE UNIQUE INDEX meter_readings_meter_time ON meter_readings (meter_id, interval_end);
-- Readings arrive roughly in batch and time order: block-range indexes find them by batch or
-- time at a fraction of a B-tree's cost per insert (TimescaleDB's default B-tree goes).
DROP INDEX IF EXISTS meter_readings_interval_end_idx;
CREATE INDEX meter_readings_batch ON meter_readings USING brin (batch_id)
    WITH (autosummarize = on);
CREATE INDEX meter_readings_time ON meter_readings USING brin (interval_end)
    WITH (autosummarize = on);
COMMENT ON COLUMN meter_readings.device_no IS 'Position (from 1) in batches.devices';
CREATE VIEW meter_readings_continuous AS
    SELECT coalesce(p.new_meter, m.pseudonym) AS meter_now, m.pseudonym AS meter, r.*
    FROM meter_readings r JOIN meters m USING (meter_id)
    LEFT JOIN pseudonym_map p ON p.old_meter = m.pseudonym;
COMMENT ON VIEW meter_readings_continuous IS
    'Readings with meter_now: one pseudonym per meter across edge key rotations';
"""

QUALITY_AND_ROLLUPS = """
CREATE TABLE substation_hourly (
    substation text NOT NULL,
    region text NOT NULL,
    hour timestamptz NOT NULL,
    energy_wh bigint NOT NULL,
    received bigint NOT NULL,
    estimated bigint NOT NULL,
    suspect bigint NOT NULL,
    PRIMARY KEY (substation, hour)
);
COMMENT ON TABLE substation_hourly IS
    'Energy and reading counts per substation and hour (interval start), kept by the core';
CREATE TABLE substation_daily (LIKE substation_hourly);
ALTER TABLE substation_daily RENAME COLUMN hour TO day;
ALTER TABLE substation_daily ADD PRIMARY KEY (substation, day);
COMMENT ON TABLE substation_daily IS
    'Energy and reading counts per substation and UTC day (interval start), kept by the core';
INSERT INTO substation_hourly
    SELECT b.substation, max(b.region), date_bin('1 hour', r.interval_end - interval '15 minutes',
           timestamptz '2000-01-01 00:00+00') AS hour, sum(r.energy_wh),
           count(*) FILTER (WHERE r.quality_flags & {estimated} = 0),
           count(*) FILTER (WHERE r.quality_flags & {estimated} <> 0),
           count(*) FILTER (WHERE r.quality_flags & {suspect} <> 0)
    FROM meter_readings r JOIN batches b USING (batch_id) GROUP BY b.substation, hour;
INSERT INTO substation_daily
    SELECT substation, max(region), date_bin('1 day', hour, timestamptz '2000-01-01 00:00+00')
           AS day, sum(energy_wh), sum(received), sum(estimated), sum(suspect)
    FROM substation_hourly GROUP BY substation, day;
CREATE INDEX substation_hourly_region ON substation_hourly (region, hour);
CREATE INDEX substation_daily_region ON substation_daily (region, day);
CREATE VIEW region_hourly AS
    SELECT region, hour, sum(energy_wh)::bigint AS energy_wh, sum(received)::bigint AS received,
           sum(estimated)::bigint AS estimated, sum(suspect)::bigint AS suspect
    FROM substation_hourly GROUP BY region, hour;
COMMENT ON VIEW region_hourly IS 'Energy and reading counts per region and hour';
CREATE VIEW region_daily AS
    SELECT region, day, sum(energy_wh)::bigint AS energy_wh, sum(received)::bigint AS received,
           sum(estimated)::bigint AS estimated, sum(suspect)::bigint AS suspect
    FROM substation_daily GROUP BY region, day;
COMMENT ON VIEW region_daily IS 'Energy and reading counts per region and UTC day';
CREATE VIEW region_day_quality AS
    SELECT d.region, d.day, d.received, 96 * coalesce(m.meters, 0) AS expected, d.estimated,
           d.suspect AS flagged, coalesce(m.meters, 0) AS meters
    FROM region_daily d
    LEFT JOIN (SELECT region, count(*) AS meters FROM meters GROUP BY region) m USING (region);
COMMENT ON VIEW region_day_quality IS
    'Per region and day: readings received, expected (96 per known meter), estimated, flagged';
CREATE VIEW meter_day_quality AS
    SELECT meter_id, ((interval_end - interval '15 minutes') AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE quality_flags & {estimated} = 0) AS received,
           96 AS expected,
           count(*) FILTER (WHERE quality_flags & {estimated} <> 0) AS estimated,
           count(*) FILTER (WHERE quality_flags & {suspect} <> 0) AS flagged
    FROM meter_readings GROUP BY 1, 2;
COMMENT ON VIEW meter_day_quality IS
    'Per meter and UTC day: readings received, expected (96), estimated, flagged';
CREATE TABLE quality_alerts (
    alert_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    received bigint NOT NULL,
    flagged bigint NOT NULL,
    threshold double precision NOT NULL,
    raised_at timestamptz NOT NULL DEFAULT now(),
    raised_by text NOT NULL
);
COMMENT ON TABLE quality_alerts IS
    'Data-quality alerts, e.g. more than 0.5 % of the last hour''s readings flagged';
CREATE INDEX quality_alerts_kind_time ON quality_alerts (kind, raised_at);
CREATE VIEW reading_lineage AS
    SELECT m.pseudonym AS meter, r.interval_end, s.step_no, s.step, s.at, s.actor, s.detail
    FROM meter_readings r
    JOIN meters m USING (meter_id)
    JOIN batches b USING (batch_id)
    CROSS JOIN LATERAL (VALUES
        (1, 'acquire', r.poll_time, b.devices[r.device_no],
         jsonb_build_object('register_wh', r.register_wh, 'energy_wh', r.energy_wh,
                            'register_map_version', b.register_map_version,
                            'read', r.quality_flags & {estimated} = 0)),
        (2, CASE WHEN r.quality_flags & {estimated} = 0 THEN 'validate' ELSE 'estimate' END,
         r.poll_time, 'edge-agent ' || b.agent_id,
         jsonb_build_object('ruleset', b.validation_ruleset, 'quality_flags', r.quality_flags)),
        (3, 'pseudonymize', r.poll_time, 'edge-agent ' || b.agent_id,
         jsonb_build_object('key_id', b.pseudonym_key_id)),
        (4, 'sign', b.created_at, 'edge-agent ' || b.agent_id,
         jsonb_build_object('sequence', b.sequence, 'software_version', b.software_version,
                            'payload_sha256', encode(b.payload_sha256, 'hex'))),
        (5, 'transmit', b.received_at, 'core-ingest ' || b.core_version,
         jsonb_build_object('agent_id', b.agent_id, 'sequence', b.sequence)),
        (6, 'ingest', b.committed_at, 'core-ingest ' || b.core_version,
         jsonb_build_object('batch_id', b.batch_id, 'substation', b.substation,
                            'region', b.region, 'table', 'meter_readings'))
    ) AS s(step_no, step, at, actor, detail);
COMMENT ON VIEW reading_lineage IS
    'Every recorded step of every stored reading, from the device read to the commit';
"""


def _add_quality_and_rollups(conn: psycopg.Connection, _storage: str) -> None:
    """Rollups and quality records the core keeps as batches commit, the alert table, lineage."""
    conn.execute(
        QUALITY_AND_ROLLUPS.format(
            estimated=int(QualityFlag.ESTIMATED), suspect=int(SUSPECT)
        ).encode()
    )


REFUSED_VALUES = """
CREATE TABLE refused_values (
    batch_id bigint NOT NULL REFERENCES batches (batch_id),
    kind text NOT NULL CHECK (kind IN ('meter_reading', 'telemetry')),
    position integer NOT NULL,
    reason text NOT NULL,
    raw jsonb NOT NULL,
    PRIMARY KEY (batch_id, kind, position)
);
COMMENT ON TABLE refused_values IS
    'Readings and telemetry points of accepted batches the core did not store: outside the'
    ' bounds both ends check (proto/limits.py), kept raw with the reason, one row each';
"""


READING_CORRECTIONS = """
CREATE TABLE reading_corrections (
    meter_id integer NOT NULL REFERENCES meters (meter_id),
    interval_end timestamptz NOT NULL,
    estimated_energy_wh bigint NOT NULL,
    estimated_register_wh bigint NOT NULL,
    estimated_quality_flags integer NOT NULL,
    estimated_batch_id bigint NOT NULL REFERENCES batches (batch_id),
    energy_wh bigint NOT NULL,
    quality_flags integer NOT NULL,
    batch_id bigint NOT NULL REFERENCES batches (batch_id),
    corrected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, interval_end)
);
CREATE INDEX reading_corrections_batch ON reading_corrections (batch_id);
COMMENT ON TABLE reading_corrections IS
    'Estimates replaced by the real reading when it arrived: a reading the device held is never'
    ' left an estimate. meter_readings holds the real value; this row, the estimate it replaced';
"""


METER_ROLES = """
ALTER TABLE meters ADD COLUMN role text NOT NULL DEFAULT 'customer'
    CHECK (role IN ('customer', 'feeder_head', 'transformer'));
COMMENT ON COLUMN meters.role IS
    'What the meter measures, as the agent''s device configuration says: only customer'
    ' readings are consumption (the rollups); feeder_head meters measure what enters the'
    ' substation''s feeders (substation_day_losses)';
CREATE OR REPLACE VIEW region_day_quality AS
    SELECT d.region, d.day, d.received, 96 * coalesce(m.meters, 0) AS expected, d.estimated,
           d.suspect AS flagged, coalesce(m.meters, 0) AS meters
    FROM region_daily d
    LEFT JOIN (SELECT region, count(*) AS meters FROM meters WHERE role = 'customer'
               GROUP BY region) m USING (region);
CREATE VIEW substation_day_losses AS
    SELECT h.substation, h.region, h.day,
           h.feeder_head_wh, d.energy_wh AS customer_wh,
           h.feeder_head_wh - d.energy_wh AS losses_wh,
           (h.feeder_head_wh - d.energy_wh)::float8 / nullif(h.feeder_head_wh, 0) AS losses_share,
           h.readings::float8 / (96 * h.feeder_heads) AS feeder_head_completeness,
           (d.received + d.estimated)::float8 / nullif(96 * c.meters, 0) AS customer_completeness,
           d.estimated AS customer_estimated
    FROM (SELECT m.substation, min(m.region) AS region, f.day, sum(f.energy_wh)::bigint
                 AS feeder_head_wh, sum(f.readings)::bigint AS readings,
                 count(DISTINCT m.meter_id) AS feeder_heads
          FROM meters m
          CROSS JOIN LATERAL (
              SELECT date_trunc('day', r.interval_end - interval '15 minutes', 'UTC') AS day,
                     sum(r.energy_wh) AS energy_wh, count(*) AS readings
              FROM meter_readings r WHERE r.meter_id = m.meter_id GROUP BY 1) f
          WHERE m.role = 'feeder_head'
          GROUP BY m.substation, f.day) h
    LEFT JOIN substation_daily d ON d.substation = h.substation AND d.day = h.day
    LEFT JOIN (SELECT substation, count(*) AS meters FROM meters WHERE role = 'customer'
               GROUP BY substation) c ON c.substation = h.substation;
COMMENT ON VIEW substation_day_losses IS
    'Technical losses per substation and UTC day: what its feeder-head meters measured minus'
    ' what its customers consumed, with the completeness of both sides';
"""


CLOCK_OFFSETS = """
ALTER TABLE meter_readings ADD COLUMN clock_offset_s smallint NOT NULL DEFAULT 0;
ALTER TABLE reading_quarantine ADD COLUMN clock_offset_s smallint NOT NULL DEFAULT 0;
COMMENT ON COLUMN meter_readings.clock_offset_s IS
    'How far the device''s interval end was off the 15-minute grid, seconds (-450..449):'
    ' interval_end is on the grid, so one meter''s interval is one row whatever its clock said';
"""


def _script(sql: str) -> Callable[[psycopg.Connection, str], None]:
    """A migration that runs ``sql`` as it stands, whatever the storage."""

    def apply(conn: psycopg.Connection, _storage: str) -> None:
        conn.execute(sql.encode())

    return apply


MIGRATIONS = (
    Migration(1, "base-schema", _create_base_schema),
    # Keep the header's digest too: a re-signed batch with another header is not a resend.
    Migration(
        2, "batch-header-hash", _script("ALTER TABLE batches ADD COLUMN header_sha256 bytea")
    ),
    # Where an edge rotated its pseudonymization key: old pseudonym -> current one.
    Migration(3, "pseudonym-map", _script(PSEUDONYM_MAP)),
    # Which VEE ruleset set a batch's quality flags (lineage of every flag).
    Migration(
        4,
        "batch-validation-ruleset",
        _script("ALTER TABLE batches ADD COLUMN validation_ruleset text"),
    ),
    # Compact meter ids, one stored reading per (meter, interval), lineage keys per batch.
    Migration(5, "meters-dimension", _script(METERS_DIMENSION)),
    Migration(6, "quality-rollups-lineage", _add_quality_and_rollups),
    # Values refused one by one, so one bad value never costs the batch's good ones.
    Migration(7, "refused-values", _script(REFUSED_VALUES)),
    # A record of every stored estimate a real reading replaced.
    Migration(8, "reading-corrections", _script(READING_CORRECTIONS)),
    # Meter roles: feeder heads are kept out of consumption and compared with it.
    Migration(9, "meter-roles-losses", _script(METER_ROLES)),
    # Interval ends on the grid; the device clock's offset kept beside them.
    Migration(10, "interval-grid", _script(CLOCK_OFFSETS)),
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
