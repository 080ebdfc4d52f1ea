"""What the store accepts: a verified batch, its sender, and the values set apart before it.

``core_ingest.verify`` is the only producer of a ``VerifiedBatch``: the store trusts what it is
given and never refuses on the wire protocol's terms.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from core_ingest.store.reading_rows import ReadingColumns
from proto import OpenedBatch


@dataclass(frozen=True, slots=True)
class AgentKey:
    """An enrolled agent: its raw public key, whether it is revoked, and where it stands."""

    public_key: bytes
    revoked: bool
    substation: str
    region: str
    region_id: int  # the region's row in ``regions``: what the batch's rows belong to


@dataclass(frozen=True, slots=True)
class RefusedValue:
    """One reading or telemetry point the core did not store, with why and its raw values."""

    kind: str  # "meter_reading" or "telemetry"
    position: int  # its index in the batch's columns
    reason: str
    raw: dict[str, Any]  # JSON-safe: numbers that may not fit a column are strings


@dataclass(frozen=True, slots=True)
class VerifiedBatch:
    """A batch whose signature, sender and values were checked, ready for one transaction.

    ``columns`` and ``points`` are what passed the bounds; ``refused`` the values set apart,
    kept raw in ``refused_values`` in the same transaction.
    """

    opened: OpenedBatch
    agent: AgentKey  # the sender, with the key the signature was verified with
    columns: ReadingColumns  # the readings within bounds
    points: list[int]  # positions of the telemetry points within bounds
    refused: list[RefusedValue]
    received_at: dt.datetime
