"""The data catalog: every table and view the central database holds, from the data dictionary.

The objects, their owners, stewards, personal-data classes, retention, quality rules and
descriptions come from the core's data dictionary (``core_ingest/schema/dictionary.toml``),
never from a list kept here; column types and the storage under a time-partitioned table come
from the live database; sizes are the planner's estimates (a national database holds billions
of readings). ``search`` looks through the dictionary and the glossary together.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from core_ingest.schema import recorded_storage
from core_ingest.schema.dictionary import Dictionary, comment_statements, differences
from core_ingest.schema.sizes import estimated_rows
from governance import audit
from governance.glossary import Glossary

LIVE_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
# What a time-partitioned table is under each storage (storage_settings records which).
PARTITIONED_AS = {
    "timescaledb": "TimescaleDB hypertable",
    "native-partitioning": "daily partitions",
}


@dataclass(frozen=True, slots=True)
class Dataset:
    """One catalogued table or view, as the catalog's list shows it."""

    name: str
    kind: str
    description: str
    owner: str
    steward: str
    personal_data: str
    retention: str
    rows_estimated: int | None  # None for a view: it holds nothing of its own


@dataclass(frozen=True, slots=True)
class ColumnEntry:
    """One column: its live type, what it holds, and its personal-data class."""

    name: str
    type: str | None  # None: in the dictionary, not in the database (``check`` says so)
    description: str
    unit: str
    personal_data: str


@dataclass(frozen=True, slots=True)
class DatasetEntry:
    """Everything the catalog knows about one object."""

    dataset: Dataset
    storage: str  # table, view, TimescaleDB hypertable or daily partitions
    region: str
    subject_columns: list[str]
    source: str
    frequency: str
    quality_rules: list[str]
    produced_by: str
    columns: list[ColumnEntry]


@dataclass(frozen=True, slots=True)
class Hit:
    """One place ``search`` found the text: an object, one of its columns, or a glossary term."""

    kind: str  # table, time-partitioned, view, column, term
    name: str  # object, object.column, or the term
    field: str  # where the text was found: name, description, formula...
    text: str
    about: str  # what the object or column holds, or the term's definition


def list_datasets(conn: psycopg.Connection, dictionary: Dictionary) -> list[Dataset]:
    """Every object of the dictionary, by name, with its estimated rows."""
    stored = [name for name, entry in dictionary.objects.items() if entry.kind != "view"]
    rows = estimated_rows(conn, stored)
    return [_dataset(dictionary, name, rows.get(name)) for name in sorted(dictionary.objects)]


def _dataset(dictionary: Dictionary, name: str, rows: int | None) -> Dataset:
    entry = dictionary.objects[name]
    return Dataset(
        name=name,
        kind=entry.kind,
        description=entry.description,
        owner=entry.owner,
        steward=entry.steward,
        personal_data=entry.personal_data,
        retention=entry.retention,
        rows_estimated=rows,
    )


def describe(conn: psycopg.Connection, dictionary: Dictionary, name: str) -> DatasetEntry:
    """One object in full: the dictionary's entry with the live column types and storage.

    Raises:
        KeyError: ``name`` is not in the dictionary.

    """
    entry = dictionary.objects[name]
    rows = None if entry.kind == "view" else estimated_rows(conn, [name])[name]
    types: dict[str, str] = dict(conn.execute(LIVE_COLUMNS, (name,)).fetchall())
    storage: str = entry.kind
    if entry.kind == "time-partitioned":
        storage = PARTITIONED_AS.get(recorded_storage(conn) or "", entry.kind)
    return DatasetEntry(
        dataset=_dataset(dictionary, name, rows),
        storage=storage,
        region=entry.region,
        subject_columns=[*entry.subject_meter_id, *entry.subject_pseudonym],
        source=entry.source,
        frequency=entry.frequency,
        quality_rules=list(entry.quality_rules),
        produced_by=entry.produced_by,
        columns=[
            ColumnEntry(
                name=column,
                type=types.get(column),
                description=spec.description,
                unit=spec.unit,
                personal_data=entry.column_class(column),
            )
            for column, spec in entry.columns.items()
        ],
    )


def search(dictionary: Dictionary, glossary: Glossary, text: str) -> list[Hit]:
    """Every glossary term, object and column whose words contain ``text`` (any case).

    Terms first: someone searching a figure wants its definition before the columns.
    """
    wanted = text.casefold()
    hits: list[Hit] = []

    def look(kind: str, name: str, about: str, fields: dict[str, str | list[str]]) -> None:
        for field, value in fields.items():
            for line in [value] if isinstance(value, str) else value:
                if wanted in line.casefold():
                    hits.append(Hit(kind=kind, name=name, field=field, text=line, about=about))
                    return  # one hit per object, column or term: its first matching field

    for name, term in sorted(glossary.terms.items()):
        look(
            "term",
            name,
            term.definition,
            {
                "name": name,
                "aliases": list(term.aliases),
                "definition": term.definition,
                "formula": term.formula,
            },
        )
    for name, entry in sorted(dictionary.objects.items()):
        look(
            entry.kind,
            name,
            entry.description,
            {
                "name": name,
                "description": entry.description,
                "owner": entry.owner,
                "steward": entry.steward,
                "source": entry.source,
                "quality_rules": list(entry.quality_rules),
                "produced_by": entry.produced_by,
            },
        )
        for column, spec in entry.columns.items():
            look(
                "column",
                f"{name}.{column}",
                spec.description,
                {"name": column, "description": spec.description},
            )
    return hits


def check(conn: psycopg.Connection, dictionary: Dictionary) -> list[str]:
    """Every difference between the live schema and the dictionary (none: they agree)."""
    return differences(conn, dictionary)


def sync(conn: psycopg.Connection, dictionary: Dictionary) -> int:
    """Write the dictionary's descriptions as COMMENT ON (what psql's d+ shows); how many.

    One transaction with its audit entry: the descriptions are written all or none. The
    database must be the dictionary's (``check`` finds nothing): a description is never
    written onto a column that means something else.

    Raises:
        CatalogMismatch: listing the differences.

    """
    if found := differences(conn, dictionary):
        raise CatalogMismatch(found)
    statements = comment_statements(dictionary)
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
        audit.append(conn, "catalog.sync", "dictionary", {"comments": len(statements)})
    return len(statements)


def _differences(count: int) -> str:
    return f"{count} difference{'s' if count != 1 else ''} between the database and dictionary"


class CatalogMismatch(Exception):  # noqa: N818 - the condition, as operators name it
    """The database and the data dictionary differ; ``differences`` lists how."""

    def __init__(self, differences: list[str]) -> None:
        """Keep the list for the caller to print."""
        super().__init__(_differences(len(differences)))
        self.differences = differences
