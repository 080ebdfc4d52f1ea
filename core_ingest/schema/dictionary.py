"""The data dictionary: every table, view and column of the central database, described once.

``dictionary.toml`` beside this module is the source; this module loads it into typed models
(``proto.settings``, as the configuration files: a typo in a key or a class is refused at
load, naming it) and derives what others need from it: the ``COMMENT ON`` statements
``migrate`` writes, and the difference between the dictionary and a live schema
(``differences``), which the tests and the governance catalog check. Governance features read
the objects from here: no table list is written twice.
"""

from __future__ import annotations

import functools
import hashlib
import re
import tomllib
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from msgspec import Meta
from psycopg.types.json import Jsonb

from core_ingest.errors import SchemaError
from proto.settings import Settings, invalid, validate

PersonalData = Literal["pseudonymized-personal", "technical", "public"]
# The group roles of the access model (governance access init; docs/governance.md#roles).
Role = Literal["ingest", "analyst", "data_scientist", "operations", "steward", "auditor"]
Kind = Literal["table", "time-partitioned", "view"]
ISO_DURATION = re.compile(r"P(\d+Y)?(\d+M)?(\d+D)?")
THROUGH = re.compile(r"(?P<column>\w+) -> (?P<table>\w+)\.(?P<key>\w+)")
# What the live schema calls each kind (pg_class.relkind); a time-partitioned table is a
# plain table under TimescaleDB (a hypertable) and a partitioned one under native partitioning.
RELKINDS = {"table": {"r"}, "time-partitioned": {"r", "p"}, "view": {"v", "m"}}
LIVE_OBJECTS = """
SELECT c.relname, c.relkind, a.attname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
ORDER BY c.relname, a.attnum
"""


class Column(Settings, frozen=True):
    """One column: what it holds, its unit, and its personal-data class where it differs."""

    description: Annotated[str, Meta(min_length=1)]
    unit: str = ""
    personal_data: PersonalData | None = None  # None: the object's class


class DataObject(Settings, frozen=True, kw_only=True):  # required keys among optional ones
    """One table or view, as the catalog and access rules see it (``dictionary.toml``)."""

    kind: Kind
    description: Annotated[str, Meta(min_length=1)]
    owner: str
    steward: str
    personal_data: PersonalData
    region: str
    subject_meter_id: list[str] = msgspec.field(default_factory=list)
    subject_pseudonym: list[str] = msgspec.field(default_factory=list)
    retention: str
    retention_by: str = ""
    source: str
    frequency: str
    quality_rules: list[str]
    produced_by: str
    writers: list[Role] = msgspec.field(default_factory=list)
    columns: dict[str, Column]

    def __post_init__(self) -> None:
        """Retention, region and subject columns must be ones this object can have."""
        if self.retention not in {"permanent", "derived"} and not (
            ISO_DURATION.fullmatch(self.retention) and self.retention != "P"
        ):
            raise invalid("retention", "must be an ISO 8601 duration (P10Y, P90D)")
        if (self.retention == "derived") != (self.kind == "view"):
            raise invalid("retention", "'derived' is for views, and every view's retention")
        own = THROUGH.fullmatch(self.retention_by)
        if self.retention_by and (own["column"] if own else self.retention_by) not in self.columns:
            raise invalid("retention_by", f"{self.retention_by!r} is not a column of it")
        if self.kind == "time-partitioned" and not self.retention_by:
            raise invalid("retention_by", "a time-partitioned table ages by its time column")
        named = [*self.subject_meter_id, *self.subject_pseudonym]
        if self.region and not THROUGH.fullmatch(self.region):
            named.append(self.region)
        if through := THROUGH.fullmatch(self.region):
            named.append(through["column"])
        if unknown := [c for c in named if c not in self.columns]:
            raise invalid("columns", f"region or subject columns {unknown} are not among them")

    def column_class(self, name: str) -> PersonalData:
        """The personal-data class of one column."""
        return self.columns[name].personal_data or self.personal_data


class Dictionary(Settings, frozen=True):
    """The whole dictionary: objects by name."""

    objects: dict[str, DataObject]

    def region_path(self, name: str) -> tuple[str, str, str] | None:
        """(column, table, key) for a region through another table, None for own or none."""
        through = THROUGH.fullmatch(self.objects[name].region)
        if through is None:
            return None
        return through["column"], through["table"], through["key"]


def _has_column(dictionary: Dictionary, table: str, column: str) -> bool:
    return table in dictionary.objects and column in dictionary.objects[table].columns


def _schema_error(where: str, key: str, problem: str) -> SchemaError:
    return SchemaError(f"dictionary.toml: {where}.{key}: {problem}")


