"""Enrolled agents' keys and places, as verification looks them up for every batch."""

from __future__ import annotations

import time

import psycopg

from core_ingest.store.batch import AgentKey


class AgentDirectory:
    """Enrolled agents' keys and places, remembered for ``ttl`` seconds by this core process.

    Saves a query per batch. Safe because the ledger row is only inserted while the agent
    still holds the key and is unrevoked (``core_ingest.store.ledger``): a revocation or new
    key is not delayed by the cache, which only decides how a refusal is worded.
    """

    def __init__(self, ttl: float = 30.0) -> None:
        """Start empty."""
        self._ttl = ttl
        self._known: dict[str, tuple[float, AgentKey]] = {}

    async def get(
        self, conn: psycopg.AsyncConnection, agent_id: str, *, fresh: bool = False
    ) -> AgentKey | None:
        """The enrolled agent, from memory unless ``fresh`` or older than the ttl."""
        now = time.monotonic()
        remembered = self._known.get(agent_id)
        if remembered and not fresh and now - remembered[0] < self._ttl:
            return remembered[1]
        cur = await conn.execute(
            "SELECT a.public_key, a.revoked_at IS NOT NULL, a.substation, a.region, r.region_id"
            " FROM agents a JOIN regions r ON r.name = a.region WHERE a.agent_id = %s",
            (agent_id,),
        )
        row = await cur.fetchone()
        if row is None:
            self._known.pop(agent_id, None)
            return None
        agent = AgentKey(bytes(row[0]), *row[1:])
        self._known[agent_id] = (now, agent)
        return agent
