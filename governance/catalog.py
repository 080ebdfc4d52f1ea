"""The data catalog: every table and view the central database holds, from the data dictionary.

The objects, their owners, stewards, personal-data classes and descriptions come from the
core's data dictionary (``core_ingest/schema/dictionary.toml``), never from a list kept here;
sizes are the planner's estimates (a national database holds billions of readings).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from core_ingest.schema.dictionary import Dictionary, load_dictionary
from core_ingest.schema.sizes import estimated_rows


@dataclass(frozen=True, slots=True)
class Dataset:
    """One catalogued table or view."""

    name: str
    kind: str
    description: str
    owner: str
    steward: str
    personal_data: str
    retention: str
    rows_estimated: int | None  # None for a view: it holds nothing of its own


def list_datasets(conn: psycopg.Connection, dictionary: Dictionary | None = None) -> list[Dataset]:
    """Every object of the dictionary, by name, with its estimated rows."""
    objects = (dictionary or load_dictionary()).objects
    stored = [name for name, entry in objects.items() if entry.kind != "view"]
    rows = estimated_rows(conn, stored)
    described = {"kind", "description", "owner", "steward", "personal_data", "retention"}
    return [
        Dataset(
            name=name,
            rows_estimated=rows.get(name),
            **{key: getattr(entry, key) for key in described},
        )
        for name, entry in sorted(objects.items())
    ]
