"""A damaged buffer: found before the agent trusts it, and what is intact moved to a new one.

A gateway's disk can flip bits (power cuts on cheap flash, a failing SD card). SQLite then
answers "database disk image is malformed" somewhere in the middle of the agent's work, and
everything buffered is stranded. ``damage`` runs SQLite's own check; ``salvage`` moves the damaged
file (and its WAL) aside, keeps it for the operator, and copies into a new buffer every row it
can still read, table by table and, where a table is damaged, in row id order, jumping over
the damaged pages to where reading works again; a file cut short (truncated) gives up the
pages past its end only. What could not be read is counted. Delivery stays at-least-once: a
lost delivery cursor means the history is read again (copies of what the core holds are
stored once there), lost validation state means meters start afresh; only what was in the
damaged pages themselves is gone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import BufferUnavailable
from edge_agent.sinks.buffer import TABLES, Buffer

log = logging.getLogger(__name__)

CORRUPTION_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB: damage, nothing else is
ROWID_CHUNK = 256  # rows read at once from a damaged table; a failing chunk is read row by row
# When the sequence counter itself is lost, the next batch skips this far past the highest
# sequence still on disk: a sequence must never be handed out twice (the core would refuse
# the second batch as SEQUENCE_CONFLICT), and gaps cost nothing.
SEQUENCE_GAP = 1_000_000
MAX_ROWID = 2**63 - 1  # SQLite's


@dataclass
class SalvageReport:
    """What a salvage kept and lost, by table, and where the damaged file now is."""

    damaged_file: Path
    problems: list[str]
    kept: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int | str] = field(default_factory=dict)  # rows, or "all"


def damage(path: Path) -> list[str]:
    """What SQLite's quick check finds wrong with the buffer at ``path`` (empty: intact).

    Raises:
        BufferUnavailable: the file cannot be opened at all.

    """
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BufferUnavailable(f"cannot open the buffer {path}: {exc}") from exc
    try:
        rows = [row[0] for row in db.execute("PRAGMA quick_check(20)")]
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode & 0xFF not in CORRUPTION_CODES:
            # locked, unreadable, an I/O error: not damage, and no reason to salvage
            raise BufferUnavailable(f"cannot check the buffer {path}: {exc}") from exc
        return [str(exc)]
    finally:
        db.close()
    return [] if rows == ["ok"] else rows


def salvage(path: Path, problems: list[str], **buffer_options: Any) -> SalvageReport:  # noqa: ANN401
    """Move the damaged buffer aside and copy what is readable into a new one at ``path``."""
    damaged = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(f"{damaged}{suffix}")
    report = SalvageReport(damaged, problems)
    source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    # A file shorter than its header says (truncated) is refused whole unless the schema is
    # "writable": SQLite then reads the pages there are. Nothing is written: read-only.
    source.execute("PRAGMA writable_schema=ON")
    target = Buffer(path, **buffer_options)
    try:
        for table in TABLES:
            rows, lost = _readable_rows(source, table)
            target.restore_rows(table, rows)
            report.kept[table] = len(rows)
            if lost:
                report.lost[table] = lost
        target.restore_sequence(gap=SEQUENCE_GAP if "agent_state" in report.lost else 0)
    finally:
        source.close()
        target.close()
    return report


def _readable_rows(db: sqlite3.Connection, table: str) -> tuple[list[tuple[Any, ...]], int | str]:
    """Every row of ``table`` that can be read, and how many could not.

    The count is of row ids skipped over damage (an upper bound: an id may never have been
    used); "the rest" when the table's end is unreadable (a truncated file), "all" when
    nothing is. Row ids start at 1 (every table with row ids has an INTEGER PRIMARY KEY).
    """
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall(), 0  # noqa: S608 - fixed names
    except sqlite3.DatabaseError:
        pass
    try:
        (highest,) = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()  # noqa: S608
    except sqlite3.DatabaseError:
        highest = None  # the table's end is damaged or cut off
    rows: list[tuple[Any, ...]] = []
    lost = 0
    after = 0
    while True:
        chunk = _rows_after(db, table, after, ROWID_CHUNK) or _rows_after(db, table, after, 1)
        if chunk is None:  # the next row lies in damaged pages: find where reading resumes
            resumed = _readable_after(db, table, after, highest)
            if resumed is None:
                return rows, "all" if not rows else "the rest"
            lost += resumed - after - 1
            after = resumed - 1
            continue
        if not chunk:
            return rows, lost
        rows += [row[1:] for row in chunk]
        after = chunk[-1][0]


def _rows_after(
    db: sqlite3.Connection, table: str, after: int, limit: int
) -> list[tuple[Any, ...]] | None:
    """Up to ``limit`` rows (row id first) with row ids above ``after``; None if unreadable."""
    query = f"SELECT rowid, * FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"  # noqa: S608
    try:
        return db.execute(query, (after, limit)).fetchall()
    except sqlite3.DatabaseError:
        return None


def _readable_after(
    db: sqlite3.Connection, table: str, after: int, highest: int | None
) -> int | None:
    """The lowest row id above ``after`` from which rows can be read again, if any.

    Up to the table's highest row id (when that is readable) every id is tried, so no
    readable page between two damaged ones is skipped; beyond it (or when the end itself is
    unreadable, a truncated file) the jumps double, to find any rows past the damage quickly.
    """
    probe, step = after + 1, 1
    while probe < MAX_ROWID:
        if _rows_after(db, table, probe - 1, 1) is not None:
            return probe
        if highest is None or probe >= highest:
            step *= 2
        probe += step
    return None
