"""Whether the core can serve: the database answers and holds a schema.

Two ways to ask. ``meterpipe.v1.Ingest/Health`` (``receive``) answers agents and operators
with the storage and versions. The standard ``grpc.health.v1.Health`` service
(grpcio-health-checking) answers load balancers, Kubernetes probes and ``grpc_health_probe``:
``ServingStatus`` keeps it up to date from a background check.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import psycopg
from grpc_health.v1 import health, health_pb2

from core_ingest.store.writer import recorded_storage

log = logging.getLogger(__name__)

INGEST_SERVICE = "meterpipe.v1.Ingest"
CHECK_SECONDS = 10.0
UNAVAILABLE = "database unavailable; see the core's log"  # no database words to clients
NO_SCHEMA = "database has no schema yet; run `core-ingest migrate`"


@dataclass(frozen=True, slots=True)
class DatabaseState:
    """The answer of one check: the schema's storage when serving, else why not."""

    serving: bool
    storage: str | None = None
    detail: str = ""


async def check_database(conninfo: str) -> DatabaseState:
    """Whether the database answers with a schema, asked on a connection of its own.

    Its own connection, so the answer is immediate while the pool still waits out its
    reconnection backoff. The database's own words stay in the core's log.
    """
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, connect_timeout=5) as conn:
            storage = await recorded_storage(conn)
    except psycopg.OperationalError as exc:
        log.warning("health check: database unavailable: %s", exc)
        return DatabaseState(serving=False, detail=UNAVAILABLE)
    if storage is None:
        return DatabaseState(serving=False, detail=NO_SCHEMA)
    return DatabaseState(serving=True, storage=storage)


class ServingStatus:
    """The standard health service, SERVING while the database answers with a schema."""

    def __init__(self, conninfo: str) -> None:
        """Start NOT_SERVING until the first check."""
        self.servicer = health.aio.HealthServicer()
        self._conninfo = conninfo

    async def run(self) -> None:
        """Check every ``CHECK_SECONDS`` until cancelled; publish the overall and the service's."""
        while True:
            state = await check_database(self._conninfo)
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if state.serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for service in ("", INGEST_SERVICE):
                await self.servicer.set(service, status)
            await asyncio.sleep(CHECK_SECONDS)

    async def stop(self) -> None:
        """NOT_SERVING for everyone asking from now on: the server is going away."""
        await self.servicer.enter_graceful_shutdown()
