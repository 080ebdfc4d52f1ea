"""Retention: what the data dictionary says to keep, and nothing longer.

Each object with an ISO 8601 retention and a ``retention_by`` time is aged by that time.
Readings and telemetry (time-partitioned) lose whole TimescaleDB chunks or native daily
partitions, never rows one by one: dropping a chunk is instant and leaves no dead rows to
vacuum. Other tables lose the rows older than the cutoff. Rollups have their own, longer
retention, so the hourly and daily sums outlive the readings they were kept from; they are
never recomputed from what remains. Every object cleared gets an audit entry.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from core_ingest.schema import recorded_storage
from core_ingest.schema.dictionary import THROUGH, Dictionary
from governance import audit

DURATION = re.compile(r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)D)?")
NATIVE_BOUND = re.compile(r"FROM \('(?P<start>[^']+)'\) TO \('(?P<end>[^']+)'\)")
PARTITIONS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class Removal:
    """What retention removes from one object, or would (``--dry-run``)."""

    object: str
    retention: str
    cutoff: dt.datetime  # everything before it goes
    method: str  # drop chunks, drop partitions, delete rows
    parts: list[str] = field(default_factory=list)  # chunks or partitions
    rows: int = 0  # rows deleted (or to delete); for parts, not counted


@dataclass(frozen=True, slots=True)
class Kept:
    """An object retention leaves alone, and why."""

    object: str
    retention: str
    reason: str


def cutoff(retention: str, now: dt.datetime) -> dt.datetime:
    """``now`` minus an ISO 8601 duration in years, months and days (calendar arithmetic)."""
    found = DURATION.fullmatch(retention)
    if found is None:
        raise ValueError(f"not an ISO 8601 duration: {retention!r}")
    years, months, days = (int(found[k] or 0) for k in ("years", "months", "days"))
    total = now.year * 12 + (now.month - 1) - years * 12 - months
    year, month = divmod(total, 12)
    day = min(now.day, calendar.monthrange(year, month + 1)[1])  # 29 Feb -> 28 Feb
    return now.replace(year=year, month=month + 1, day=day) - dt.timedelta(days=days)


def plan(
    conn: psycopg.Connection, dictionary: Dictionary, now: dt.datetime
) -> tuple[list[Removal], list[Kept]]:
    """What applying retention now would remove, object by object, and what it keeps."""
    removals, kept = [], []
    for name, entry in sorted(dictionary.objects.items()):
        if entry.retention in {"permanent", "derived"}:
            continue
        if not entry.retention_by:
            kept.append(Kept(name, entry.retention, "kept while other rows refer to its rows"))
            continue
        before = cutoff(entry.retention, now)
        if entry.kind == "time-partitioned":
            removals.append(_old_parts(conn, name, entry.retention, before))
        else:
            rows = _old_rows(conn, name, entry.retention_by, before, delete=False)
            removals.append(Removal(name, entry.retention, before, "delete rows", rows=rows))
    return removals, kept


def apply(
    conn: psycopg.Connection, removals: list[Removal], dictionary: Dictionary
) -> list[Removal]:
    """Remove what ``plan`` found, each object in its own transaction with its audit entry."""
    done = []
    for removal in removals:
        with conn.transaction():
            if removal.method == "delete rows":
                by = dictionary.objects[removal.object].retention_by
                rows = _old_rows(conn, removal.object, by, removal.cutoff, delete=True)
                removal = Removal(  # noqa: PLW2901 - the rows actually deleted
                    removal.object, removal.retention, removal.cutoff, removal.method, rows=rows
                )
            else:
                _drop_parts(conn, removal)
            if removal.parts or removal.rows:
                audit.append(
                    conn,
                    "retention.apply",
                    removal.object,
                    {
                        "retention": removal.retention,
                        "cutoff": removal.cutoff.isoformat(),
                        "method": removal.method,
                        "parts": removal.parts,
                        "rows": removal.rows,
                    },
                )
        done.append(removal)
    return done


def _old_parts(
    conn: psycopg.Connection, table: str, retention: str, before: dt.datetime
) -> Removal:
    """The chunks or daily partitions whose whole range lies before ``before``."""
    if recorded_storage(conn) == "timescaledb":
        chunks = conn.execute(
            "SELECT show_chunks(%s::regclass, older_than => %s)::text", (table, before)
        ).fetchall()
        return Removal(table, retention, before, "drop chunks", [c[0] for c in chunks])
    parts = []
    for name, bound in conn.execute(PARTITIONS, (table,)).fetchall():
        found = NATIVE_BOUND.search(bound or "")
        if found and dt.datetime.fromisoformat(found["end"]) <= before:
            parts.append(name)
    return Removal(table, retention, before, "drop partitions", parts)


def _drop_parts(conn: psycopg.Connection, removal: Removal) -> None:
    if removal.method == "drop chunks":
        conn.execute(
            "SELECT drop_chunks(%s::regclass, older_than => %s)", (removal.object, removal.cutoff)
        )
        return
    for part in removal.parts:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(part)))


def _old_rows(
    conn: psycopg.Connection, table: str, retention_by: str, before: dt.datetime, *, delete: bool
) -> int:
    """Rows older than ``before``, counted or deleted.

    Aged by a time column of their own, or by the time of the row they refer to
    (``COLUMN -> TABLE.TIME``: the TABLE row with the same COLUMN).
    """
    through = THROUGH.fullmatch(retention_by)
    using: sql.Composable
    if through is None:
        using = sql.SQL("")
        condition = sql.SQL("t.{} < %s").format(sql.Identifier(retention_by))
    else:
        column = sql.Identifier(through["column"])
        using = sql.SQL(" {verb} {table} r").format(
            verb=sql.SQL("USING" if delete else "JOIN"), table=sql.Identifier(through["table"])
        )
        condition = sql.SQL("t.{column} = r.{column} AND r.{time} < %s").format(
            column=column, time=sql.Identifier(through["key"])
        )
    if delete:
        query = sql.SQL("DELETE FROM {} t{} WHERE {}")
    elif through is None:
        query = sql.SQL("SELECT count(*) FROM {} t{} WHERE {}")
    else:
        query = sql.SQL("SELECT count(*) FROM {} t{} ON {}")
    cursor = conn.execute(query.format(sql.Identifier(table), using, condition), (before,))
    if delete:
        return cursor.rowcount
    row = cursor.fetchone()
    return int(row[0]) if row else 0
