"""One data subject's rows in the buffer: found, and erased with evidence.

A meter is in the buffer under its pseudonym: readings not yet sealed, validation's state and
time-of-day profile, a rotation waiting to travel, quarantined readings (JSON with the
pseudonym in hex), and sealed batches (pending, or acknowledged and kept for re-sending).
Erasure takes every one of them out in one transaction, except that a pending batch is never
touched: it is signed and owed to the core, so erasure waits until the agent has delivered it
(then the central erasure removes what it stored).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from edge_agent.errors import EdgeError
from edge_agent.sinks.buffer.file import BufferFile
from edge_agent.sinks.buffer.state import _STATE
from proto import pb

PSEUDONYM_BYTES = 32


class SubjectPendingError(EdgeError):
    """Pending batches carry the meter: it cannot be erased here until they are delivered."""


@dataclass(frozen=True, slots=True)
class SubjectHoldings:
    """How many of each kind of row the buffer holds about one meter."""

    readings: int = 0
    profile: int = 0
    validation_state: int = 0
    rotations: int = 0
    quarantined: int = 0
    pending_batches: list[int] = field(default_factory=list)  # sequences
    acknowledged_batches: list[int] = field(default_factory=list)


class SubjectData(BufferFile):
    """Finding and erasing one meter's rows."""

    def subject_holdings(self, meter: bytes) -> SubjectHoldings:
        """What the buffer holds about ``meter`` (a pseudonym)."""
        pending, acknowledged = self._batches_carrying(meter)
        return SubjectHoldings(
            readings=self._count("SELECT count(*) FROM readings WHERE meter = ?", meter),
            profile=self._count("SELECT count(*) FROM meter_profile WHERE meter = ?", meter),
            validation_state=sum(1 for _device, rows in self._states() if meter in rows),
            rotations=sum(1 for row in self._rotation_rows() if _involves(_pairs_of(row), meter)),
            quarantined=self._count(
                "SELECT count(*) FROM quarantine WHERE instr(payload, ?) > 0", meter.hex()
            ),
            pending_batches=pending,
            acknowledged_batches=acknowledged,
        )

    def erase_subject(self, meter: bytes) -> tuple[SubjectHoldings, SubjectHoldings, str]:
        """Delete every row about ``meter``; (held before, held after, SHA-256 of what went).

        Raises:
            SubjectPendingError: pending batches carry it; nothing was erased.

        """
        before = self.subject_holdings(meter)
        if before.pending_batches:
            raise SubjectPendingError(
                f"pending batches {before.pending_batches} carry this meter: let the agent"
                " deliver them (edge-agent status), then erase here and centrally"
            )
        digest = hashlib.sha256()
        with self._transaction():
            for table, where in (
                ("readings", "meter = ?"),
                ("meter_profile", "meter = ?"),
                ("quarantine", "instr(payload, ?) > 0"),
            ):
                value: object = meter.hex() if table == "quarantine" else meter
                for row in self._db.execute(
                    f"DELETE FROM {table} WHERE {where} RETURNING *",  # noqa: S608 - constants
                    (value,),
                ).fetchall():
                    digest.update(repr(row).encode())
            self._erase_state(meter, digest)
            self._erase_rotations(meter, digest)
            for sequence in before.acknowledged_batches:
                for row in self._db.execute(
                    "DELETE FROM batches WHERE sequence = ? RETURNING signed", (sequence,)
                ).fetchall():
                    digest.update(bytes(row[0]))
        return before, self.subject_holdings(meter), digest.hexdigest()

    def _count(self, sql: str, value: object) -> int:
        return int(self._query(sql, (value,))[0][0])

    def _states(self) -> list[tuple[str, dict[bytes, tuple[int, ...]]]]:
        """Each device's saved validation state, by meter."""
        return [
            (device, {row[0]: row for row in _STATE.iter_unpack(packed)})
            for device, packed in self._query("SELECT device, states FROM device_state")
        ]

    def _erase_state(self, meter: bytes, digest: hashlib._Hash) -> None:
        for device, rows in self._states():
            if meter in rows:
                digest.update(_STATE.pack(*rows.pop(meter)))
                self._db.execute(
                    "UPDATE device_state SET states = ? WHERE device = ?",
                    (b"".join(_STATE.pack(*row) for row in rows.values()), device),
                )

    def _rotation_rows(self) -> list[tuple[int, bytes, bytes]]:
        return self._query("SELECT id, old_meters, new_meters FROM rotations")

    def _erase_rotations(self, meter: bytes, digest: hashlib._Hash) -> None:
        for row in self._rotation_rows():
            pairs = _pairs_of(row)
            if not _involves(pairs, meter):
                continue
            kept = [pair for pair in pairs if meter not in pair]
            digest.update(repr((row[0], meter)).encode())
            if kept:
                self._db.execute(
                    "UPDATE rotations SET old_meters = ?, new_meters = ? WHERE id = ?",
                    (b"".join(o for o, _ in kept), b"".join(n for _, n in kept), row[0]),
                )
            else:
                self._db.execute("DELETE FROM rotations WHERE id = ?", (row[0],))

    def _batches_carrying(self, meter: bytes) -> tuple[list[int], list[int]]:
        """Sequences of the pending and of the acknowledged batches whose payload holds it."""
        pending: list[int] = []
        acknowledged: list[int] = []
        for sequence, state, signed in self._query(
            "SELECT sequence, state, signed FROM batches WHERE state <> 'rejected'"
        ):
            payload = pb.BatchPayload.FromString(pb.SignedBatch.FromString(signed).payload)
            rotated = {m for r in payload.rotations for m in (*r.old_meters, *r.new_meters)}
            if meter in payload.meter_readings.meters or meter in rotated:
                (pending if state == "pending" else acknowledged).append(sequence)
        return pending, acknowledged


def _pairs_of(row: tuple[int, bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """A rotation row's (old, new) pseudonym pairs."""
    _id, old, new = row
    size = PSEUDONYM_BYTES
    return [(old[i : i + size], new[i : i + size]) for i in range(0, len(old), size)]


def _involves(pairs: list[tuple[bytes, bytes]], meter: bytes) -> bool:
    return any(meter in pair for pair in pairs)
