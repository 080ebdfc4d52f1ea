"""The simulator's own record: every reading served and every fault injected (ground truth).

One SQLite file, kept aside for tests and for scoring validation, lineage and reliability.

- ``served``: what each device exposed, one row per meter and interval (missed intervals absent).
- ``truth``: one row per injected fault instance: kind, what it did (``detail``), device, meter
  serial or transformer, time span, the true value and the value served instead.
- ``telemetry``: every MQTT message published, as sent (malformed ones included).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS served (
    device TEXT NOT NULL, serial INTEGER NOT NULL, interval_end INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL, register_wh INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS served_meter ON served (serial, interval_end);
CREATE TABLE IF NOT EXISTS truth (
    fault INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL, device TEXT NOT NULL,
    subject TEXT, start INTEGER NOT NULL, end INTEGER, true_value REAL, served_value REAL
);
CREATE TABLE IF NOT EXISTS telemetry (
    topic TEXT NOT NULL, time INTEGER NOT NULL, payload BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ServedReading:
    """One closed interval of one meter, exactly as a device exposed it."""

    device: str
    serial: int
    interval_end: int
    energy_wh: int
    register_wh: int


@dataclass(frozen=True, slots=True)
class TruthRow:
    """One injected fault instance. ``subject`` is a meter serial or a transformer name."""

    fault: int
    kind: str
    detail: str
    device: str
    subject: str | None
    start: int
    end: int | None
    true_value: float | None
    served_value: float | None


class FieldRecord:
    """Append-only record of one simulator run."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the record at ``path``."""
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def add_served(self, rows: Iterable[tuple[str, int, int, int, int]]) -> None:
        """Append served readings (device, serial, interval_end, energy_wh, register_wh)."""
        with self._db:
            self._db.executemany("INSERT INTO served VALUES (?, ?, ?, ?, ?)", rows)

    def add_truth(self, rows: Iterable[TruthRow]) -> None:
        """Append ground-truth rows."""
        with self._db:
            self._db.executemany(
                "INSERT INTO truth VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.fault,
                        r.kind,
                        r.detail,
                        r.device,
                        r.subject,
                        r.start,
                        r.end,
                        r.true_value,
                        r.served_value,
                    )
                    for r in rows
                ],
            )

    def add_telemetry(self, rows: Iterable[tuple[str, int, bytes]]) -> None:
        """Append published MQTT messages (topic, time, payload)."""
        with self._db:
            self._db.executemany("INSERT INTO telemetry VALUES (?, ?, ?)", rows)

    def served(self, device: str | None = None) -> list[ServedReading]:
        """Served readings, ordered by device, meter and interval."""
        query = "SELECT * FROM served"
        rows = (
            self._db.execute(f"{query} WHERE device = ? ORDER BY serial, interval_end", (device,))
            if device
            else self._db.execute(f"{query} ORDER BY device, serial, interval_end")
        )
        return [ServedReading(*row) for row in rows]

    def published(self) -> list[tuple[str, int]]:
        """Every MQTT message published: (topic, simulated time), in the order published."""
        return list(self._db.execute("SELECT topic, time FROM telemetry ORDER BY rowid"))

    def truth(self) -> list[TruthRow]:
        """Every injected fault instance, in the order injected."""
        return [TruthRow(*row) for row in self._db.execute("SELECT * FROM truth ORDER BY rowid")]

    def truth_summary(self) -> list[dict[str, object]]:
        """Counts by fault kind, effect and device, with the time span covered."""
        rows = self._db.execute(
            "SELECT kind, detail, device, count(*), min(start), max(coalesce(end, start)) "
            "FROM truth GROUP BY kind, detail, device ORDER BY kind, detail, device"
        )
        keys = ("kind", "detail", "device", "instances", "first", "last")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def close(self) -> None:
        """Close the file."""
        self._db.close()
