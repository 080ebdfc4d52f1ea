"""Batches the core refused, per enrolled agent and reason (``batch_refusals``).

A refused batch has no transaction of its own: the refusal is written on a connection of its
own, after the answer is decided, and a failure to write it is only logged (the agent keeps the
batch either way). At most one write per (agent, reason) a second: an agent resending one bad
batch in a loop costs one small upsert a second, the refusals in between counted together.
Refusals naming no enrolled agent are not recorded (there is no agent to attach them to, and
a stream of made-up ids must not turn into writes).
"""

from __future__ import annotations

import collections
import time

import psycopg

MIN_SECONDS_BETWEEN_WRITES = 1.0


class RefusalCounter:
    """Refusals not written yet, per (agent, reason), and when each was last written."""

    def __init__(self) -> None:
        """Nothing counted yet."""
        self._pending: collections.Counter[tuple[str, str]] = collections.Counter()
        self._written: dict[tuple[str, str], float] = {}

    def count(self, agent_id: str, reason: str) -> int:
        """Count one refusal; return how many to write now (0: wait for the next)."""
        key = (agent_id, reason)
        self._pending[key] += 1
        if time.monotonic() - self._written.get(key, -MIN_SECONDS_BETWEEN_WRITES) < (
            MIN_SECONDS_BETWEEN_WRITES
        ):
            return 0
        self._written[key] = time.monotonic()
        return self._pending.pop(key)

    def put_back(self, agent_id: str, reason: str, refusals: int) -> None:
        """A write failed: its refusals go with the next one."""
        self._pending[agent_id, reason] += refusals


async def record_refusals(  # noqa: PLR0913 - keyword-only: the row's columns
    conn: psycopg.AsyncConnection,
    *,
    agent_id: str,
    reason: str,
    refusals: int,
    sequence: int,
    detail: str,
) -> None:
    """Add ``refusals`` to the agent's row for ``reason`` (nothing if it is not enrolled)."""
    await conn.execute(
        "INSERT INTO batch_refusals (agent_id, reason, refusals, first_at, last_at,"
        " last_sequence, last_detail, region)"
        " SELECT agent_id, %s, %s, now(), now(), %s, %s, region FROM agents WHERE agent_id = %s"
        " ON CONFLICT (agent_id, reason) DO UPDATE SET"
        " refusals = batch_refusals.refusals + EXCLUDED.refusals, last_at = EXCLUDED.last_at,"
        " last_sequence = EXCLUDED.last_sequence, last_detail = EXCLUDED.last_detail,"
        " region = EXCLUDED.region",
        (reason, refusals, sequence, detail, agent_id),
    )
