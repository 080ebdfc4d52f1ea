"""One row into an analytics table: inserted, or its columns replaced where the key exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql


def upsert(
    conn: psycopg.Connection,
    table: str,
    row: Mapping[str, Any],
    *,
    key: tuple[str, ...],
    stamped: bool = False,
) -> None:
    """Insert ``row`` into ``table``, or update every other column where ``key`` exists.

    With ``stamped``, ``computed_at`` and ``computed_by`` are set to now and the login, on
    insert and on update: a recomputed row says when and by whom.
    """
    columns = list(row)
    names: list[sql.Composable] = [sql.Identifier(c) for c in columns]
    values: list[sql.Composable] = [sql.Placeholder()] * len(columns)
    updates: list[sql.Composable] = [
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in columns
        if c not in key
    ]
    if stamped:
        names += [sql.Identifier("computed_at"), sql.Identifier("computed_by")]
        values += [sql.SQL("now()"), sql.SQL("session_user")]
        updates += [sql.SQL("computed_at = now()"), sql.SQL("computed_by = session_user")]
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
            sql.Identifier(table),
            sql.SQL(", ").join(names),
            sql.SQL(", ").join(values),
            sql.SQL(", ").join(map(sql.Identifier, key)),
            sql.SQL(", ").join(updates),
        ),
        [row[c] for c in columns],
    )
