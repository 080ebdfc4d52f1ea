"""The simulator's own record of every reading it served, kept aside for tests to compare with."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ServedReading:
    """One closed interval of one meter, exactly as the concentrator exposed it."""

    device: str
    serial: int
    interval_end: int
    energy_wh: int
    register_wh: int


class ServedLog:
    """Append-only SQLite file of served readings; one transaction per closed interval."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the log at ``path``."""
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS served (device TEXT NOT NULL, serial INTEGER NOT NULL, "
            "interval_end INTEGER NOT NULL, energy_wh INTEGER NOT NULL, "
            "register_wh INTEGER NOT NULL, PRIMARY KEY (device, serial, interval_end))"
        )
        self._db.commit()

    def record(self, readings: list[ServedReading]) -> None:
        """Append the readings of one closed interval."""
        with self._db:
            self._db.executemany(
                "INSERT INTO served VALUES (?, ?, ?, ?, ?)",
                [
                    (r.device, r.serial, r.interval_end, r.energy_wh, r.register_wh)
                    for r in readings
                ],
            )

    def readings(self) -> list[ServedReading]:
        """Everything served so far, ordered by device, meter and interval."""
        rows = self._db.execute("SELECT * FROM served ORDER BY device, serial, interval_end")
        return [ServedReading(*row) for row in rows]

    def close(self) -> None:
        """Close the file."""
        self._db.close()
