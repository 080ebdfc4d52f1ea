"""Stream sealed batches to the core over gRPC and record its acknowledgements (at-least-once).

Up to ``max_in_flight`` batches travel unacknowledged (a window, not stop-and-wait). A batch
leaves the buffer's pending set only when the core answers ACCEPTED or DUPLICATE; a refusal is
kept on disk, marked rejected with the core's reason, for the operator. On any failure the
stream is dropped and reopened after a capped, jittered backoff, and every batch still pending
is sent again: the core recognises what it already committed and answers DUPLICATE. A dead
connection is noticed by gRPC keepalive pings and by a deadline on acknowledgements.

Fair drain: each free place in the window goes, in turn, to the oldest and to the newest
pending batch not yet sent on this stream. After hours of outage the backlog drains from both
ends at the link's full speed, while a batch sealed from live readings jumps the queue: it is
on the wire within two picks of a free place (it arrives out of sequence order, which the core
does not mind: it is idempotent by (agent, sequence)). A batch is sent at most once per stream,
and every batch still pending is sent again on the next one.

With ``compression="gzip"`` every message is gzip-compressed by gRPC (the core's server
decompresses it on its own); signatures cover the uncompressed bytes, so nothing else changes.
With ``tls`` the channel is mutual TLS: the agent checks the core's certificate against the
configured authority and presents its own, whose common name the core matches with each batch's
agent id. Without it the channel is plaintext, meant for loopback or a VPN.
With ``max_bytes_per_second`` a token bucket (``edge_agent.sinks.bandwidth``) paces the batches'
serialized bytes, so the uplink never takes more than its share of a thin link.
This is the only module that knows about ``grpc.aio.AioRpcError``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from edge_agent.backoff import full_jitter
from edge_agent.errors import BufferUnavailable, UplinkBroken
from edge_agent.health import CoreHealth, now_ms
from edge_agent.keys import ClientTls
from edge_agent.sinks.bandwidth import BURST_SECONDS, TokenBucket
from edge_agent.sinks.buffer import Buffer, StoredBatch
from proto import pb, pb_grpc

log = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 60.0  # many gateways reconnecting after a core outage spread over a minute
WATCHDOG_PERIOD_SECONDS = 1.0
DELIVERED = (pb.ACK_STATUS_ACCEPTED, pb.ACK_STATUS_DUPLICATE)
DAMAGED = "rejected:DAMAGED_IN_BUFFER"  # a sealed batch the agent itself cannot read back
# Ping the core every 30 s, give up on the connection 10 s after an unanswered ping: a half-open
# TCP connection (NAT or firewall timeouts on substation WAN links) is found within a minute.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip}

BufferCall = Callable[..., Awaitable[Any]]
StreamCall: TypeAlias = grpc.aio.StreamStreamCall


def open_channel(
    target: str,
    tls: ClientTls | None,
    compression: grpc.Compression = grpc.Compression.NoCompression,
) -> grpc.aio.Channel:
    """A new channel to the core: mutual TLS if configured, with the given compression."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, compression=compression)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.authority,
        private_key=tls.private_key,
        certificate_chain=tls.certificate,
    )
    options: tuple[tuple[str, int | str], ...] = CHANNEL_OPTIONS
    if tls.server_name:
        options += (("grpc.ssl_target_name_override", tls.server_name),)
    return grpc.aio.secure_channel(target, credentials, options=options, compression=compression)


async def check_core(target: str, tls: ClientTls | None, *, timeout_seconds: float) -> CoreHealth:
    """Ask the core's ``Health`` on a fresh channel: reachable, serving, clock, round trip.

    The clock offset is the gateway's clock minus the core's, against the middle of the
    exchange: it is uncertain by half the round trip.
    """
    health = CoreHealth(target=target, checked_ms=now_ms())
    started = time.monotonic()
    try:
        async with open_channel(target, tls) as channel:
            reply = await pb_grpc.IngestStub(channel).Health(
                pb.HealthRequest(), timeout=timeout_seconds
            )
    except grpc.aio.AioRpcError as exc:
        health.reachable = False
        health.detail = _describe(exc)
        return health
    round_trip = time.monotonic() - started
    health.reachable = True
    health.serving = reply.serving
    health.version = reply.version
    health.detail = reply.detail
    health.round_trip_s = round(round_trip, 4)
    if reply.time_ms:
        middle_ms = health.checked_ms + round_trip * 500
        health.clock_offset_s = round((middle_ms - reply.time_ms) / 1000, 3)
    return health


