r"""The central schema's one owner: numbered SQL migrations, a small runner, the data dictionary.

Each migration is a file ``migrations/NNNN_name.sql`` (version NNNN), applied in order and
recorded in ``schema_migrations``, so re-running is safe; a released file is never edited
(only its ``COMMENT`` statements were ever moved out, into the dictionary). Files may use
``${name}`` for what depends on the storage or the quality flags (``_variables``).

Storage is chosen once, by the first migration, and recorded in ``storage_settings``:
``timescaledb`` (hypertables) when the extension is installed and preloaded, otherwise
``native-partitioning`` (declarative range partitions by day, created as data arrives).

Every table, view and column is described in ``dictionary.toml`` (``core_ingest.schema.
dictionary``); ``migrate`` writes the descriptions as ``COMMENT ON`` after the migrations, so
psql's ``\d+`` and the catalog say the same.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg.types.json import Jsonb

from core_ingest.errors import SchemaError
from core_ingest.schema.dictionary import comment_statements, load_dictionary, record_version
from proto.quality import SUSPECT, QualityFlag
from proto.version import __version__

TIMESCALEDB = "timescaledb"
NATIVE = "native-partitioning"
STORAGE_CHOICES = ("auto", TIMESCALEDB, NATIVE)
# Time-partitioned tables and their time column; one partition (or chunk) per day.
PARTITIONED_TABLES = {"meter_readings": "interval_end", "transformer_telemetry": "time"}
MIGRATION_FILE = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9-]+)\.sql")

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class _Variables(string.Template):
    """Only ``${name}`` is a variable: ``$$`` (a function body's quotes) and ``$1`` stay SQL."""

    # A string, which Template compiles once (typeshed types the compiled attribute).
    pattern = r"\$(?:(?P<escaped>(?!))|(?P<named>(?!))|{(?P<braced>\w+)}|(?P<invalid>(?!)))"  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema step: a SQL file of ``migrations/``."""

    version: int
    name: str
    sql: str  # with ${name} variables, see ``_variables``

    def script(self, storage: str) -> bytes:
        """The statements to run on a schema using ``storage``."""
        return _Variables(self.sql).substitute(_variables(storage)).encode()


def _variables(storage: str) -> dict[str, str]:
    """What ``${name}`` stands for in the migration files, for ``storage``."""
    native = storage == NATIVE
    hypertables = "".join(
        f"SELECT create_hypertable('{table}'::regclass, by_range('{column}', INTERVAL '1 day'));\n"
        for table, column in PARTITIONED_TABLES.items()
    )
    return {
        "storage": storage,
        "partition_by_interval_end": "PARTITION BY RANGE (interval_end)" if native else "",
        "partition_by_time": "PARTITION BY RANGE (time)" if native else "",
        "hypertables": (
            f"CREATE EXTENSION IF NOT EXISTS timescaledb;\n{hypertables}"
            if storage == TIMESCALEDB
            else ""
        ),
        "partitioned_tables": ", ".join(f"'{table}'" for table in PARTITIONED_TABLES),
        "restrict_chunks": "".join(
            f"CREATE TRIGGER {table}_restrict_chunks AFTER INSERT ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION restrict_new_chunks();\n"
            f"SELECT restrict_chunks('{table}', '-infinity');\n"
            for table in PARTITIONED_TABLES
        )
        if storage == TIMESCALEDB
        else "",
        "estimated": str(int(QualityFlag.ESTIMATED)),
        "suspect": str(int(SUSPECT)),
    }


def _migrations() -> tuple[Migration, ...]:
    """The migration files, in version order; a misnamed or repeated version is a bug."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = MIGRATION_FILE.fullmatch(entry.name)
        if match is None:
            raise SchemaError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match["version"]), match["name"], entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"migration versions must run 1..N, got {[m.version for m in found]}")
    return tuple(found)


MIGRATIONS = _migrations()
SCHEMA_VERSION = MIGRATIONS[-1].version


def timescaledb_usable(conn: psycopg.Connection) -> bool:
    """Whether the server has TimescaleDB installed and preloaded.

    Preloaded is read from the setting TimescaleDB's loader defines when it is in
    ``shared_preload_libraries``: that list itself is hidden from the schema's owner, who
    migrates without superuser rights.
    """
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('timescaledb.disable_load', true) IS NOT NULL"
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

    Concurrent callers (two cores starting at once) serialize on an advisory lock. Then the
    data dictionary's descriptions are written as comments, every time (a changed description
    needs no migration), unless ``stop_before`` leaves an older schema than it describes.
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
                conn.execute(migration.script(chosen))
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration)
        if stop_before is None:  # the dictionary describes the release's schema, not an older one
            for statement in comment_statements(load_dictionary()):
                conn.execute(statement)
        _audit(conn, applied, chosen)
        if stop_before is None:
            _record_dictionary(conn)
    return applied


def _record_dictionary(conn: psycopg.Connection) -> None:
    """A new dictionary version is recorded, and its coming into force audited."""
    if conn.execute("SELECT to_regclass('dictionary_versions')").fetchone() == (None,):
        return
    if version := record_version(conn, load_dictionary(), __version__):
        conn.execute(
            "SELECT audit_append('dictionary.version', 'dictionary', %s)",
            (Jsonb({"digest": version, "release": __version__}),),
        )


def _audit(conn: psycopg.Connection, applied: list[Migration], storage: str) -> None:
    """One audit entry per migration applied, once the audit trail exists (migration 11)."""
    if not applied or conn.execute("SELECT to_regclass('audit_log')").fetchone() == (None,):
        return
    for migration in applied:
        conn.execute(
            "SELECT audit_append('schema.migrate', 'schema', %s)",
            (Jsonb({"version": migration.version, "name": migration.name, "storage": storage}),),
        )
