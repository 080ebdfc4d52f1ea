"""The uplink over real gRPC: misbehaving cores, compression, the bandwidth cap, the fair drain."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_services import stored_readings
from uplink_harness import (
    ByteCounter,
    drive,
    enroll,
    fill,
    fill_signed,
    make_uplink,
    run_uplink_until,
    serving,
)

from core_ingest.schema import NATIVE
from edge_agent.sinks.bandwidth import BURST_SECONDS
from edge_agent.sinks.buffer import Buffer
from edge_agent.sinks.uplink import BACKOFF_CAP_SECONDS, ack_label, backoff_delay
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


def test_backoff_after_days_of_failures_stays_below_the_cap():
    """An outage of any length: the doubling is bounded, no overflow (2.0**1024 raises)."""
    rng = random.Random(3)
    assert all(0 <= backoff_delay(attempt, rng=rng) <= BACKOFF_CAP_SECONDS
               for attempt in (1_023, 1_024, 100_000))  # fmt: skip


def test_ack_labels_name_status_and_reason():
    """Labels as logged, counted and stored in the buffer."""
    assert ack_label(pb.Ack(status=pb.ACK_STATUS_ACCEPTED)) == "accepted"
    assert ack_label(pb.Ack(status=pb.ACK_STATUS_DUPLICATE)) == "duplicate"
    rejected = pb.Ack(status=pb.ACK_STATUS_REJECTED, reason=pb.REJECT_REASON_BAD_SIGNATURE)
    assert ack_label(rejected) == "rejected:BAD_SIGNATURE"
    mismatch = pb.Ack(status=pb.ACK_STATUS_REJECTED, reason=pb.REJECT_REASON_CERTIFICATE_MISMATCH)
    assert ack_label(mismatch) == "rejected:CERTIFICATE_MISMATCH"


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
    uplink = run_uplink_until(
        SilentCore(), buffer, lambda up: up.sessions >= 2, ack_timeout_seconds=1.5
    )
    assert uplink.sessions >= 2
    assert buffer.statistics().pending_batches == 3
    buffer.close()


@pytest.mark.parametrize("storage", [NATIVE])
def test_gzip_batches_are_smaller_on_the_wire_and_stored_by_the_core(
    tmp_path, core_server, storage_dsn
):
    """With compression = "gzip" the core decompresses and stores every batch; fewer bytes go."""
    buffer = Buffer(tmp_path / "b.sqlite")
    key = enroll(storage_dsn, "gzip-agent")
    readings = fill_signed(buffer, agent_id="gzip-agent", key=key, batches=4)
    serialized = sum(len(b.signed) for b in buffer.retained_batches(from_sequence=1))
    relay = ByteCounter(core_server)

    async def scenario() -> None:
        async with relay.running() as target:
            uplink = make_uplink(target, buffer, compression="gzip")
            await drive(uplink, lambda up: up.acks["accepted"] == 4)

    asyncio.run(scenario())
    assert buffer.statistics().pending_batches == 0
    assert stored_readings(storage_dsn) == readings
    assert relay.sent < serialized / 2, (relay.sent, serialized)
    buffer.close()


class RecordingCore(pb_grpc.IngestServicer):
    """Accepts every batch, noting when it came, its sequence and size; optionally slow.

    ``on_arrival(count)`` runs as each batch arrives, before it is answered.
    """

    def __init__(self, *, pause_seconds: float = 0.0, on_arrival=lambda count: None) -> None:
        self.arrivals: list[tuple[float, int, int]] = []  # (monotonic time, sequence, bytes)
        self._pause = pause_seconds
        self._on_arrival = on_arrival

    @property
    def sequences(self) -> list[int]:
        return [sequence for _, sequence, _ in self.arrivals]

    async def StreamBatches(self, request_iterator, _context):  # noqa: N802
        async for batch in request_iterator:
            sequence = pb.BatchHeader.FromString(batch.header).sequence
            self.arrivals.append((time.monotonic(), sequence, batch.ByteSize()))
            self._on_arrival(len(self.arrivals))
            await asyncio.sleep(self._pause)
            yield pb.Ack(sequence=sequence, status=pb.ACK_STATUS_ACCEPTED)


def test_the_bandwidth_cap_holds_over_real_grpc(tmp_path):
    """Ten 20 kB batches under a 60 kB/s cap take at least (bytes - one burst) / cap seconds."""
    cap = 60_000
    buffer = Buffer(tmp_path / "b.sqlite")
    fill_signed(buffer, agent_id="paced", key=Ed25519PrivateKey.generate(), batches=10)
    core = RecordingCore()
    started = time.monotonic()
    uplink = run_uplink_until(
        core, buffer, lambda up: up.acks["accepted"] == 10, max_bytes_per_second=cap
    )
    total = sum(size for _, _, size in core.arrivals)
    assert total == uplink.bytes_sent > 3 * cap
    elapsed = core.arrivals[-1][0] - started
    assert elapsed >= (total - cap * BURST_SECONDS) / cap, (elapsed, total)
    buffer.close()


def test_a_live_batch_overtakes_the_backlog_and_every_batch_goes_once(tmp_path):
    """60 batches of backlog; one sealed when the 10th arrives is there within 10 + window + 2.

    By then at most a window of batches is already on its way; after that the sender takes the
    oldest and the newest pending batch in turn, so the live one is at most two picks away.
    Without the fair drain it would arrive 61st.
    """
    window = 4
    buffer = Buffer(tmp_path / "b.sqlite")
    fill(buffer, 60)

    async def scenario() -> RecordingCore:
        uplink = None

        def seal_live_batch(arrived: int) -> None:
            if arrived == 10:
                fill(buffer, 1)  # sequence 61, from readings just polled
                uplink.notify()

        core = RecordingCore(pause_seconds=0.01, on_arrival=seal_live_batch)
        async with serving(core) as target:
            uplink = make_uplink(target, buffer, max_in_flight=window)
            await drive(uplink, lambda up: up.acks["accepted"] == 61)
        return core

    core = asyncio.run(scenario())
    assert core.sequences.index(61) + 1 <= 10 + window + 2, core.sequences
    assert sorted(core.sequences) == list(range(1, 62))  # each exactly once
    assert buffer.statistics().pending_batches == 0
    buffer.close()


class AcceptingCore(pb_grpc.IngestServicer):
    """Answers ACCEPTED to every batch, by the sequence in its header; stores nothing."""

    async def StreamBatches(self, request_iterator, context):  # noqa: N802, ARG002
        async for batch in request_iterator:
            sequence = pb.BatchHeader.FromString(batch.header).sequence
            yield pb.Ack(sequence=sequence, status=pb.ACK_STATUS_ACCEPTED)


def test_answered_batches_leave_the_streams_bookkeeping(tmp_path):
    """Every recorded answer leaves the stream's set of unanswered batches: it never grows."""
    buffer = Buffer(tmp_path / "b.sqlite")
    fill(buffer, 200)
    uplink = run_uplink_until(
        AcceptingCore(), buffer, lambda _u: buffer.statistics().acknowledged_batches == 200
    )
    assert uplink.sessions == 1
    assert uplink.unanswered == 0
    buffer.close()


