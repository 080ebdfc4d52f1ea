"""The gRPC ingest service: receive → verify → store → acknowledge, one Ack per batch.

Each stream (one per connected agent) gets its own database connection and handles its batches
in order. The core is stateless: exactly-once lives in the database transaction, so any number
of core processes can serve the same database. While the database is down every batch is
answered REJECTED / STORAGE_UNAVAILABLE and the agent keeps it and retries later.

With ``[server.tls]`` the server speaks mutual TLS only: every client presents a certificate
from the configured authority, and a batch whose header names another agent than the
certificate's common name is refused (CERTIFICATE_MISMATCH) before its agent is even looked up.
Without it the server is plaintext, meant for loopback or a VPN.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from collections.abc import AsyncIterator

import grpc
import psycopg

from core_ingest import __version__
from core_ingest.certificates import ServerTls
from core_ingest.errors import StorageUnavailable
from core_ingest.store import BatchStore, Partitions
from proto import (
    PAYLOAD_SCHEMA_VERSION,
    EnvelopeError,
    OpenedBatch,
    load_public_key,
    open_batch,
    pb,
    pb_grpc,
    read_header,
)
from proto.tls import is_loopback

log = logging.getLogger(__name__)

# Agents ping every 30 s (edge_agent.sinks.uplink.CHANNEL_OPTIONS); the server's default would
# answer pings that frequent with GOAWAY "too_many_pings".
SERVER_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
    ("grpc.http2.max_ping_strikes", 0),
)


def _rejection(header: pb.BatchHeader | None, error: EnvelopeError) -> pb.Ack:
    return pb.Ack(
        agent_id=header.agent_id if header else "",
        sequence=header.sequence if header else 0,
        status=pb.ACK_STATUS_REJECTED,
        reason=error.reason,
        detail=error.detail,
    )


def _certified_agent(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the stream's client certificate (the agent id), if it has one."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None


class IngestService(pb_grpc.IngestServicer):
    """Implements ``meterpipe.v1.Ingest``."""

    def __init__(self, *, dsn: str, require_certificate: bool = False) -> None:
        """Prepare the service; each stream opens its own database connection.

        Args:
            dsn: the PostgreSQL connection string (schema already migrated).
            require_certificate: mutual TLS is on: a batch must come from the agent its
                client certificate names.

        """
        self.dsn = dsn
        self.require_certificate = require_certificate
        self._partitions = Partitions()
        self.outcomes: collections.Counter[str] = collections.Counter()

    async def StreamBatches(  # noqa: N802 - name fixed by the generated servicer
        self, request_iterator: AsyncIterator[pb.SignedBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Ack]:
        """Answer every batch of the stream with one Ack, in arrival order."""
        store: BatchStore | None = None
        peer = context.peer()
        certified_as = _certified_agent(context)
        try:
            async for batch in request_iterator:
                if store is None or store.broken:
                    store = await self._reconnect(store)
                ack = await self.handle(batch, store, certified_as=certified_as)
                self.outcomes[pb.AckStatus.Name(ack.status)] += 1
                yield ack
        finally:
            if store is not None:
                await store.close()
            log.debug("stream from %s ended", peer)

    async def _reconnect(self, old: BatchStore | None) -> BatchStore | None:
        if old is not None:
            await old.close()
        try:
            return await BatchStore.connect(self.dsn, partitions=self._partitions)
        except StorageUnavailable as exc:
            log.warning("storage unavailable: %s", exc)
            return None

    async def handle(
        self, batch: pb.SignedBatch, store: BatchStore | None, *, certified_as: str | None = None
    ) -> pb.Ack:
        """Verify and store one batch; every outcome, refusals included, becomes an Ack.

        ``certified_as`` is the common name of the client certificate, under mutual TLS.
        """
        received_at = dt.datetime.now(dt.UTC)
        header = None
        try:
            header = read_header(batch)
            self._check_certificate(header, certified_as)
            opened = await self._verify(batch, header, store)
            status = await store.write(opened, received_at=received_at)
        except EnvelopeError as exc:
            log.warning("refused batch: %s", exc.detail)
            return _rejection(header, exc)
        except (StorageUnavailable, psycopg.OperationalError) as exc:
            log.warning("storage unavailable while storing a batch: %s", exc)
            return _rejection(header, EnvelopeError(pb.REJECT_REASON_STORAGE_UNAVAILABLE, str(exc)))
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            log.warning("database refused a batch: %s", exc)
            return _rejection(header, EnvelopeError(pb.REJECT_REASON_MALFORMED, str(exc)))
        except Exception as exc:
            # A bug of ours must not end the stream and block every batch behind this one.
            log.exception("failed on a batch")
            detail = f"core failed on this batch: {type(exc).__name__}"
            return _rejection(header, EnvelopeError(pb.REJECT_REASON_INTERNAL, detail))
        return pb.Ack(
            agent_id=header.agent_id,
            sequence=header.sequence,
            status=status,
            meter_readings=len(opened.payload.meter_readings.interval_end),
        )

    def _check_certificate(self, header: pb.BatchHeader, certified_as: str | None) -> None:
        """Under mutual TLS, a batch must name the agent its client certificate was issued to."""
        if self.require_certificate and certified_as != header.agent_id:
            raise EnvelopeError(
                pb.REJECT_REASON_CERTIFICATE_MISMATCH,
                f"the client certificate is issued to {certified_as!r}, "
                f"the batch is from agent {header.agent_id!r}",
            )

    @staticmethod
    async def _verify(
        batch: pb.SignedBatch, header: pb.BatchHeader, store: BatchStore | None
    ) -> OpenedBatch:
        """Check the sender is enrolled and unrevoked, then the envelope against its key."""
        if store is None:
            raise StorageUnavailable("database unreachable")
        key = await store.agent_key(header.agent_id)
        if key is None:
            raise EnvelopeError(
                pb.REJECT_REASON_UNKNOWN_AGENT, f"agent {header.agent_id!r} is not enrolled"
            )
        if key.revoked:
            raise EnvelopeError(
                pb.REJECT_REASON_REVOKED_AGENT, f"agent {header.agent_id!r} is revoked"
            )
        return open_batch(batch, load_public_key(key.public_key))

    async def Health(  # noqa: N802 - name fixed by the generated servicer
        self,
        request: pb.HealthRequest,  # noqa: ARG002 - empty message
        context: grpc.aio.ServicerContext,  # noqa: ARG002
    ) -> pb.HealthReply:
        """Whether the database answers, and which storage and schema version the core speaks."""
        try:
            store = await BatchStore.connect(self.dsn, partitions=self._partitions)
        except StorageUnavailable as exc:
            return pb.HealthReply(serving=False, version=__version__, detail=str(exc))
        await store.close()
        return pb.HealthReply(
            serving=True,
            version=__version__,
            schema_version=PAYLOAD_SCHEMA_VERSION,
            storage=store.storage,
        )


async def serve(*, dsn: str, listen: str, tls: ServerTls | None = None) -> None:
    """Serve until cancelled on ``listen`` (``host:port``), with mutual TLS when ``tls``."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    service = IngestService(dsn=dsn, require_certificate=tls is not None)
    pb_grpc.add_IngestServicer_to_server(service, server)
    if _bind(server, listen, tls) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    log.info(
        "core ingest %s listening on %s (%s)",
        __version__,
        listen,
        "mutual TLS" if tls else "plaintext",
    )
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(grace=5)


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
