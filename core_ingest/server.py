"""The core's composition root: the pool, the gRPC server, metrics, lineage and quality watch.

``serve`` wires the stages together (receive → verify → store, with the lineage emitter and
the quality watch beside them) and runs them until cancelled. Nothing else in the core builds
these objects, so every process setting lives here and in ``config``.

With ``[server.tls]`` the server speaks mutual TLS only: every client presents a certificate
from the configured authority, and a batch whose header names another agent than the
certificate's common name is refused (CERTIFICATE_MISMATCH) before its agent is even looked up.
Without it the server is plaintext, meant for loopback or a VPN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
import psycopg
import psycopg_pool
from grpc_health.v1 import health_pb2_grpc

from core_ingest.certificates import ServerTls
from core_ingest.config import CoreConfig
from core_ingest.health import ServingStatus
from core_ingest.lineage.emitter import LineageEmitter
from core_ingest.metrics import CoreMetrics, Stages
from core_ingest.quality_watch import QualityWatch
from core_ingest.receive import IngestService, add_ingest_service
from proto import limits
from proto.observability import serve_metrics
from proto.service_manager import feed_watchdog, notify
from proto.tls import is_loopback
from proto.version import __version__

APPLICATION = "core-ingest"  # its application_name in PostgreSQL, named by the audit trail

log = logging.getLogger(__name__)

# Agents ping every 30 s (edge_agent.sinks.uplink.CHANNEL_OPTIONS); the server's default would
# answer pings that frequent with GOAWAY "too_many_pings".
# A batch is at most limits.MAX_BATCH_BYTES; the server takes messages four times that, so a
# larger batch is answered with a refusal rather than the stream dying with RESOURCE_EXHAUSTED
# (and the answers of every other batch in flight with it).
SERVER_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 4 * limits.MAX_BATCH_BYTES),
)


async def _durable(conn: psycopg.AsyncConnection) -> None:
    """ACCEPTED means on disk: commits wait for the WAL flush whatever the server's default.

    Set once per connection, when the pool opens it: no round trip per batch.
    """
    await conn.execute("SET synchronous_commit = on")


def connection_pool(dsn: str, size: int) -> psycopg_pool.AsyncConnectionPool:
    """An unopened pool of durable autocommit connections (open it inside the event loop)."""
    return psycopg_pool.AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=size,
        open=False,
        kwargs={
            "autocommit": True,
            "connect_timeout": 5,
            "fallback_application_name": APPLICATION,  # the audit trail's "application"
        },
        configure=_durable,
    )


async def serve(config: CoreConfig, *, tls: ServerTls | None = None) -> None:
    """Serve ``config`` until cancelled, with mutual TLS when ``tls`` (loaded [server.tls]).

    With ``[openlineage]``, an OpenLineage event per committed batch; queued events are
    flushed (for up to 5 s) when the server stops. The quality alert rule (``[quality]``) is
    checked in the background, and so is the database for the standard health service.
    """
    listen = config.server.listen
    emitter = LineageEmitter(config.openlineage) if config.openlineage else None
    metrics = CoreMetrics()
    async with (
        connection_pool(config.database.dsn, config.database.pool_size) as pool,
        _running(emitter),
        asyncio.TaskGroup() as background,
    ):
        watch = QualityWatch(pool, config.quality.rule)
        health = ServingStatus(config.database.dsn)
        checks = [background.create_task(watch.run()), background.create_task(health.run())]
        server = grpc.aio.server(options=SERVER_OPTIONS)
        service = IngestService(
            pool,
            batches_per_stream=config.server.batches_per_stream,
            require_certificate=tls is not None,
            lineage=emitter,
            observe_latency=lambda outcome, seconds: metrics.commit_seconds.labels(outcome).observe(
                seconds
            ),
            observe_readings=metrics.reading_latency.observe,
        )
        add_ingest_service(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
        if _bind(server, listen, tls) == 0:
            raise OSError(f"cannot listen on {listen}")
        metrics.publish(
            Stages(
                service=service.statistics,
                watch=watch.statistics,
                pool=pool.get_stats,
                lineage=emitter.statistics if emitter else None,
            )
        )
        listen_metrics = config.metrics.listen
        stop_metrics = serve_metrics(metrics.registry, listen_metrics) if listen_metrics else None
        await server.start()
        log.info(
            "core ingest %s listening on %s (%s)",
            __version__,
            listen,
            "mutual TLS" if tls else "plaintext",
        )
        checks.append(background.create_task(feed_watchdog()))
        checks.append(background.create_task(service.record_refusals()))
        notify("READY=1", f"STATUS=listening on {listen}")
        try:
            await server.wait_for_termination()
        finally:
            notify("STOPPING=1")
            await health.stop()
            await server.stop(grace=5)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await service.drain()
                    await service.flush_refusals()
            for check in checks:
                check.cancel()
            if stop_metrics:
                stop_metrics()


@contextlib.asynccontextmanager
async def _running(emitter: LineageEmitter | None) -> AsyncIterator[None]:
    """Start the lineage emitter's thread; flush and stop it at the end."""
    if emitter is None:
        yield
        return
    emitter.start()
    try:
        yield
    finally:
        await asyncio.to_thread(emitter.close)


def _bind(server: grpc.aio.Server, listen: str, tls: ServerTls | None) -> int:
    """Add the listening port, secure when ``tls``; return it (0 when binding failed)."""
    if tls is None:
        if not is_loopback(listen):
            log.warning(
                "serving without TLS on %s: meant for loopback or inside a VPN; "
                "set [server.tls] for mutual TLS",
                listen,
            )
        return server.add_insecure_port(listen)
    credentials = grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate)],
        root_certificates=tls.client_authority,
        require_client_auth=True,
    )
    return server.add_secure_port(listen, credentials)
