"""Receiving: the gRPC servicer, one Ack per batch, as each is verified and stored.

Batches of all streams share one pool of database connections, so a country's thousands of
agents need tens of connections, not thousands. Each stream has up to
``batches_per_stream`` of its batches verified and written at once (the agent keeps several in
flight); acks go back as each batch commits, so they may overtake each other: the agent
matches them by sequence number. The core is stateless: exactly-once lives in the database
transaction, so any number of core processes can serve the same database. While the database
is down every batch is answered REJECTED / STORAGE_UNAVAILABLE and the agent keeps it and
retries later.

This stage speaks the wire protocol: ``core_ingest.verify`` refuses in its terms, and the
store's answer (``Stored``) and failures become Acks here. Under mutual TLS the stream's
client certificate names the agent every batch must come from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import psycopg
import psycopg_pool
from google.protobuf.message import DecodeError

from core_ingest.errors import StorageUnavailable
from core_ingest.health import DatabaseState, check_database
from core_ingest.lineage.emitter import LineageEmitter
from core_ingest.store.meters import MeterDirectory
from core_ingest.store.partitions import Partitions
from core_ingest.store.reading_rows import ReadingColumns
from core_ingest.store.refusals import RefusalCounter, record_refusals
from core_ingest.store.writer import BatchStore, Stored, WriteOutcome, recorded_storage
from core_ingest.verify import NOT_A_BATCH, Verifier
from proto import PAYLOAD_SCHEMA_VERSION, EnvelopeError, pb, pb_grpc
from proto.version import __version__

log = logging.getLogger(__name__)

LOGGED_REFUSALS_CAP = 10_000  # (peer, reason) pairs remembered for logging once
REFUSAL_WRITE_SECONDS = 1.0  # how often the refusals counted are written to batch_refusals
REFUSAL_WAIT_SECONDS = 5.0  # for a connection to write them; then they wait for the next time
HEALTH_CACHE_SECONDS = 5.0  # Health answers from one database check for this long
# Not recorded in batch_refusals: no enrolled agent to attach it to, or not the batch's fault.
UNRECORDED_REFUSALS = frozenset(
    {pb.REJECT_REASON_UNKNOWN_AGENT, pb.REJECT_REASON_STORAGE_UNAVAILABLE}
)


@dataclass(frozen=True, slots=True)
class IngestStatistics:
    """What the receiving stage answered since the core started."""

    outcomes: dict[tuple[str, str], int]  # (status, reason) -> batches, e.g. ("rejected", "...")
    readings_stored: int


def _parse_batch(data: bytes) -> pb.SignedBatch:
    """The stream's deserializer: gRPC's own logs a traceback per bad message and ends the call."""
    try:
        return pb.SignedBatch.FromString(data)
    except DecodeError:
        return NOT_A_BATCH


def add_ingest_service(service: IngestService, server: grpc.aio.Server) -> None:
    """Register ``service`` as the generated code does, with the lenient batch deserializer."""
    handlers = {
        "StreamBatches": grpc.stream_stream_rpc_method_handler(
            service.StreamBatches,
            request_deserializer=_parse_batch,
            response_serializer=pb.Ack.SerializeToString,
        ),
        "Health": grpc.unary_unary_rpc_method_handler(
            service.Health,
            request_deserializer=pb.HealthRequest.FromString,
            response_serializer=pb.HealthReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("meterpipe.v1.Ingest", handlers),)
    )


# How long a batch waits for a database connection before it is answered STORAGE_UNAVAILABLE.
CONNECTION_WAIT_SECONDS = 5.0


_STORAGE_UNAVAILABLE = EnvelopeError(
    pb.REJECT_REASON_STORAGE_UNAVAILABLE, "database unavailable; see the core's log"
)  # no database words to clients


def _rejection(header: pb.BatchHeader | None, error: EnvelopeError) -> pb.Ack:
    return pb.Ack(
        agent_id=header.agent_id if header else "",
        sequence=header.sequence if header else 0,
        status=pb.ACK_STATUS_REJECTED,
        reason=error.reason,
        detail=error.detail,
    )


def _outcome(ack: pb.Ack) -> tuple[str, str]:
    """(status, reason) of an ack as metric labels, e.g. ("rejected", "BAD_SIGNATURE")."""
    status = pb.AckStatus.Name(ack.status).removeprefix("ACK_STATUS_").lower()
    if ack.status != pb.ACK_STATUS_REJECTED:
        return status, ""
    return status, pb.RejectReason.Name(ack.reason).removeprefix("REJECT_REASON_")


_ACK_STATUS = {Stored.ACCEPTED: pb.ACK_STATUS_ACCEPTED, Stored.DUPLICATE: pb.ACK_STATUS_DUPLICATE}


def _refuse_unstored(header: pb.BatchHeader, outcome: WriteOutcome) -> None:
    """A batch the store would not write is refused, in the wire protocol's terms."""
    if outcome.stored is Stored.CONFLICT:
        raise EnvelopeError(
            pb.REJECT_REASON_SEQUENCE_CONFLICT,
            f"batch {header.agent_id}#{header.sequence} was stored before with different content",
        )
    if outcome.stored is Stored.KEY_CHANGED:
        raise EnvelopeError(
            pb.REJECT_REASON_REVOKED_AGENT,
            f"agent {header.agent_id!r} was revoked or given a new key",
        )