def backoff_delay(attempt: int, *, rng: random.Random) -> float:
    """The uplink's wait before reconnecting (``edge_agent.backoff``), up to a minute."""
    return full_jitter(attempt, first=BACKOFF_FIRST_SECONDS, cap=BACKOFF_CAP_SECONDS, rng=rng)


def _enum_name(enum: Any, value: int, prefix: str) -> str:  # noqa: ANN401 - a protobuf enum wrapper
    """The name without its prefix, or the number when a newer core sent a value we lack."""
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def ack_label(ack: pb.Ack) -> str:
    """``accepted``, ``duplicate`` or ``rejected:<REASON>``, as logged, counted and stored."""
    status = _enum_name(pb.AckStatus, ack.status, "ACK_STATUS_").lower()
    if ack.status not in DELIVERED:
        return f"{status}:{_enum_name(pb.RejectReason, ack.reason, 'REJECT_REASON_')}"
    return status


def _describe(exc: BaseException) -> str:
    """One line for the log: the first real error inside any exception group."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, (UplinkBroken, BufferUnavailable)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class UplinkStatistics:
    """What the uplink did since the agent started."""

    answers: dict[str, int]  # answer label (ack_label) -> batches
    sessions: int  # streams opened
    bytes_sent: int  # serialized batch bytes handed to gRPC
    unanswered: int  # sent on the current stream, answer not recorded yet


@dataclass
class _Session:
    """The state of one stream: what is in flight since when, and whether the core answered."""

    window: asyncio.Semaphore
    in_flight: dict[int, float] = field(default_factory=dict)  # sequence -> monotonic time sent
    # Sent on this stream and the answer not recorded yet: never picked again on this stream.
    unanswered: set[int] = field(default_factory=set)
    # Answered, but the buffer could not record it (disk full): recorded again every second.
    unrecorded: dict[int, pb.Ack] = field(default_factory=dict)
    newest_next: bool = False  # which end of the pending batches the next pick takes
    answered: bool = False


class Uplink:
    """The agent's connection to the core: one bidirectional stream at a time."""

    def __init__(  # noqa: PLR0913 - keyword-only settings, each documented below
        self,
        *,
        target: str,
        buffer: Buffer,
        buffer_call: BufferCall,
        max_in_flight: int,
        ack_timeout_seconds: float = 60.0,
        compression: str = "none",
        max_bytes_per_second: int = 0,
        tls: ClientTls | None = None,
        rng: random.Random | None = None,
        observe_round_trip: Callable[[float], None] | None = None,
    ) -> None:
        """Prepare the uplink; no connection is made before ``run`` or ``deliver``.

        Args:
            target: the core's ``host:port``.
            buffer: where batches wait; only touched through ``buffer_call``.
            buffer_call: runs a blocking buffer method in the agent's I/O thread.
            max_in_flight: batches sent and not yet acknowledged, at most.
            ack_timeout_seconds: a batch unacknowledged this long means the stream is dead.
            compression: ``"none"`` or ``"gzip"`` (per message, decided by gRPC).
            max_bytes_per_second: cap on serialized batch bytes sent (before compression);
                0 for no cap. Kept across reconnects, so a new session cannot burst.
            tls: mutual-TLS material (``edge_agent.keys.load_client_tls``); None: plaintext.
            rng: randomness for the backoff jitter (tests pass a seeded one).
            observe_round_trip: told the seconds from sending each batch to its answer.

        """
        self.target = target
        self._buffer = buffer
        self._buffer_call = buffer_call
        self._max_in_flight = max_in_flight
        self._ack_timeout = ack_timeout_seconds
        self._compression = COMPRESSION[compression]
        self._tls = tls
        self._bucket = (
            TokenBucket(
                bytes_per_second=max_bytes_per_second,
                burst_bytes=max_bytes_per_second * BURST_SECONDS,
            )
            if max_bytes_per_second
            else None
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._batch_ready = asyncio.Event()
        self.acks: collections.Counter[str] = collections.Counter()
        self.sessions = 0
        self.bytes_sent = 0  # serialized batch bytes handed to gRPC
        self.keep_delivered = True  # False while the buffer is under pressure
        self._session_now: _Session | None = None
        self._observe_round_trip = observe_round_trip
        self.last_broken = ""  # why the last stream ended, for diagnostics

    @property
    def stream_open(self) -> bool:
        """Whether a stream is open now and the core has answered on it."""
        return self._session_now is not None and self._session_now.answered

    @property
    def unanswered(self) -> int:
        """Batches sent on the current stream whose answer is not recorded in the buffer yet."""
        return len(self._session_now.unanswered) if self._session_now else 0

    def statistics(self) -> UplinkStatistics:
        """Counts for the metrics; reads memory only."""
        return UplinkStatistics(dict(self.acks), self.sessions, self.bytes_sent, self.unanswered)

    def notify(self) -> None:
        """Tell the sender a new batch was sealed (no waiting, never blocks)."""
        self._batch_ready.set()

    async def run(self) -> None:
        """Deliver batches until cancelled, reconnecting with backoff after every failure.

        The backoff starts again from its first step after a session in which the core answered.
        """
        attempt = 0
        while True:
            session = self._session_now = _Session(asyncio.Semaphore(self._max_in_flight))
            try:
                await self._session(session)
            except UplinkBroken as exc:
                cause = exc.__cause__
                unexpected = cause is not None and not isinstance(
                    cause, (grpc.aio.AioRpcError, BufferUnavailable, UplinkBroken)
                )
                attempt = 0 if session.answered else attempt
                self._session_now = None
                self.last_broken = str(exc)
                delay = backoff_delay(attempt, rng=self._rng)
                attempt += 1
                log.log(
                    logging.ERROR if unexpected else logging.WARNING,
                    "uplink to %s broken (%s); retrying in %.1f s",
                    self.target,
                    exc,
                    delay,
                    exc_info=cause if unexpected else None,
                )
                await asyncio.sleep(delay)

    def _channel(self) -> grpc.aio.Channel:
        return open_channel(self.target, self._tls, self._compression)

    async def _session(self, session: _Session) -> None:
        """One stream until it breaks; every way it can end becomes ``UplinkBroken``."""
        self.sessions += 1
        try:
            async with self._channel() as channel:
                call = pb_grpc.IngestStub(channel).StreamBatches()
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._send_loop(call, session), name="uplink.send")
                    tasks.create_task(self._ack_loop(call, session), name="uplink.ack")
                    tasks.create_task(self._watchdog(session), name="uplink.watchdog")
        except Exception as exc:  # noqa: BLE001 - every way a session ends means: reconnect
            leaf: BaseException = exc
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            raise UplinkBroken(_describe(exc)) from leaf

    async def _send_loop(self, call: StreamCall, session: _Session) -> None:
        """Fill every free place in the window with the next pick, paced by the bandwidth cap."""
        while True:
            await session.window.acquire()
            batch = await self._next_batch(session)
            if self._bucket is not None:
                await self._bucket.wait_sendable(len(batch.signed))
            session.in_flight[batch.sequence] = time.monotonic()
            session.unanswered.add(batch.sequence)
            try:
                await call.write(pb.SignedBatch.FromString(batch.signed))
            except asyncio.InvalidStateError:
                return  # the RPC has ended; the ack loop reports why
            self.bytes_sent += len(batch.signed)

    async def _next_batch(self, session: _Session) -> StoredBatch:
        """Wait for a pending batch not sent on this stream yet: oldest and newest in turn."""
        while True:
            self._batch_ready.clear()
            batch = await self._buffer_call(
                self._buffer.next_pending,
                newest=session.newest_next,
                skip=frozenset(session.unanswered),  # a copy: the I/O thread reads it
            )
            if batch is None:
                await self._batch_ready.wait()
            elif await self._intact(batch):
                session.newest_next = not session.newest_next
                return batch

    async def _intact(self, batch: StoredBatch) -> bool:
        """Whether a sealed batch still reads as itself; a damaged one is set aside, logged.

        Bits flipped on the gateway's disk can make a batch's header unreadable: the core could
        only answer it with sequence 0, which matches nothing in flight, and it would be sent
        again on every stream for ever. It is marked rejected (DAMAGED_IN_BUFFER) and kept.
        """
        try:
            header = pb.BatchHeader.FromString(pb.SignedBatch.FromString(batch.signed).header)
        except DecodeError as exc:
            problem = f"does not parse: {exc}"
        else:
            if header.sequence == batch.sequence:
                return True
            problem = f"its header says sequence {header.sequence}"
        log.error(
            "ALARM batch %d is damaged in the buffer and not sent: %s", batch.sequence, problem
        )
        with contextlib.suppress(BufferUnavailable):  # not marked now: set aside again later
            await self._buffer_call(
                self._buffer.acknowledge,
                batch.sequence,
                outcome=DAMAGED,
                detail=f"damaged in the buffer: {problem}",
                refused=True,
            )
        return False

    async def _ack_loop(self, call: StreamCall, session: _Session) -> None:
        async for ack in call:
            sent = session.in_flight.pop(ack.sequence, None)
            if sent is None:
                log.warning("core acknowledged batch %d, which was not in flight", ack.sequence)
                continue
            if self._observe_round_trip is not None:
                self._observe_round_trip(time.monotonic() - sent)
            session.answered = True
            if await self.record_ack(ack):
                session.unanswered.discard(ack.sequence)
            elif ack.reason != pb.REJECT_REASON_STORAGE_UNAVAILABLE:
                session.unrecorded[ack.sequence] = ack
            session.window.release()
            if ack.reason == pb.REJECT_REASON_STORAGE_UNAVAILABLE:
                raise UplinkBroken(f"core storage unavailable: {ack.detail}")
        raise UplinkBroken("core closed the stream")

    async def _watchdog(self, session: _Session) -> None:
        """Record answers the buffer could not take yet; break a stream whose answers stall.

        An answer that could not be recorded (a full disk) is tried again every second, so
        delivery goes on within a second of space returning, without resending anything.
        """
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_SECONDS)
            for sequence, ack in list(session.unrecorded.items()):
                if not await self._store_answer(ack):
                    break
                del session.unrecorded[sequence]
                session.unanswered.discard(sequence)
            if session.in_flight:
                waited = time.monotonic() - min(session.in_flight.values())
                if waited > self._ack_timeout:
                    raise UplinkBroken(f"no acknowledgement for {waited:.0f} s")

    async def record_ack(self, ack: pb.Ack) -> bool:
        """Count and log the core's answer for one batch, and store it in the buffer.

        Returns whether the answer is recorded, so the batch left the pending set (False: the
        core could not store it, or the buffer could not record the answer; it stays pending).
        """
        label = ack_label(ack)
        self.acks[label] += 1
        if ack.reason == pb.REJECT_REASON_STORAGE_UNAVAILABLE:
            return False  # not the batch's fault: it stays pending and is sent again
        if ack.status not in DELIVERED:
            log.error("core refused batch %d: %s: %s", ack.sequence, label, ack.detail)
        elif ack.detail:  # accepted, but some values were set apart by the core's bounds
            log.warning("core accepted batch %d: %s", ack.sequence, ack.detail)
        return await self._store_answer(ack)

    async def _store_answer(self, ack: pb.Ack) -> bool:
        """Write the answer to the buffer; False (logged) when the buffer cannot take it."""
        try:
            await self._buffer_call(
                self._buffer.acknowledge,
                ack.sequence,
                outcome=ack_label(ack),
                detail=ack.detail,
                refused=ack.status not in DELIVERED,
                keep=self.keep_delivered,
            )
        except BufferUnavailable as exc:
            log.warning("cannot record the answer for batch %d yet: %s", ack.sequence, exc)
            return False
        return True

    async def deliver(self, batches: list[StoredBatch]) -> list[pb.Ack]:
        """Send exactly ``batches`` on a fresh stream and return the core's answers, in order.

        Used to re-send retained batches on an operator's request; no retry. Gives up when an
        answer takes longer than the acknowledgement timeout.
        """

        async def requests() -> AsyncIterator[pb.SignedBatch]:
            for batch in batches:
                yield pb.SignedBatch.FromString(batch.signed)

        acks: dict[int, pb.Ack] = {}
        try:
            async with self._channel() as channel:
                call = pb_grpc.IngestStub(channel).StreamBatches(requests())
                while len(acks) < len(batches):
                    async with asyncio.timeout(self._ack_timeout):
                        ack = await call.read()
                    if ack is grpc.aio.EOF:
                        break
                    acks[ack.sequence] = ack
                    await self.record_ack(ack)
        except grpc.aio.AioRpcError as exc:
            raise UplinkBroken(_describe(exc)) from exc
        except TimeoutError:
            raise UplinkBroken(f"no answer within {self._ack_timeout:g} s") from None
        return [acks[b.sequence] for b in batches if b.sequence in acks]
