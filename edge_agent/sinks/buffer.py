"""The durable edge buffer: readings and sealed batches in one SQLite file (at-least-once).

Life of a reading: ``put_readings`` commits it with validation's meter states (one transaction
per poll); ``seal_batch`` moves pending readings into a signed batch in one transaction;
``acknowledge`` marks the batch delivered once the core confirms it. Nothing is deleted before
the core's acknowledgement; acknowledged batches are kept for ``retain_acknowledged_seconds``
so an operator can re-send them, then pruned.

Durability: WAL journal. ``synchronous=full`` (default) makes each commit survive a power cut;
``normal`` survives a crash of the agent but may lose the last commits on power loss (the
concentrator's history still holds them). Calls block: the agent runs them in one worker thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import BufferUnavailable
from edge_agent.transforms.pseudonymize import PseudonymousReading, Rotation
from edge_agent.transforms.telemetry import TelemetryPoint
from edge_agent.transforms.validate import MeterMemory, MeterState, Quarantined
from proto import limits
from proto.quality import QualityFlag

SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    meter BLOB NOT NULL,
    interval_end INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    register_wh INTEGER NOT NULL,
    quality_flags INTEGER NOT NULL,
    poll_time_ms INTEGER NOT NULL,
    device TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY,
    transformer TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    quality_flags INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS device_state (
    device TEXT PRIMARY KEY,
    states BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meter_profile (
    meter BLOB PRIMARY KEY,
    profile BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rotations (
    id INTEGER PRIMARY KEY,
    old_key_id TEXT NOT NULL,
    new_key_id TEXT NOT NULL,
    old_meters BLOB NOT NULL,
    new_meters BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    device TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS device_cursor (
    device TEXT PRIMARY KEY,
    last_interval_end INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    sequence INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    signed BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'acknowledged', 'rejected')),
    outcome TEXT,
    detail TEXT,
    acknowledged_ms INTEGER
);
-- The uplink picks the oldest and the newest pending batch in turn (fair drain): without this
-- index the newest end means walking every retained, acknowledged batch above it.
CREATE INDEX IF NOT EXISTS pending_batches ON batches (sequence) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS agent_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO agent_state VALUES ('next_sequence', 1);
COMMIT;
"""


