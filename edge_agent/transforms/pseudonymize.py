"""Replace meter serials by keyed pseudonyms before anything reaches disk or the network.

A pseudonym is HMAC-SHA-256(key, serial as decimal ASCII): stable for one key, so the core can
follow a meter over time, and not reversible without the key, which never leaves the edge.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import NamedTuple

from edge_agent.sources.register_map import MeterRecord

CACHE_LIMIT = 200_000  # pseudonyms kept in memory: far more meters than one gateway reads


class PseudonymousReading(NamedTuple):
    """A meter reading with the serial replaced by its pseudonym: safe to store and send.

    A named tuple in the buffer's column order: it is the row the buffer inserts.
    """

    meter: bytes  # 32-byte pseudonym
    interval_end: int
    energy_wh: int
    register_wh: int
    quality_flags: int
    poll_time_ms: int
    device: str


class Pseudonymizer:
    """Keyed pseudonyms with the id of the key that made them."""

    def __init__(self, *, key: bytes, key_id: str) -> None:
        """Args: key: the secret HMAC key; key_id: its public name, sent with every batch."""
        if not key_id:
            raise ValueError("key_id must not be empty")
        self.key_id = key_id
        self._key = key
        # A gateway reads the same meters every interval: remember their pseudonyms (memory
        # only, ~100 bytes a meter) instead of recomputing an HMAC per reading.
        self._known: dict[int, bytes] = {}

    def pseudonym(self, serial: int) -> bytes:
        """The 32-byte pseudonym of a meter serial."""
        known = self._known.get(serial)
        if known is None:
            if len(self._known) >= CACHE_LIMIT:
                self._known.clear()
            known = self._known[serial] = hmac.digest(
                self._key, str(serial).encode("ascii"), hashlib.sha256
            )
        return known

    def apply(self, record: MeterRecord, *, poll_time_ms: int, device: str) -> PseudonymousReading:
        """Turn a decoded record into a reading that no longer carries the serial."""
        return PseudonymousReading(  # positional: this runs once per reading
            self.pseudonym(record.serial),
            record.interval_end,
            record.energy_wh,
            record.register_wh,
            record.quality_flags,
            poll_time_ms,
            device,
        )


@dataclass(frozen=True, slots=True)
class Rotation:
    """A key rotation still to be sent: pseudonyms under the old key and the new, in order."""

    old_key_id: str
    new_key_id: str
    old_meters: bytes  # concatenated 32-byte pseudonyms
    new_meters: bytes

    def pairs(self) -> list[tuple[bytes, bytes]]:
        """(old, new) pseudonym pairs."""
        return [
            (self.old_meters[i : i + 32], self.new_meters[i : i + 32])
            for i in range(0, len(self.old_meters), 32)
        ]
