"""Where the agent stands: validation's memory, device cursors, key id, pressure level."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from edge_agent.sinks.buffer.file import BufferFile
from edge_agent.transforms.validate import MeterMemory, MeterState

PRESSURE_LEVELS = ("normal", "shedding", "paused")
# One meter's validation state, packed: pseudonym, interval end, register, last energy, last
# valid energy (NO_VALUE when none), repeats, zeros.
_STATE = struct.Struct("<32sqqqqii")
NO_VALUE = -(2**63)


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


class AgentState(BufferFile):
    """The agent's own state, committed with what it describes."""

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

    def _move_device_cursor(self, device: str, interval_end: int) -> None:
        self._db.execute(
            "INSERT INTO device_cursor VALUES (?, ?) ON CONFLICT (device) DO UPDATE SET "
            "last_interval_end = max(last_interval_end, excluded.last_interval_end)",
            (device, interval_end),
        )

    def device_cursors(self) -> dict[str, int]:
        """The last interval end committed per device."""
        return dict(self._query("SELECT device, last_interval_end FROM device_cursor"))

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
