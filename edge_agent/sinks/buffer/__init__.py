"""The durable edge buffer: readings and sealed batches in one SQLite file (at-least-once).

Life of a reading: ``put_readings`` commits it with validation's meter states (one transaction
per poll); ``seal_batch`` moves pending readings into a signed batch in one transaction;
``acknowledge`` marks the batch delivered once the core confirms it. Nothing is deleted before
the core's acknowledgement; acknowledged batches are kept for ``retain_acknowledged_seconds``
so an operator can re-send them, then pruned.

Durability: WAL journal. ``synchronous=full`` (default) makes each commit survive a power cut;
``normal`` survives a crash of the agent but may lose the last commits on power loss (the
concentrator's history still holds them). Calls block: the agent runs them in one worker thread.

Parts: ``file`` opens the file and runs transactions; ``schema`` versions its layout; ``state``
is where the agent stands; ``staging`` what waits to be sealed; ``ledger`` the batches;
``subject`` one data subject's rows, found and erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.sinks.buffer.ledger import BatchLedger, DeliveryRecord, SealFunction, StoredBatch
from edge_agent.sinks.buffer.schema import TABLES
from edge_agent.sinks.buffer.staging import PendingData
from edge_agent.sinks.buffer.state import PRESSURE_LEVELS
from edge_agent.sinks.buffer.subject import SubjectData, SubjectHoldings, SubjectPendingError

__all__ = [
    "PRESSURE_LEVELS",
    "TABLES",
    "Buffer",
    "BufferStatistics",
    "DeliveryRecord",
    "SealFunction",
    "StoredBatch",
    "SubjectHoldings",
    "SubjectPendingError",
]


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


class Buffer(PendingData, BatchLedger, SubjectData):
    """One SQLite file holding what has not been delivered yet."""

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
