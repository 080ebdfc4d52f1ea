"""A damaged buffer: found before the agent trusts it, and what is intact moved to a new one.

A gateway's disk can flip bits (power cuts on cheap flash, a failing SD card). SQLite then
answers "database disk image is malformed" somewhere in the middle of the agent's work, and
everything buffered is stranded. ``damage`` runs SQLite's own check; ``salvage`` moves the damaged
file (and its WAL) aside, keeps it for the operator, and copies into a new buffer every row it
can still read, table by table and, where a table is damaged, range by range of row ids. What
could not be read is counted. Delivery stays at-least-once: a lost delivery cursor means the
history is read again (copies of what the core holds are stored once there), lost validation
state means meters start afresh; only what was in the damaged pages themselves is gone.
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
    """Every row of ``table`` that can be read, and how many could not ("all": none known)."""
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall(), 0  # noqa: S608 - fixed names
    except sqlite3.DatabaseError:
        pass
    try:
        (highest,) = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()  # noqa: S608
    except sqlite3.DatabaseError:
        return [], "all"  # not even its row ids are readable (or it has none)
    try:
        (lowest,) = db.execute(f"SELECT min(rowid) FROM {table}").fetchone()  # noqa: S608
    except sqlite3.DatabaseError:
        lowest = 1  # the damage is on the way to the lowest: scan from the first possible
    rows: list[tuple[Any, ...]] = []
    lost = 0
    # Pending rows are the newest: between the lowest and the highest row id, not from 1.
    for low in range(lowest or 1, (highest or 0) + 1, ROWID_CHUNK):
        chunk, missing = _rows_between(db, table, low, low + ROWID_CHUNK - 1)
        rows += chunk
        lost += missing
    return rows, lost


def _rows_between(
    db: sqlite3.Connection, table: str, low: int, high: int
) -> tuple[list[tuple[Any, ...]], int]:
    """Rows with row ids low..high; a damaged range is read row by row."""
    query = f"SELECT * FROM {table} WHERE rowid BETWEEN ? AND ?"  # noqa: S608 - fixed names
    try:
        return db.execute(query, (low, high)).fetchall(), 0
    except sqlite3.DatabaseError:
        pass
    rows, lost = [], 0
    for rowid in range(low, high + 1):
        try:
            rows += db.execute(query, (rowid, rowid)).fetchall()
        except sqlite3.DatabaseError:
            lost += 1  # a row id that may never have been used counts too: an upper bound
    return rows, lost
