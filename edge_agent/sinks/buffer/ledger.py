"""The batch ledger: pending readings sealed into signed batches, then acknowledged or refused."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from edge_agent.sinks.buffer.file import BufferFile
from edge_agent.transforms.pseudonymize import PseudonymousReading, Rotation
from edge_agent.transforms.telemetry import TelemetryPoint
from proto import limits

# Pending sequence numbers from the oldest end (False) or the newest (True), off the index.
_PENDING_FROM_END = {
    False: "SELECT sequence FROM batches WHERE state = 'pending' ORDER BY sequence LIMIT ?",
    True: "SELECT sequence FROM batches WHERE state = 'pending' ORDER BY sequence DESC LIMIT ?",
}


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A sealed batch as kept in the buffer."""

    sequence: int
    signed: bytes
    readings: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What the ledger says about delivery: the last answer, refusals, the oldest unsent."""

    last_answer_ms: int | None  # when the core's last answer was recorded
    last_answer_sequence: int | None  # the batch it answered
    refused: dict[str, int]  # outcome label (e.g. rejected:BAD_SIGNATURE) -> batches kept
    oldest_pending_batch_ms: int | None  # when the oldest batch not delivered was sealed


# (meter readings, telemetry points, sequence, key rotations) -> the serialized SignedBatch
SealFunction = Callable[
    [list[PseudonymousReading], list[TelemetryPoint], int, list[Rotation]], bytes
]


class BatchLedger(BufferFile):
    """Seals, hands out and records the answers for batches."""

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

    def delivery(self) -> DeliveryRecord:
        """The last answer recorded, the refusals kept by reason, the oldest batch unsent."""
        state = dict(self._query("SELECT key, value FROM agent_state"))
        refused = self._query(
            "SELECT outcome, count(*) FROM batches WHERE state = 'rejected' GROUP BY outcome"
        )
        ((oldest,),) = self._query("SELECT min(created_ms) FROM batches WHERE state = 'pending'")
        return DeliveryRecord(
            state.get("last_answer_ms"), state.get("last_answer_sequence"), dict(refused), oldest
        )

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
        now_ms = time.time_ns() // 1_000_000
        with self._transaction():
            if not keep and not refused:
                self._db.execute("DELETE FROM batches WHERE sequence = ?", (sequence,))
            else:
                self._db.execute(
                    "UPDATE batches SET state = ?, outcome = ?, detail = ?, acknowledged_ms = ?"
                    " WHERE sequence = ?",
                    ("rejected" if refused else "acknowledged", outcome, detail, now_ms, sequence),
                )
            # Kept apart from the batch, which retention and pressure delete: for diagnostics.
            self._db.executemany(
                "INSERT OR REPLACE INTO agent_state VALUES (?, ?)",
                (("last_answer_ms", now_ms), ("last_answer_sequence", sequence)),
            )

    def prune(self, *, retain_seconds: float, now_ms: int | None = None) -> int:
        """Delete acknowledged batches older than ``retain_seconds``; return how many."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM batches WHERE state = 'acknowledged' AND acknowledged_ms < ?",
                (now_ms - int(retain_seconds * 1000),),
            )
        return cursor.rowcount

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