def parse_dictionary(data: dict[str, Any]) -> Dictionary:
    """The dictionary from parsed TOML, with ``[defaults]`` filled into every object.

    Objects are checked one by one, so an error names the object, and a column given as a
    plain string is its description.

    Raises:
        SchemaError: naming the object and key at fault.

    """
    defaults = data.get("defaults", {})
    objects = {}
    for name, entry in data.get("objects", {}).items():
        merged = {**defaults, **entry}
        if isinstance(merged.get("columns"), dict):
            merged["columns"] = {
                column: {"description": spec} if isinstance(spec, str) else spec
                for column, spec in merged["columns"].items()
            }
        objects[name] = validate(
            DataObject,
            merged,
            error=functools.partial(_schema_error, f"objects.{name}"),
        )
    dictionary = Dictionary(objects=objects)
    for name, entry in dictionary.objects.items():
        by = THROUGH.fullmatch(entry.retention_by)
        if by and not all(
            _has_column(dictionary, by["table"], c) for c in (by["column"], by["key"])
        ):
            raise _schema_error(
                f"objects.{name}",
                "retention_by",
                f"{by['table']} has no column {by['column']} or {by['key']}",
            )
    for name in dictionary.objects:
        if path := dictionary.region_path(name):
            _column, table, key = path
            target = dictionary.objects.get(table)
            if target is None or key not in target.columns or target.region != "region":
                raise _schema_error(
                    f"objects.{name}",
                    "region",
                    f"{table}.{key} is not a column of an object with a region column",
                )
    return dictionary


@functools.cache
def load_dictionary() -> Dictionary:
    """The dictionary shipped with this release (read once per process)."""
    text = resources.files(__package__).joinpath("dictionary.toml").read_text()
    return parse_dictionary(tomllib.loads(text))


def comment_statements(dictionary: Dictionary) -> list[psycopg.sql.Composed]:
    """``COMMENT ON`` every object and column: what psql's table descriptions show."""
    statements = []
    for name, entry in dictionary.objects.items():
        kind = psycopg.sql.SQL("VIEW" if entry.kind == "view" else "TABLE")
        table = psycopg.sql.Identifier(name)
        statements.append(
            psycopg.sql.SQL("COMMENT ON {} {} IS {}").format(
                kind, table, psycopg.sql.Literal(entry.description)
            )
        )
        statements += [
            psycopg.sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                table, psycopg.sql.Identifier(column), psycopg.sql.Literal(_column_comment(spec))
            )
            for column, spec in entry.columns.items()
        ]
    return statements


def _column_comment(column: Column) -> str:
    return f"{column.description} ({column.unit})" if column.unit else column.description


def differences(conn: psycopg.Connection, dictionary: Dictionary) -> list[str]:
    """Every object or column in the live schema and not the dictionary, or the other way.

    Partitions and TimescaleDB chunks are not objects of their own; an empty list means the
    dictionary describes the database exactly.
    """
    live: dict[str, tuple[str, list[str]]] = {}
    for name, relkind, column in conn.execute(LIVE_OBJECTS).fetchall():
        live.setdefault(name, (relkind, []))[1].append(column)
    found = [
        f"{name}: in the database, not in the dictionary"
        for name in sorted(live.keys() - dictionary.objects.keys())
    ]
    found += [
        f"{name}: in the dictionary, not in the database"
        for name in sorted(dictionary.objects.keys() - live.keys())
    ]
    for name in sorted(live.keys() & dictionary.objects.keys()):
        relkind, columns = live[name]
        entry = dictionary.objects[name]
        if relkind not in RELKINDS[entry.kind]:
            found.append(f"{name}: a {entry.kind} in the dictionary, relkind {relkind!r} live")
        found += [
            f"{name}.{c}: in the database, not in the dictionary"
            for c in columns
            if c not in entry.columns
        ]
        found += [
            f"{name}.{c}: in the dictionary, not in the database"
            for c in entry.columns
            if c not in columns
        ]
    return found


def digest(dictionary: Dictionary) -> str:
    """The dictionary's version: SHA-256 of its canonical JSON (keys sorted)."""
    return hashlib.sha256(msgspec.json.encode(dictionary, order="sorted")).hexdigest()


def record_version(conn: psycopg.Connection, dictionary: Dictionary, release: str) -> str | None:
    """Record ``dictionary`` as a version the database is described by; its digest if new."""
    version = digest(dictionary)
    inserted = conn.execute(
        "INSERT INTO dictionary_versions (digest, release, content) VALUES (%s, %s, %s)"
        " ON CONFLICT (digest) DO NOTHING RETURNING digest",
        (version, release, Jsonb(msgspec.to_builtins(dictionary))),
    ).fetchone()
    return version if inserted else None
