"""Stream sealed batches to the core over gRPC and record its acknowledgements (at-least-once).

Up to ``max_in_flight`` batches travel unacknowledged (a window, not stop-and-wait). A batch
leaves the buffer's pending set only when the core answers ACCEPTED or DUPLICATE; a refusal is
kept on disk, marked rejected with the core's reason, for the operator. On any failure the
stream is dropped and reopened after a capped, jittered backoff, and every batch still pending
is sent again: the core recognises what it already committed and answers DUPLICATE.
This is the only module that knows about ``grpc.aio.AioRpcError``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from edge_agent.errors import BufferUnavailable, UplinkBroken
from edge_agent.sinks.buffer import Buffer, StoredBatch
from proto import pb, pb_grpc

log = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 60.0  # many gateways reconnecting after a core outage spread over a minute
DELIVERED = (pb.ACK_STATUS_ACCEPTED, pb.ACK_STATUS_DUPLICATE)

T = TypeVar("T")
BufferCall = Callable[..., Awaitable[Any]]
StreamCall = grpc.aio.StreamStreamCall


def backoff_delay(attempt: int, *, rng: random.Random) -> float:
    """Full-jitter backoff: uniform below a limit that doubles per attempt, up to the cap."""
    return rng.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt))


def ack_label(ack: pb.Ack) -> str:
    """``accepted``, ``duplicate`` or ``rejected:<REASON>``, as logged, counted and stored."""
    status = pb.AckStatus.Name(ack.status).removeprefix("ACK_STATUS_").lower()
    if ack.status == pb.ACK_STATUS_REJECTED:
        return f"{status}:{pb.RejectReason.Name(ack.reason).removeprefix('REJECT_REASON_')}"
    return status


class Uplink:
    """The agent's connection to the core: one bidirectional stream at a time."""

    def __init__(
        self,
        *,
        target: str,
        buffer: Buffer,
        buffer_call: BufferCall,
        max_in_flight: int,
        rng: random.Random | None = None,
    ) -> None:
        """Prepare the uplink; no connection is made before ``run`` or ``deliver``.

        Args:
            target: the core's ``host:port``.
            buffer: where batches wait; only touched through ``buffer_call``.
            buffer_call: runs a blocking buffer method in the agent's I/O thread.
            max_in_flight: batches sent and not yet acknowledged, at most.
            rng: randomness for the backoff jitter (tests pass a seeded one).

        """
        self.target = target
        self._buffer = buffer
        self._buffer_call = buffer_call
        self._max_in_flight = max_in_flight
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._batch_ready = asyncio.Event()
        self.acks: collections.Counter[str] = collections.Counter()

    def notify(self) -> None:
        """Tell the sender a new batch was sealed (no waiting, never blocks)."""
        self._batch_ready.set()

    async def run(self) -> None:
        """Deliver batches until cancelled, reconnecting with backoff after every failure."""
        attempt = 0
        while True:
            try:
                await self._session()
            except UplinkBroken as exc:
                delay = backoff_delay(attempt, rng=self._rng)
                log.warning("uplink to %s broken (%s); retrying in %.1f s", self.target, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
            else:
                attempt = 0

    async def _session(self) -> None:
        in_flight: dict[int, StoredBatch] = {}
        window = asyncio.Semaphore(self._max_in_flight)
        try:
            async with grpc.aio.insecure_channel(self.target) as channel:
                call = pb_grpc.IngestStub(channel).StreamBatches()
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._send_loop(call, in_flight, window), name="uplink.send")
                    tasks.create_task(self._ack_loop(call, in_flight, window), name="uplink.ack")
        except* grpc.aio.AioRpcError as group:
            exc = group.exceptions[0]
            assert isinstance(exc, grpc.aio.AioRpcError)  # noqa: S101 - narrowing for the type checker
            raise UplinkBroken(f"{exc.code().name}: {exc.details()}") from exc
        except* UplinkBroken as group:
            raise group.exceptions[0] from None

    async def _send_loop(
        self,
        call: StreamCall,
        in_flight: dict[int, StoredBatch],
        window: asyncio.Semaphore,
    ) -> None:
        last_sent = 0
        while True:
            self._batch_ready.clear()
            batches = await self._buffer_call(
                self._buffer.pending_batches, after=last_sent, limit=self._max_in_flight
            )
            if not batches:
                await self._batch_ready.wait()
                continue
            for batch in batches:
                await window.acquire()
                in_flight[batch.sequence] = batch
                try:
                    await call.write(pb.SignedBatch.FromString(batch.signed))
                except asyncio.InvalidStateError:
                    return  # the RPC has ended; the ack loop reports why
                last_sent = batch.sequence

    async def _ack_loop(
        self,
        call: StreamCall,
        in_flight: dict[int, StoredBatch],
        window: asyncio.Semaphore,
    ) -> None:
        async for ack in call:
            if in_flight.pop(ack.sequence, None) is None:
                log.warning("core acknowledged batch %d, which was not in flight", ack.sequence)
                continue
            window.release()
            await self.record_ack(ack)
            if ack.reason == pb.REJECT_REASON_STORAGE_UNAVAILABLE:
                raise UplinkBroken(f"core storage unavailable: {ack.detail}")
        raise UplinkBroken("core closed the stream")

    async def record_ack(self, ack: pb.Ack) -> None:
        """Store the core's answer for one batch in the buffer, count it and log refusals."""
        label = ack_label(ack)
        self.acks[label] += 1
        if ack.reason == pb.REJECT_REASON_STORAGE_UNAVAILABLE:
            return  # not the batch's fault: it stays pending and is sent again
        refused = ack.status not in DELIVERED
        if refused:
            log.error("core refused batch %d: %s: %s", ack.sequence, label, ack.detail)
        try:
            await self._buffer_call(
                self._buffer.acknowledge,
                ack.sequence,
                outcome=label,
                detail=ack.detail,
                refused=refused,
            )
        except BufferUnavailable as exc:
            # The batch stays pending and is sent again later; the core answers DUPLICATE.
            log.warning("cannot record the answer for batch %d: %s", ack.sequence, exc)

    async def deliver(self, batches: list[StoredBatch]) -> list[pb.Ack]:
        """Send exactly ``batches`` on a fresh stream and return the core's answers, in order.

        Used to re-send retained batches on an operator's request; no retry.
        """

        async def requests() -> Any:  # noqa: ANN401 - an async iterator of SignedBatch
            for batch in batches:
                yield pb.SignedBatch.FromString(batch.signed)

        acks: dict[int, pb.Ack] = {}
        try:
            async with grpc.aio.insecure_channel(self.target) as channel:
                async for ack in pb_grpc.IngestStub(channel).StreamBatches(requests()):
                    acks[ack.sequence] = ack
                    await self.record_ack(ack)
                    if len(acks) == len(batches):
                        break
        except grpc.aio.AioRpcError as exc:
            raise UplinkBroken(f"{exc.code().name}: {exc.details()}") from exc
        return [acks[b.sequence] for b in batches if b.sequence in acks]
