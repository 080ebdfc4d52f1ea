"""The data catalog: every table the pipeline stores, its description and its size."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, slots=True)
class Dataset:
    """One catalogued table."""

    name: str
    description: str | None
    rows: int


def list_datasets(conn: psycopg.Connection) -> list[Dataset]:
    """Tables in the ``public`` schema that are not partitions or chunks, with exact row counts.

    Descriptions are the tables' COMMENTs, written by the core's migrations.
    """
    names = conn.execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "ORDER BY c.relname"
    ).fetchall()
    datasets = []
    for name, description in names:
        count = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(name))
        ).fetchone()
        datasets.append(Dataset(name=name, description=description, rows=count[0] if count else 0))
    return datasets
