"""Agent enrollment: which agent ids may send batches, and the Ed25519 key each signs with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core_ingest.errors import EnrollmentError
from proto import public_key_bytes


@dataclass(frozen=True, slots=True)
class EnrolledAgent:
    """One row of the agents table."""

    agent_id: str
    public_key: bytes
    enrolled_at: datetime
    revoked_at: datetime | None
    substation: str
    region: str

    @property
    def public_key_hex(self) -> str:
        """The whole raw public key in hex, as listings print it."""
        return self.public_key.hex()


def public_key_from_pem(pem: bytes) -> bytes:
    """The raw 32-byte Ed25519 key of a PEM public key written by ``edge-agent keygen``."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise EnrollmentError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EnrollmentError("the public key is not an Ed25519 key")
    return public_key_bytes(key)


UNASSIGNED_REGION = "unassigned"


def enroll(
    conn: psycopg.Connection,
    agent_id: str,
    public_key: bytes,
    *,
    substation: str | None = None,
    region: str = UNASSIGNED_REGION,
) -> None:
    """Enroll an agent, or give a known agent a new key (which also lifts a revocation).

    ``substation`` (default: the agent id, one agent per substation) and ``region`` place the
    agent's meters in the rollups and in per-region access; everything the core stores from
    the agent's batches belongs to that region. A region not known yet is added to ``regions``.
    """
    if not 1 <= len(agent_id) <= 64:  # noqa: PLR2004 - the agents.agent_id CHECK
        raise EnrollmentError(f"agent id must be 1..64 characters, got {agent_id!r}")
    for name, value in (("substation", substation), ("region", region)):
        if value is not None and not value.strip():
            raise EnrollmentError(f"{name} must not be empty")
    if len(region) > 64:  # noqa: PLR2004 - the regions.name CHECK
        raise EnrollmentError(f"region must be 1..64 characters, got {len(region)}")
    conn.execute("INSERT INTO regions (name) VALUES (%s) ON CONFLICT DO NOTHING", (region,))
    conn.execute(
        "INSERT INTO agents (agent_id, public_key, substation, region) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (agent_id) DO UPDATE SET public_key = excluded.public_key,"
        " substation = excluded.substation, region = excluded.region,"
        " enrolled_at = now(), revoked_at = NULL",
        (agent_id, public_key, substation or agent_id, region),
    )


def revoke(conn: psycopg.Connection, agent_id: str) -> None:
    """Refuse every later batch of this agent until it is enrolled again."""
    cur = conn.execute(
        "UPDATE agents SET revoked_at = now() WHERE agent_id = %s AND revoked_at IS NULL",
        (agent_id,),
    )
    if cur.rowcount == 0:
        raise EnrollmentError(f"no enrolled, unrevoked agent {agent_id!r}")


def list_agents(conn: psycopg.Connection) -> list[EnrolledAgent]:
    """Every enrolled agent, revoked ones included."""
    rows = conn.execute(
        "SELECT agent_id, public_key, enrolled_at, revoked_at, substation, region FROM agents"
        " ORDER BY agent_id"
    ).fetchall()
    return [EnrolledAgent(*row) for row in rows]