def test_an_answer_the_buffer_could_not_record_is_recorded_once_it_can(tmp_path):
    """A buffer that cannot take the answer (locked here, full in the field) takes it later.

    The answer is recorded again every second on the same stream: the batch leaves the
    pending set soon after the buffer is writable again, without a resend or a new stream.
    """
    path = tmp_path / "b.sqlite"
    buffer = Buffer(path)
    fill(buffer, 1)
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")  # every write waits 5 s, then fails: "database is locked"
    unlock = threading.Timer(6.0, lambda: locker.execute("COMMIT"))
    unlock.start()
    try:
        uplink = run_uplink_until(
            AcceptingCore(), buffer, lambda _u: buffer.statistics().acknowledged_batches == 1
        )
    finally:
        unlock.join()
        locker.close()
    assert uplink.sessions == 1
    assert uplink.unanswered == 0
    buffer.close()


@pytest.mark.parametrize("byte", [1, 3])  # the header's length byte; a byte of its sequence
def test_a_batch_damaged_in_the_buffer_is_set_aside_and_the_rest_delivered(tmp_path, byte):
    """A sealed batch whose header no longer reads as its own is marked rejected locally.

    Sent, the core could only answer it with sequence 0, which matches nothing in flight: it
    stayed pending for ever and was resent on every stream.
    """
    buffer = Buffer(tmp_path / "b.sqlite")
    fill(buffer, 3)
    (signed,) = buffer._db.execute("SELECT signed FROM batches WHERE sequence = 2").fetchone()
    damaged = bytearray(signed)
    damaged[byte] ^= 0x04
    buffer._db.execute("UPDATE batches SET signed = ? WHERE sequence = 2", (bytes(damaged),))
    uplink = run_uplink_until(
        AcceptingCore(), buffer, lambda _u: buffer.statistics().pending_batches == 0
    )
    states = dict(buffer._db.execute("SELECT sequence, outcome FROM batches").fetchall())
    assert states == {1: "accepted", 2: "rejected:DAMAGED_IN_BUFFER", 3: "accepted"}
    assert uplink.sessions == 1
    buffer.close()
