"""Versions: of the schema, the data dictionary, and the software and rules behind the data.

The schema's migrations and the dictionary's versions are recorded by ``migrate``
(``schema_migrations``, ``dictionary_versions``); what produced the data (edge software, VEE
ruleset, register map, pseudonym key, core software) is in each batch's ledger row, so its
history is read from the ledger over a period. ``diff`` says what changed between two
dictionary versions, object by object and column by column.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg

from core_ingest.schema.dictionary import Dictionary

CURRENT = "current"  # the dictionary this release ships, in a diff
ENTRY_FIELDS = (
    "kind", "description", "owner", "steward", "personal_data", "region", "subject_meter_id",
    "subject_pseudonym", "retention", "retention_by", "source", "frequency", "quality_rules",
    "produced_by",
)  # fmt: skip
COLUMN_FIELDS = ("description", "unit", "personal_data")


class VersionError(Exception):
    """A version asked for is not recorded, or ambiguous; the message says which."""


@dataclass(frozen=True, slots=True)
class SchemaStep:
    """One migration applied."""

    version: int
    name: str
    applied_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DictionaryVersion:
    """One recorded version of the data dictionary."""

    digest: str
    release: str
    recorded_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Producers:
    """One combination of software and rules that produced batches, and when it did."""

    software_version: str  # the edge agent's
    register_map_version: int
    validation_ruleset: str | None
    pseudonym_key_id: str
    core_version: str
    batches: int
    agents: int
    first: dt.datetime
    last: dt.datetime


@dataclass(frozen=True, slots=True)
class History:
    """Everything ``governance versions`` shows."""

    schema: list[SchemaStep]
    dictionaries: list[DictionaryVersion]
    producers: list[Producers]


def history(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> History:
    """Schema and dictionary versions, and the producers of the batches committed in a period."""
    schema = [
        SchemaStep(*row)
        for row in conn.execute(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
    ]
    dictionaries = [
        DictionaryVersion(*row)
        for row in conn.execute(
            "SELECT digest, release, recorded_at FROM dictionary_versions ORDER BY recorded_at"
        ).fetchall()
    ]
    producers = [
        Producers(*row)
        for row in conn.execute(
            "SELECT software_version, register_map_version, validation_ruleset, pseudonym_key_id,"
            " core_version, count(*), count(DISTINCT agent_id), min(committed_at),"
            " max(committed_at) FROM batches WHERE committed_at >= %s AND committed_at < %s"
            " GROUP BY 1, 2, 3, 4, 5 ORDER BY min(committed_at)",
            (start, end),
        ).fetchall()
    ]
    return History(schema, dictionaries, producers)


def load_version(conn: psycopg.Connection | None, version: str, current: Dictionary) -> Dictionary:
    """A recorded dictionary by its digest (or a unique prefix), or ``current``.

    Raises:
        VersionError: naming the version that is not recorded or not unique.

    """
    if version == CURRENT:
        return current
    if conn is None:
        raise VersionError(f"{version!r}: recorded versions are read from the database (--dsn)")
    rows = conn.execute(
        "SELECT digest, content FROM dictionary_versions WHERE digest LIKE %s || '%%'",
        (version,),
    ).fetchall()
    if len(rows) != 1:
        problem = "is not a recorded dictionary version" if not rows else "matches several"
        raise VersionError(f"{version!r} {problem} (see `governance versions`)")
    return msgspec.convert(rows[0][1], Dictionary)


def diff(old: Dictionary, new: Dictionary) -> list[str]:
    """What changed from ``old`` to ``new``: ``+`` added, ``-`` removed, ``~`` changed."""
    lines = [f"+ {name}" for name in sorted(new.objects.keys() - old.objects.keys())]
    lines += [f"- {name}" for name in sorted(old.objects.keys() - new.objects.keys())]
    for name in sorted(old.objects.keys() & new.objects.keys()):
        was, now = old.objects[name], new.objects[name]
        lines += _changes(name, _fields(was, ENTRY_FIELDS), _fields(now, ENTRY_FIELDS))
        lines += [f"+ {name}.{c}" for c in now.columns if c not in was.columns]
        lines += [f"- {name}.{c}" for c in was.columns if c not in now.columns]
        for column in [c for c in was.columns if c in now.columns]:
            lines += _changes(
                f"{name}.{column}",
                _fields(was.columns[column], COLUMN_FIELDS),
                _fields(now.columns[column], COLUMN_FIELDS),
            )
    return lines


def _fields(value: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(value, name) for name in names}


def _changes(where: str, was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"~ {where}.{key}: {was[key]!r} -> {now[key]!r}" for key in was if was[key] != now[key]]


def short(version: str) -> str:
    """How a dictionary version is shown: the digest's first 12 hex digits."""
    return version[:12]
