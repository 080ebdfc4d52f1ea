"""What waits to be sealed: readings, telemetry points and quarantined items."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edge_agent.sinks.buffer.state import AgentState, _pack_states
from edge_agent.transforms.pseudonymize import PseudonymousReading
from edge_agent.transforms.telemetry import TelemetryPoint
from edge_agent.transforms.validate import MeterState, Quarantined
from proto.quality import QualityFlag

ESTIMATED = int(QualityFlag.ESTIMATED)


class PendingData(AgentState):
    """Puts what a poll or a message brought, with the state it leaves the agent in."""

    def put_readings(  # noqa: PLR0913 - every part of one poll's atomic commit
        self,
        readings: Sequence[PseudonymousReading],
        *,
        states: Mapping[bytes, MeterState] | None = None,
        profiles: Iterable[tuple[bytes, bytes]] = (),
        quarantined: Sequence[Quarantined] = (),
        device: str | None = None,
        interval_end: int = 0,
        late: Sequence[PseudonymousReading] = (),
    ) -> int:
        """Commit one poll atomically: readings, meter states, quarantine, device cursor.

        Validation decided what is new (``edge_agent.transforms.validate``); ``states`` (all
        of the device's meters) are saved in the same commit, so after a crash validation
        resumes exactly where the buffer is. Time-of-day ``profiles`` (384 bytes a meter, a
        learned statistic) come with a meter's first interval of a UTC day
        (``MeterMemory.day_start_profiles``) and from ``save_profiles`` at shutdown: a crash
        forgets at most a day of learning. With ``device``, the device's delivery cursor moves
        to ``interval_end`` in the same commit: a restarted agent backfills from exactly there.
        A ``late`` real reading replaces a pending estimate of its meter and interval (once
        sealed, the core replaces it). Returns the number of readings written.
        """
        states = states or {}
        now_ms = time.time_ns() // 1_000_000
        with self._transaction():
            self._db.executemany(
                "INSERT INTO readings (meter, interval_end, energy_wh, register_wh, quality_flags,"
                " poll_time_ms, device) VALUES (?, ?, ?, ?, ?, ?, ?)",
                readings,  # named tuples in the column order
            )
            if late:
                self._replace_estimates(late)
            if states:
                # All of a device's meters in one packed row: one write per poll instead of
                # one per meter (the per-meter upserts cost a fifth of the throughput).
                self._db.execute(
                    "INSERT OR REPLACE INTO device_state VALUES (?, ?)",
                    (device or "", _pack_states(states)),
                )
            self._db.executemany("INSERT OR REPLACE INTO meter_profile VALUES (?, ?)", profiles)
            self._db.executemany(
                "INSERT INTO quarantine (received_ms, source, device, reason, payload)"
                " VALUES (?, 'modbus', ?, ?, ?)",
                [
                    (now_ms, q.reading.device, q.reason, _reading_json(q.reading))
                    for q in quarantined
                ],
            )
            if device is not None:
                self._move_device_cursor(device, interval_end)
        return len(readings) + len(late)

    def _replace_estimates(self, late: Sequence[PseudonymousReading]) -> None:
        """Delete pending estimates of the late readings' meters and intervals; add the readings.

        Intervals are matched on the 15-minute grid, as the core stores them (an estimate at
        11:15:02 and the reading at 11:15:03 are one interval). One pass over the pending
        readings for all of them: the late readings' keys go to a temporary table first.
        """
        self._db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS late_keys (meter BLOB, slot INTEGER,"
            " PRIMARY KEY (meter, slot)) WITHOUT ROWID"
        )
        self._db.execute("DELETE FROM late_keys")
        self._db.executemany(
            "INSERT OR IGNORE INTO late_keys VALUES (?, (? + 450) / 900)",
            [(r.meter, r.interval_end) for r in late],
        )
        self._db.execute(
            f"DELETE FROM readings WHERE quality_flags & {ESTIMATED} AND EXISTS"  # noqa: S608
            " (SELECT 1 FROM late_keys k WHERE k.meter = readings.meter"
            " AND k.slot = (readings.interval_end + 450) / 900)"
        )
        self._db.executemany(
            "INSERT INTO readings (meter, interval_end, energy_wh, register_wh,"
            " quality_flags, poll_time_ms, device) VALUES (?, ?, ?, ?, ?, ?, ?)",
            late,
        )

    def put_telemetry(self, points: Sequence[TelemetryPoint]) -> int:
        """Commit one message's telemetry points; return how many."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO telemetry (transformer, time_ms, metric, value, quality_flags)"
                " VALUES (?, ?, ?, ?, ?)",
                [(p.transformer, p.time_ms, p.metric, p.value, p.quality_flags) for p in points],
            )
        return len(points)

    def put_quarantine(self, *, source: str, device: str, reason: str, payload: bytes) -> None:
        """Keep one message that could not be used, raw, with the reason."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO quarantine (received_ms, source, device, reason, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                (time.time_ns() // 1_000_000, source, device, reason, payload),
            )

    def quarantined(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent quarantined items, newest first."""
        return self._quarantine_rows("ORDER BY id DESC LIMIT ?", limit)

    def quarantined_after(self, last_id: int) -> list[dict[str, Any]]:
        """Quarantined items after the one with id ``last_id``, oldest first (``tail``)."""
        return self._quarantine_rows("WHERE id > ? ORDER BY id", last_id)

    def _quarantine_rows(self, clauses: str, value: int) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT id, received_ms, source, device, reason, payload FROM quarantine "  # noqa: S608
            + clauses,  # one of the two constant clauses above
            (value,),
        )
        keys = ("id", "received_ms", "source", "device", "reason", "payload")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def shed_telemetry(self, *, keep_every_minutes: int) -> int:
        """Thin out telemetry not yet sealed to one point per metric every N minutes.

        Billing data (meter readings) is never touched. Returns the points deleted.
        """
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM telemetry WHERE (time_ms / 60000) % ? != 0", (keep_every_minutes,)
            )
        return cursor.rowcount


def _reading_json(reading: PseudonymousReading) -> bytes:
    """A quarantined reading as JSON (the pseudonym in hex)."""
    fields = reading._asdict()
    fields["meter"] = reading.meter.hex()
    return json.dumps(fields).encode()
