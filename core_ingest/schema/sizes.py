"""Row counts as the planner estimates them: never ``count(*)`` over billions of readings.

A national database holds billions of readings; counting them exactly reads every chunk. The
planner's estimate (``pg_class.reltuples``, kept by autovacuum's ANALYZE) is summed over a
table's leaves: its partitions or TimescaleDB chunks, its descendants in ``pg_inherits`` (a
partitioned parent's own estimate already sums its partitions, so parents are left out). A
table never analyzed counts 0 (reltuples is -1 until the first ANALYZE).
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

ESTIMATED_ROWS = """
WITH RECURSIVE tree AS (
    SELECT c.oid, c.relname AS root FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relname = ANY(%s)
    UNION ALL
    SELECT i.inhrelid, t.root FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
SELECT t.root, sum(greatest(c.reltuples, 0))::bigint FROM tree t
JOIN pg_class c ON c.oid = t.oid
WHERE NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = t.oid)
GROUP BY t.root
"""


def estimated_rows(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, int]:
    """Each table's estimated row count, partitions and chunks included (0 if never analyzed)."""
    names = list(tables)
    found: dict[str, int] = dict(conn.execute(ESTIMATED_ROWS, (names,)).fetchall())
    return {name: int(found.get(name, 0)) for name in names}
