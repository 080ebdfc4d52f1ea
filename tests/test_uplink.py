"""The uplink against real gRPC servers that misbehave: it keeps every batch and keeps trying."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from core_ingest.pgcluster import free_loopback_port
from edge_agent.sinks.buffer import Buffer
from edge_agent.sinks.uplink import BACKOFF_CAP_SECONDS, Uplink, ack_label, backoff_delay
from edge_agent.transforms.pseudonymize import PseudonymousReading
from proto import pb, pb_grpc

pytestmark = pytest.mark.integration


class AbortingCore(pb_grpc.IngestServicer):
    """Answers the first batch of every stream as a storage outage, then ends the stream.

    The agent's next write then races the end of the stream: the case that once crashed it.
    """

    def __init__(self) -> None:
        self.streams = 0

    async def StreamBatches(self, request_iterator, context):  # noqa: N802
        self.streams += 1
        async for batch in request_iterator:
            del batch
            yield pb.Ack(sequence=1, status=pb.ACK_STATUS_DUPLICATE)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")


def fill(buffer: Buffer, batches: int) -> None:
    buffer.put_readings(
        [PseudonymousReading(m.to_bytes(32, "big"), 900, 1, 1, 0, 0, "d") for m in range(batches)]
    )
    while buffer.seal_batch(
        lambda readings, points, seq, rotations: pb.SignedBatch().SerializeToString(),
        max_readings=1,
    ):
        pass


def run_uplink_until(core, buffer: Buffer, done, *, ack_timeout: float = 60.0) -> Uplink:
    """Run an uplink against ``core`` (a real gRPC server on loopback) until ``done(uplink)``."""

    async def scenario() -> Uplink:
        server = grpc.aio.server()
        pb_grpc.add_IngestServicer_to_server(core, server)
        port = server.add_insecure_port(f"127.0.0.1:{free_loopback_port()}")
        await server.start()

        async def direct(method, *args, **kwargs):
            return method(*args, **kwargs)

        uplink = Uplink(
            target=f"127.0.0.1:{port}",
            buffer=buffer,
            buffer_call=direct,
            max_in_flight=8,
            ack_timeout_seconds=ack_timeout,
            rng=random.Random(1),
        )
        runner = asyncio.create_task(uplink.run())
        try:
            async with asyncio.timeout(30):
                while not done(uplink):
                    assert not runner.done(), runner.exception()
                    await asyncio.sleep(0.05)
        finally:
            runner.cancel()
            await server.stop(None)
        return uplink

    return asyncio.run(scenario())


def test_streams_ended_by_the_core_are_retried_and_nothing_is_dropped(tmp_path):
    """Writes racing a stream the core ended never crash the uplink; unanswered batches stay."""
    buffer = Buffer(tmp_path / "b.sqlite")
    fill(buffer, 20)
    core = AbortingCore()
    run_uplink_until(core, buffer, lambda _uplink: core.streams >= 5)
    stats = buffer.statistics()
    assert (stats.acknowledged_batches, stats.pending_batches) == (1, 19)
    buffer.close()


def test_backoff_is_jittered_below_a_doubling_cap():
    """Delays stay below min(cap, 0.5 s x 2^attempt) and differ between gateways."""
    rng = random.Random(3)
    for attempt in range(12):
        limit = min(BACKOFF_CAP_SECONDS, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, rng=rng) for _ in range(50)]
        assert all(0 <= d <= limit for d in delays)
        assert len(set(delays)) > 1


def test_ack_labels_name_status_and_reason():
    """Labels as logged, counted and stored in the buffer."""
    assert ack_label(pb.Ack(status=pb.ACK_STATUS_ACCEPTED)) == "accepted"
    assert ack_label(pb.Ack(status=pb.ACK_STATUS_DUPLICATE)) == "duplicate"
    rejected = pb.Ack(status=pb.ACK_STATUS_REJECTED, reason=pb.REJECT_REASON_BAD_SIGNATURE)
    assert ack_label(rejected) == "rejected:BAD_SIGNATURE"


def test_ack_labels_for_values_a_newer_core_may_send():
    """Unknown status or reason numbers are labelled by number and count as refusals."""
    assert ack_label(pb.Ack(status=pb.ACK_STATUS_REJECTED, reason=42)) == "rejected:42"
    assert ack_label(pb.Ack(status=7)) == "7:UNSPECIFIED"


class SilentCore(pb_grpc.IngestServicer):
    """Reads batches and never answers: a core (or a link) that hangs."""

    async def StreamBatches(self, request_iterator, _context):  # noqa: N802
        async for _batch in request_iterator:
            pass
        yield pb.Ack()  # pragma: no cover


def test_unanswered_batches_break_the_session_after_the_ack_timeout(tmp_path):
    """A core that reads but never answers is given up on, and the batches stay pending."""
    buffer = Buffer(tmp_path / "b.sqlite")
    fill(buffer, 3)
    uplink = run_uplink_until(SilentCore(), buffer, lambda up: up.sessions >= 2, ack_timeout=1.5)
    assert uplink.sessions >= 2
    assert buffer.statistics().pending_batches == 3
    buffer.close()