def _host(peer: str) -> str:
    """The host of a gRPC peer ("ipv4:10.1.2.3:50123" -> "10.1.2.3"): its port changes."""
    address = peer.split(":", 1)[-1]
    return address.rsplit(":", 1)[0] if ":" in address else address


def _certified_agent(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the stream's client certificate (the agent id), if it has one."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None


class IngestService(pb_grpc.IngestServicer):
    """Implements ``meterpipe.v1.Ingest`` on an open connection pool."""

    def __init__(  # noqa: PLR0913 - keyword-only settings, each documented below
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        *,
        batches_per_stream: int = 4,
        require_certificate: bool = False,
        lineage: LineageEmitter | None = None,
        observe_latency: Callable[[str, float], None] | None = None,
        observe_readings: Callable[[float, ReadingColumns], None] | None = None,
    ) -> None:
        """Prepare the service.

        Args:
            pool: connections to the migrated database.
            batches_per_stream: batches of one stream handled at once (see the module).
            require_certificate: mutual TLS is on: a batch must come from the agent its
                client certificate names.
            lineage: where an OpenLineage event goes for every committed batch, if anywhere.
            observe_latency: told (status, seconds) of every answer, for the metrics.
            observe_readings: told each committed batch's commit time (Unix seconds) and
                readings, for the end-to-end latency histogram.

        """
        self._pool = pool
        self._batches_per_stream = batches_per_stream
        self._verifier = Verifier(require_certificate=require_certificate)
        self._lineage = lineage
        self._observe_latency = observe_latency
        self._observe_readings = observe_readings
        self._partitions = Partitions()
        self._meters = MeterDirectory()
        self._storage: str | None = None
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.readings_stored = 0
        self._writing: set[asyncio.Task[None]] = set()  # batches being answered, all streams
        self._logged_refusals: set[tuple[str, int]] = set()
        self._refusals = RefusalCounter()
        self._health_lock = asyncio.Lock()
        self._health: tuple[float, DatabaseState] | None = None  # (when checked, state)

    async def StreamBatches(  # noqa: N802 - name fixed by the generated servicer
        self, request_iterator: AsyncIterator[pb.SignedBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Ack]:
        """Answer every batch of the stream with one Ack, as each is done.

        The context is used only here, while the call is alive: grpcio 1.85 dereferences a
        null pointer (the whole process segfaults) on ``context.peer()`` once a cancelled call
        is gone, as when an agent is killed mid-stream.
        """
        peer = context.peer()
        acks: asyncio.Queue[pb.Ack | None] = asyncio.Queue()
        reader = asyncio.create_task(
            self._handle_stream(request_iterator, acks, _certified_agent(context), _host(peer))
        )
        try:
            while (ack := await acks.get()) is not None:
                yield ack
            await reader  # re-raises what ended the stream early, if anything
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            log.debug("stream from %s ended", peer)

    async def _handle_stream(
        self,
        request_iterator: AsyncIterator[pb.SignedBatch],
        acks: asyncio.Queue[pb.Ack | None],
        certified_as: str | None,
        peer: str,
    ) -> None:
        """Handle up to ``batches_per_stream`` batches at once; None in ``acks`` marks the end.

        Each batch is answered in a task of its own that is never cancelled, not even when the
        stream is cut off: a write cancelled mid-statement wastes the work and leaves its
        connection busy, so the pool has to discard it. Finished, the batch commits, and the
        agent's resend is a cheap DUPLICATE. ``drain`` waits for these when the server stops.
        """
        slots = asyncio.Semaphore(self._batches_per_stream)
        answering: set[asyncio.Task[None]] = set()

        async def answer(batch: pb.SignedBatch) -> None:
            try:
                acks.put_nowait(await self.handle(batch, certified_as=certified_as, peer=peer))
            finally:
                slots.release()

        try:
            async for batch in request_iterator:
                await slots.acquire()
                task = asyncio.create_task(answer(batch))
                for tracked in (answering, self._writing):
                    tracked.add(task)
                    task.add_done_callback(tracked.discard)
            if answering:
                await asyncio.wait(answering)  # unlike gather, never cancels them
        finally:
            acks.put_nowait(None)

    def _log_refusal(self, peer: str, error: EnvelopeError) -> None:
        """The first refusal of each kind from each host as a warning, the rest at debug level.

        A broken or hostile agent resending the same bad batch must not flood the log; the
        counts are in the metrics (``meterpipe_core_batches_total``).
        """
        kind = (peer, int(error.reason))
        if kind in self._logged_refusals:
            log.debug("refused batch from %s: %s", peer or "?", error.detail)
            return
        if len(self._logged_refusals) >= LOGGED_REFUSALS_CAP:
            self._logged_refusals.clear()
        self._logged_refusals.add(kind)
        reason = pb.RejectReason.Name(error.reason).removeprefix("REJECT_REASON_")
        log.warning(
            "refused batch from %s: %s: %s (further %s refusals from there logged at debug level)",
            peer or "?",
            reason,
            error.detail,
            reason,
        )

    def _count_refusal(
        self, header: pb.BatchHeader | None, error: EnvelopeError, certified_as: str | None
    ) -> None:
        """Count the refusal for ``batch_refusals`` (written by ``record_refusals``).

        Under mutual TLS it is counted for the agent the client certificate names, the one
        identity the core has established; without it, for the agent the header names.
        """
        if header is None or error.reason in UNRECORDED_REFUSALS:
            return
        reason = pb.RejectReason.Name(error.reason).removeprefix("REJECT_REASON_")
        self._refusals.count(
            certified_as or header.agent_id,
            reason,
            sequence=header.sequence,
            detail=error.detail,
        )

    async def record_refusals(self) -> None:
        """Write the refusals counted, every ``REFUSAL_WRITE_SECONDS``, until cancelled."""
        while True:
            await asyncio.sleep(REFUSAL_WRITE_SECONDS)
            await self.flush_refusals()

    async def flush_refusals(self) -> None:
        """Write the refusals counted so far (a failure is logged; they wait for the next)."""
        taken = self._refusals.take()
        if not taken:
            return
        try:
            async with self._pool.connection(timeout=REFUSAL_WAIT_SECONDS) as conn:
                await record_refusals(conn, taken)
        except (psycopg_pool.PoolTimeout, psycopg.Error) as exc:
            self._refusals.put_back(taken)
            log.warning("could not record %d kinds of refused batches yet: %s", len(taken), exc)

    async def drain(self) -> None:
        """Wait for the batches still being written (bound it with ``asyncio.timeout``)."""
        if self._writing:
            await asyncio.wait(self._writing)

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[BatchStore]:
        """A store on a pooled connection.

        Raises:
            StorageUnavailable: no connection within CONNECTION_WAIT_SECONDS, or no schema.

        """
        try:
            async with self._pool.connection(timeout=CONNECTION_WAIT_SECONDS) as conn:
                if self._storage is None:
                    self._storage = await recorded_storage(conn)
                    if self._storage is None:
                        raise StorageUnavailable(
                            "database has no schema yet; run `core-ingest migrate`"
                        )
                yield BatchStore(
                    conn, storage=self._storage, partitions=self._partitions, meters=self._meters
                )
        except psycopg_pool.PoolTimeout as exc:
            raise StorageUnavailable(f"no database connection: {exc}") from exc

    async def handle(
        self, batch: pb.SignedBatch, *, certified_as: str | None = None, peer: str = ""
    ) -> pb.Ack:
        """Verify and store one batch; every outcome, refusals included, becomes an Ack.

        ``certified_as`` is the common name of the client certificate, under mutual TLS;
        ``peer`` the sending host, named when a refusal is logged. The outcome is counted
        and its latency observed.
        """
        started = time.perf_counter()
        ack = await self._answer(batch, certified_as=certified_as, peer=peer)
        outcome = _outcome(ack)
        self.outcomes[outcome] += 1
        if self._observe_latency is not None:
            self._observe_latency(outcome[0], time.perf_counter() - started)
        return ack

    def statistics(self) -> IngestStatistics:
        """Batches answered by (status, reason) and readings stored, since the start."""
        return IngestStatistics(dict(self.outcomes), self.readings_stored)

    async def _answer(
        self, batch: pb.SignedBatch, *, certified_as: str | None, peer: str
    ) -> pb.Ack:
        received_at = dt.datetime.now(dt.UTC)
        header = None
        try:
            header = self._verifier.header(batch)
            self._verifier.check_certificate(header, certified_as)
            async with self._store() as store:
                verified = await self._verifier.verify(
                    batch, header, store.conn, received_at=received_at
                )
                outcome = await store.write(verified)
            _refuse_unstored(header, outcome)
        except EnvelopeError as exc:
            self._log_refusal(peer, exc)
            self._count_refusal(header, exc, certified_as)
            return _rejection(header, exc)
        except (StorageUnavailable, psycopg.OperationalError) as exc:
            log.warning("storage unavailable while storing a batch: %s", exc)
            return _rejection(header, _STORAGE_UNAVAILABLE)
        except psycopg.errors.InsufficientPrivilege as exc:
            # Grants missing (a migration not followed by `governance access init`): the batch
            # stays at the agent and goes in once an administrator has granted them.
            log.error(  # noqa: TRY400 - the privilege named is the whole story
                "the core's login may not store this batch (%s): run `governance access init`", exc
            )
            return _rejection(header, _STORAGE_UNAVAILABLE)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            log.warning("database refused a batch: %s", exc)
            refusal = EnvelopeError(pb.REJECT_REASON_MALFORMED, str(exc))
            self._count_refusal(header, refusal, certified_as)
            return _rejection(header, refusal)
        except Exception as exc:
            # A bug of ours must not end the stream and block every batch behind this one.
            log.exception("failed on a batch")
            detail = f"core failed on this batch: {type(exc).__name__}"
            refusal = EnvelopeError(pb.REJECT_REASON_INTERNAL, detail)
            self._count_refusal(header, refusal, certified_as)
            return _rejection(header, refusal)
        if outcome.committed:
            self.readings_stored += outcome.committed.readings_stored
            if self._observe_readings is not None:
                self._observe_readings(outcome.committed.committed_at.timestamp(), verified.columns)
            if self._lineage:
                self._lineage.emit(outcome.committed)
        return pb.Ack(
            agent_id=header.agent_id,
            sequence=header.sequence,
            status=_ACK_STATUS[outcome.stored],
            meter_readings=len(verified.opened.payload.meter_readings.interval_end),
            detail=(
                f"{outcome.refused} values refused one by one (kept in refused_values)"
                if outcome.refused
                else ""
            ),
        )

    async def _database_state(self) -> DatabaseState:
        """``check_database``, once per ``HEALTH_CACHE_SECONDS`` whoever asks.

        Every agent asks Health once a minute: answering each with a database connection of
        its own would have thousands of gateways open connections for nothing.
        """
        async with self._health_lock:
            if self._health is None or time.monotonic() - self._health[0] >= HEALTH_CACHE_SECONDS:
                self._health = (time.monotonic(), await check_database(str(self._pool.conninfo)))
            return self._health[1]

    async def Health(  # noqa: N802 - name fixed by the generated servicer
        self,
        request: pb.HealthRequest,  # noqa: ARG002 - empty message
        context: grpc.aio.ServicerContext,  # noqa: ARG002
    ) -> pb.HealthReply:
        """Whether the database answers, and which storage and schema version the core speaks."""
        now_ms = time.time_ns() // 1_000_000  # as the request arrives: gateways compare clocks
        state = await self._database_state()
        if not state.serving:
            return pb.HealthReply(
                serving=False, version=__version__, detail=state.detail, time_ms=now_ms
            )
        return pb.HealthReply(
            serving=True,
            version=__version__,
            schema_version=PAYLOAD_SCHEMA_VERSION,
            storage=state.storage,
            time_ms=now_ms,
        )
