"""Batches the core refused, per agent and reason (``batch_refusals``).

A refused batch has no transaction of its own. The answer path only counts the refusal in
memory (``RefusalCounter.count``: no database, no waiting); the receiving stage writes what
was counted once a second, on one connection, and once more when the core stops. A failed
write is logged and its counts go with the next one. Rows are written for enrolled agents
only: there is no agent to attach anything else to.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass
class PendingRefusals:
    """Refusals of one (agent, reason) not written yet, and the latest of them."""

    refusals: int
    last_sequence: int
    last_detail: str


class RefusalCounter:
    """Refusals counted since the last write, per (agent, reason)."""

    def __init__(self) -> None:
        """Nothing counted yet."""
        self._pending: dict[tuple[str, str], PendingRefusals] = {}

    def count(self, agent_id: str, reason: str, *, sequence: int, detail: str) -> None:
        """One more refusal of ``agent_id`` for ``reason``."""
        pending = self._pending.get((agent_id, reason))
        if pending is None:
            self._pending[agent_id, reason] = PendingRefusals(1, sequence, detail)
        else:
            pending.refusals += 1
            pending.last_sequence, pending.last_detail = sequence, detail

    def take(self) -> dict[tuple[str, str], PendingRefusals]:
        """Everything counted, to write; the counter starts again from nothing."""
        taken, self._pending = self._pending, {}
        return taken

    def put_back(self, taken: dict[tuple[str, str], PendingRefusals]) -> None:
        """A write failed: its refusals go with the next one (the newer details kept)."""
        for (agent_id, reason), older in taken.items():
            newer = self._pending.get((agent_id, reason))
            if newer is None:
                self._pending[agent_id, reason] = older
            else:
                newer.refusals += older.refusals


async def record_refusals(
    conn: psycopg.AsyncConnection, taken: dict[tuple[str, str], PendingRefusals]
) -> None:
    """Add the counted refusals to ``batch_refusals`` (agents not enrolled are skipped)."""
    async with conn.transaction():
        for (agent_id, reason), pending in taken.items():
            await conn.execute(
                "INSERT INTO batch_refusals (agent_id, reason, refusals, first_at, last_at,"
                " last_sequence, last_detail, region)"
                " SELECT agent_id, %s, %s, now(), now(), %s, %s, region FROM agents"
                " WHERE agent_id = %s"
                " ON CONFLICT (agent_id, reason) DO UPDATE SET"
                " refusals = batch_refusals.refusals + EXCLUDED.refusals,"
                " last_at = EXCLUDED.last_at, last_sequence = EXCLUDED.last_sequence,"
                " last_detail = EXCLUDED.last_detail, region = EXCLUDED.region",
                (reason, pending.refusals, pending.last_sequence, pending.last_detail, agent_id),
            )