@dataclass(frozen=True, slots=True)
class BufferStatistics:
    """What the buffer holds now."""

    pending_readings: int
    pending_telemetry: int
    quarantined: int
    pending_batches: int
    pressure: str
    fill: float
    rejected_batches: int
    acknowledged_batches: int
    next_sequence: int
    oldest_pending_poll_ms: int | None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A sealed batch as kept in the buffer."""

    sequence: int
    signed: bytes
    readings: int


PRESSURE_LEVELS = ("normal", "shedding", "paused")
# Every table, those that say where the agent stands first (the order a salvage copies them).
TABLES = (
    "agent_state",
    "device_cursor",
    "device_state",
    "meter_profile",
    "rotations",
    "batches",
    "readings",
    "telemetry",
    "quarantine",
)
ESTIMATED = int(QualityFlag.ESTIMATED)
# One meter's validation state, packed: pseudonym, interval end, register, last energy, last
# valid energy (NO_VALUE when none), repeats, zeros.
_STATE = struct.Struct("<32sqqqqii")
NO_VALUE = -(2**63)
# Pending sequence numbers from the oldest end (False) or the newest (True), off the index.
_PENDING_FROM_END = {
    False: "SELECT sequence FROM batches WHERE state = 'pending' ORDER BY sequence LIMIT ?",
    True: "SELECT sequence FROM batches WHERE state = 'pending' ORDER BY sequence DESC LIMIT ?",
}


def _pack_states(states: Mapping[bytes, MeterState]) -> bytes:
    pack = _STATE.pack
    return b"".join(
        pack(
            meter,
            s.interval_end,
            s.register_wh,
            s.last_energy_wh,
            NO_VALUE if s.last_valid_wh is None else s.last_valid_wh,
            s.repeats,
            s.zeros,
        )
        for meter, s in states.items()
    )


# (meter readings, telemetry points, sequence, key rotations) -> the serialized SignedBatch
SealFunction = Callable[
    [list[PseudonymousReading], list[TelemetryPoint], int, list[Rotation]], bytes
]


class Buffer:
    """One SQLite file holding what has not been delivered yet."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        read_only: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        """Open the buffer at ``path``, creating it unless ``read_only`` (for status reports).

        Raises:
            BufferUnavailable: the file cannot be opened or created (missing folder, no
                permission, not a buffer).

        """
        self.path = path
        self._synchronous = "FULL" if synchronous == "full" else "NORMAL"
        try:
            if read_only:
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                _owner_only(path)
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                # Checkpoint every 1 MB of WAL and truncate it back to 4 MB at most, so the
                # file's write-ahead log stays small beside the capped database.
                self._db.execute("PRAGMA wal_autocheckpoint = 256")
                self._db.execute("PRAGMA journal_size_limit = 4194304")
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")
                self._db.executescript(SCHEMA)
                if max_bytes is not None:
                    # The file never grows past the cap: a write beyond it fails cleanly
                    # (BufferUnavailable) instead of filling the gateway's disk.
                    page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
                    pages = max(64, max_bytes // page_size)
                    self._db.execute(f"PRAGMA max_page_count = {pages}")
                    self._db.execute(
                        "INSERT OR REPLACE INTO agent_state VALUES ('max_pages', ?)", (pages,)
                    )
            self._db.execute("SELECT value FROM agent_state").fetchone()  # is it a buffer?
        except (sqlite3.Error, OSError) as exc:
            raise BufferUnavailable(f"cannot open the buffer {path}: {exc}") from exc

    def close(self) -> None:
        """Close the file; every committed change is already on disk."""
        self._db.close()

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

    def save_profiles(self, profiles: Iterable[tuple[bytes, bytes]]) -> None:
        """Save (meter, time-of-day profile) pairs now (every meter's, at shutdown)."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meter_profile VALUES (?, ?)", profiles)

    def device_meters(self) -> dict[str, set[bytes]]:
        """Which meters each device's saved state covers."""
        return {
            device: {row[0] for row in _STATE.iter_unpack(packed)}
            for device, packed in self._query("SELECT device, states FROM device_state")
        }

    def meter_memory(self) -> MeterMemory:
        """Validation's memory of every meter: states as last committed, profiles as saved."""
        states = {}
        for (packed,) in self._query("SELECT states FROM device_state"):
            for meter, end, register, last, valid, repeats, zeros in _STATE.iter_unpack(packed):
                states[meter] = MeterState(
                    end, register, last, None if valid == NO_VALUE else valid, repeats, zeros
                )
        return MeterMemory(states, self._query("SELECT meter, profile FROM meter_profile"))

    def quarantined(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent quarantined items, newest first."""
        rows = self._query(
            "SELECT id, received_ms, source, device, reason, payload FROM quarantine"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        keys = ("id", "received_ms", "source", "device", "reason", "payload")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def _move_device_cursor(self, device: str, interval_end: int) -> None:
        self._db.execute(
            "INSERT INTO device_cursor VALUES (?, ?) ON CONFLICT (device) DO UPDATE SET "
            "last_interval_end = max(last_interval_end, excluded.last_interval_end)",
            (device, interval_end),
        )

    def device_cursors(self) -> dict[str, int]:
        """The last interval end committed per device."""
        return dict(self._query("SELECT device, last_interval_end FROM device_cursor"))

    def seal_batch(self, seal: SealFunction, *, max_readings: int) -> StoredBatch | None:
        """Move up to ``max_readings`` pending readings into one new signed batch.

        ``seal(readings, sequence)`` returns the serialized SignedBatch; it runs inside the
        transaction, so a crash leaves the readings pending and the sequence number unused.
        This commit is always fully synced, whatever ``synchronous`` says: once a batch can be
        sent, its sequence number must never be handed out again, even after a power cut.
        """
        if self._synchronous != "FULL":
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            return self._seal(seal, max_readings)
        finally:
            if self._synchronous != "FULL":
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")

    def _seal(self, seal: SealFunction, max_readings: int) -> StoredBatch | None:
        """Oldest meter readings first, then telemetry points, ``max_readings`` in all.

        A sealed batch larger than ``limits.MAX_BATCH_BYTES`` (gRPC's message limit) is sealed
        again with half as many values, until it fits.
        """
        with self._transaction():
            limit = max_readings
            while True:
                rows, points, rotations = self._pending(limit)
                if not rows and not points and not rotations:
                    return None
                sequence = self._db.execute(
                    "SELECT value FROM agent_state WHERE key = 'next_sequence'"
                ).fetchone()[0]
                signed = seal(
                    [PseudonymousReading(*row[1:]) for row in rows],
                    [TelemetryPoint(*point[1:]) for point in points],
                    sequence,
                    [Rotation(*rotation[1:]) for rotation in rotations],
                )
                values = len(rows) + len(points)
                if len(signed) <= limits.MAX_BATCH_BYTES or values <= 1:
                    break
                limit = values // 2
            self._db.execute("DELETE FROM rotations")
            self._db.execute(
                "INSERT INTO batches (sequence, created_ms, readings, signed, state) "
                "VALUES (?, ?, ?, ?, 'pending')",
                (sequence, time.time_ns() // 1_000_000, values, signed),
            )
            self._db.execute(
                "UPDATE agent_state SET value = ? WHERE key = 'next_sequence'", (sequence + 1,)
            )
            if rows:
                self._db.execute("DELETE FROM readings WHERE id <= ?", (rows[-1][0],))
            if points:
                self._db.execute("DELETE FROM telemetry WHERE id <= ?", (points[-1][0],))
        return StoredBatch(sequence=sequence, signed=signed, readings=values)

    def _pending(self, limit: int) -> tuple[list[Any], list[Any], list[Any]]:
        """Up to ``limit`` pending readings, then telemetry points, and the rotations to send."""
        rows = self._db.execute(
            "SELECT id, meter, interval_end, energy_wh, register_wh, quality_flags,"
            " poll_time_ms, device FROM readings ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        points = self._db.execute(
            "SELECT id, transformer, time_ms, metric, value, quality_flags FROM telemetry"
            " ORDER BY id LIMIT ?",
            (limit - len(rows),),
        ).fetchall()
        rotations = self._db.execute(
            "SELECT id, old_key_id, new_key_id, old_meters, new_meters FROM rotations"
        ).fetchall()
        return rows, points, rotations

    def _query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """A read; SQLite failures surface as ``BufferUnavailable``."""
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise BufferUnavailable(f"buffer read failed: {exc}") from exc

    def next_pending(self, *, newest: bool, skip: Collection[int] = ()) -> StoredBatch | None:
        """The oldest (or newest) pending batch whose sequence is not in ``skip``, if any.

        ``skip`` holds what the uplink has in flight, so it is small: only its size plus one
        sequence numbers are read from the index before the chosen batch itself is loaded.
        """
        candidates = self._query(_PENDING_FROM_END[newest], (len(skip) + 1,))
        sequence = next((row[0] for row in candidates if row[0] not in skip), None)
        if sequence is None:
            return None
        ((signed, readings),) = self._query(
            "SELECT signed, readings FROM batches WHERE sequence = ?", (sequence,)
        )
        return StoredBatch(sequence, signed, readings)

    def retained_batches(self, *, from_sequence: int) -> list[StoredBatch]:
        """Every batch still on disk with sequence >= ``from_sequence``, whatever its state."""
        rows = self._query(
            "SELECT sequence, signed, readings FROM batches WHERE sequence >= ? ORDER BY sequence",
            (from_sequence,),
        )
        return [StoredBatch(*row) for row in rows]

    def acknowledge(
        self, sequence: int, *, outcome: str, detail: str, refused: bool, keep: bool = True
    ) -> None:
        """Record the core's answer; a refused batch stays on disk, marked for the operator.

        With ``keep`` False (the buffer is under pressure) a delivered batch is deleted at once
        instead of kept for resend: that frees space and needs none.
        """
        if not keep and not refused:
            with self._transaction():
                self._db.execute("DELETE FROM batches WHERE sequence = ?", (sequence,))
            return
        with self._transaction():
            self._db.execute(
                "UPDATE batches SET state = ?, outcome = ?, detail = ?, acknowledged_ms = ? "
                "WHERE sequence = ?",
                (
                    "rejected" if refused else "acknowledged",
                    outcome,
                    detail,
                    time.time_ns() // 1_000_000,
                    sequence,
                ),
            )

    def pseudonym_key_id(self) -> str | None:
        """The key id the buffer's meters are pseudonymized under (None for a new buffer)."""
        rows = self._query("SELECT value FROM agent_state WHERE key = 'pseudonym_key_id'")
        return str(rows[0][0]) if rows else None

    def adopt_pseudonym_key_id(self, key_id: str) -> None:
        """Record the key id of a new buffer's first pseudonyms."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO agent_state VALUES ('pseudonym_key_id', ?)", (key_id,)
            )

    def rotate_pseudonyms(
        self, mapping: Mapping[bytes, bytes], *, old_key_id: str, new_key_id: str
    ) -> int:
        """Move everything buffered to the new pseudonyms and queue the mapping for the core.

        One transaction: pending readings, validation state and profiles are re-keyed, the
        mapping waits to travel in the next batch, and the buffer's key id changes. Batches
        already sealed keep their old pseudonyms and old key id. Returns the meters mapped.
        """
        pairs = list(mapping.items())
        with self._transaction():
            for device, packed in self._db.execute("SELECT * FROM device_state").fetchall():
                rows = [
                    (mapping.get(row[0], row[0]), *row[1:]) for row in _STATE.iter_unpack(packed)
                ]
                self._db.execute(
                    "UPDATE device_state SET states = ? WHERE device = ?",
                    (b"".join(_STATE.pack(*row) for row in rows), device),
                )
            for table in ("readings", "meter_profile"):
                self._db.executemany(
                    f"UPDATE {table} SET meter = ? WHERE meter = ?",  # noqa: S608 - fixed names
                    [(new, old) for old, new in pairs],
                )
            self._db.execute(
                "INSERT INTO rotations (old_key_id, new_key_id, old_meters, new_meters)"
                " VALUES (?, ?, ?, ?)",
                (
                    old_key_id,
                    new_key_id,
                    b"".join(o for o, _ in pairs),
                    b"".join(n for _, n in pairs),
                ),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO agent_state VALUES ('pseudonym_key_id', ?)", (new_key_id,)
            )
        return len(pairs)

    def set_pressure(self, level: str) -> None:
        """Record the pressure level the agent is at, for ``edge-agent status``."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO agent_state VALUES ('pressure', ?)",
                (PRESSURE_LEVELS.index(level),),
            )

    def fill(self) -> float:
        """How full the buffer is, as a share of its cap (pages in use / the page limit).

        The cap is the one the agent set (``max_bytes``), recorded in the file, so a read-only
        status report sees the same share as the agent.
        """
        ((used, free, limit, recorded),) = self._query(
            "SELECT (SELECT page_count FROM pragma_page_count()),"
            " (SELECT freelist_count FROM pragma_freelist_count()),"
            " (SELECT max_page_count FROM pragma_max_page_count()),"
            " (SELECT value FROM agent_state WHERE key = 'max_pages')"
        )
        return (used - free) / (recorded or limit)

    def shed_telemetry(self, *, keep_every_minutes: int) -> int:
        """Thin out telemetry not yet sealed to one point per metric every N minutes.

        Billing data (meter readings) is never touched. Returns the points deleted.
        """
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM telemetry WHERE (time_ms / 60000) % ? != 0", (keep_every_minutes,)
            )
        return cursor.rowcount

    def prune(self, *, retain_seconds: float, now_ms: int | None = None) -> int:
        """Delete acknowledged batches older than ``retain_seconds``; return how many."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM batches WHERE state = 'acknowledged' AND acknowledged_ms < ?",
                (now_ms - int(retain_seconds * 1000),),
            )
        return cursor.rowcount

    def statistics(self) -> BufferStatistics:
        """Counts of what is waiting, for status output and metrics."""
        ((pending_readings, oldest),) = self._query(
            "SELECT count(*), min(poll_time_ms) FROM readings"
        )
        states = dict(self._query("SELECT state, count(*) FROM batches GROUP BY state"))
        ((next_sequence,),) = self._query(
            "SELECT value FROM agent_state WHERE key = 'next_sequence'"
        )
        return BufferStatistics(
            pending_readings=pending_readings,
            pressure=PRESSURE_LEVELS[
                dict(self._query("SELECT key, value FROM agent_state")).get("pressure", 0)
            ],
            fill=round(self.fill(), 4),
            pending_telemetry=self._query("SELECT count(*) FROM telemetry")[0][0],
            quarantined=self._query("SELECT count(*) FROM quarantine")[0][0],
            pending_batches=states.get("pending", 0),
            rejected_batches=states.get("rejected", 0),
            acknowledged_batches=states.get("acknowledged", 0),
            next_sequence=next_sequence,
            oldest_pending_poll_ms=oldest,
        )

    def restore_rows(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert rows salvaged from a damaged buffer of this layout (``sinks.salvage``)."""
        if table not in TABLES:
            raise ValueError(f"no buffer table {table!r}")
        if not rows:
            return
        marks = ", ".join("?" * len(rows[0]))
        with self._transaction():
            self._db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)  # noqa: S608

    def restore_sequence(self, *, gap: int) -> None:
        """After a salvage: the next sequence above every batch on disk, ``gap`` further.

        ``gap`` is for a lost counter: a sequence must never be handed out twice.
        """
        with self._transaction():
            self._db.execute(
                "UPDATE agent_state SET value = max(value,"
                " coalesce((SELECT max(sequence) FROM batches), 0) + 1) + ?"
                " WHERE key = 'next_sequence'",
                (gap,),
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _owner_only(path: Path) -> None:
    """Create the buffer file readable by its owner only (0600), or make it so.

    It holds pseudonymized meter data and the validation state. SQLite creates the WAL and
    shared-memory files with the main file's mode, so they follow.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    path.chmod(0o600)


def _reading_json(reading: PseudonymousReading) -> bytes:
    """A quarantined reading as JSON (the pseudonym in hex)."""
    fields = reading._asdict()
    fields["meter"] = reading.meter.hex()
    return json.dumps(fields).encode()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including cancellation).

    SQLite failures (a full disk, an I/O error) leave nothing half-written and surface as
    ``BufferUnavailable`` with the SQLite error as ``__cause__``.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BufferUnavailable(f"cannot start a buffer transaction: {exc}") from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, *_: object
    ) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._rollback()
                raise BufferUnavailable(f"cannot commit to the buffer: {error}") from error
            return
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise BufferUnavailable(f"buffer write failed: {exc}") from exc

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may have rolled back by itself (e.g. disk full)
            self._db.execute("ROLLBACK")
