"""Drive the real ``Uplink`` against real gRPC servers on loopback, from plain (sync) tests.

Helpers, not fixtures: buffers filled with batches (empty ones for cores that only count, or
really signed ones a real core stores), the uplink run until a condition holds, and a TCP relay
that counts the bytes an agent puts on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

import grpc
import psycopg
import signed_batches
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pgcluster import free_loopback_port

from core_ingest import agents
from edge_agent.sinks.buffer import Buffer
from edge_agent.sinks.uplink import Uplink
from edge_agent.transforms.batch import batch_payload
from edge_agent.transforms.pseudonymize import PseudonymousReading
from proto import pb, pb_grpc, public_key_bytes

FIRST_INTERVAL_END = 1_790_000_100 - 1_790_000_100 % 900
# Few meters over many intervals, as after an outage: compressible like real backlogs.
METERS, INTERVALS = 50, 20
DRIVE_TIMEOUT_SECONDS = 30


def fill(buffer: Buffer, batches: int) -> None:
    """Seal ``batches`` unsigned batches (one reading each) for cores that only read sequences."""
    buffer.put_readings(
        [PseudonymousReading(m.to_bytes(32, "big"), 900, 1, 1, 0, 0, "d") for m in range(batches)]
    )
    while buffer.seal_batch(
        lambda readings, points, seq, rotations: pb.SignedBatch(
            header=pb.BatchHeader(sequence=seq).SerializeToString()
        ).SerializeToString(),
        max_readings=1,
    ):
        pass


def fill_signed(
    buffer: Buffer,
    *,
    agent_id: str,
    key: Ed25519PrivateKey,
    batches: int,
) -> int:
    """Seal ``batches`` batches a real core stores, METERS x INTERVALS readings each.

    Returns the readings sealed.
    """

    def seal(readings, points, sequence, rotations) -> bytes:
        body = batch_payload(readings, points)
        signed = signed_batches.seal(
            body, sequence=sequence, agent_id=agent_id, key=key, key_id="test-key-1"
        )
        return signed.SerializeToString()

    per_batch = METERS * INTERVALS
    for batch in range(batches):
        first = FIRST_INTERVAL_END + batch * INTERVALS * 900
        buffer.put_readings(
            [
                PseudonymousReading(
                    meter.to_bytes(32, "big"),
                    first + interval * 900,
                    100 + meter % 7,
                    10_000 + interval,
                    0,
                    (first + interval * 900) * 1000,
                    "modbus://127.0.0.1:502/1",
                )
                for meter in range(METERS)
                for interval in range(INTERVALS)
            ]
        )
        buffer.seal_batch(seal, max_readings=per_batch)
    return batches * per_batch


def make_uplink(target: str, buffer: Buffer, **options: object) -> Uplink:
    """An uplink that calls the buffer directly (tests have no I/O thread)."""

    async def direct(method, *args, **kwargs):
        return method(*args, **kwargs)

    settings = {"max_in_flight": 8, "rng": random.Random(1)} | options
    return Uplink(target=target, buffer=buffer, buffer_call=direct, **settings)  # type: ignore[arg-type]


async def drive(uplink: Uplink, done: Callable[[Uplink], object]) -> None:
    """Run ``uplink`` until ``done(uplink)`` holds; fail on timeout or if the uplink dies."""
    runner = asyncio.create_task(uplink.run())
    try:
        async with asyncio.timeout(DRIVE_TIMEOUT_SECONDS):
            while not done(uplink):
                assert not runner.done(), runner.exception()
                await asyncio.sleep(0.05)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


@contextlib.asynccontextmanager
async def serving(core: pb_grpc.IngestServicer) -> AsyncIterator[str]:
    """``core`` served by a real gRPC server on a free loopback port; yields its target."""
    server = grpc.aio.server()
    pb_grpc.add_IngestServicer_to_server(core, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_loopback_port()}")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def run_uplink_until(
    core: pb_grpc.IngestServicer, buffer: Buffer, done, **options: object
) -> Uplink:
    """Run an uplink against ``core`` (a real gRPC server on loopback) until ``done(uplink)``."""

    async def scenario() -> Uplink:
        async with serving(core) as target:
            uplink = make_uplink(target, buffer, **options)
            await drive(uplink, done)
        return uplink

    return asyncio.run(scenario())


def run_uplink_against(target: str, buffer: Buffer, done, **options: object) -> Uplink:
    """Run an uplink against a core already serving at ``target`` until ``done(uplink)``."""

    async def scenario() -> Uplink:
        uplink = make_uplink(target, buffer, **options)
        await drive(uplink, done)
        return uplink

    return asyncio.run(scenario())


def enroll(dsn: str, agent_id: str) -> Ed25519PrivateKey:
    """A new signing key, enrolled for ``agent_id`` at the core's database."""
    key = Ed25519PrivateKey.generate()
    with psycopg.connect(dsn, autocommit=True) as conn:
        agents.enroll(conn, agent_id, public_key_bytes(key.public_key()))
    return key


class ByteCounter:
    """A TCP relay on a free loopback port that counts the bytes the client sends through it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.sent = 0
        self.port = free_loopback_port()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65_536):
                self.sent += len(data) if count else 0
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            self._pipe(client_r, server_w, count=True), self._pipe(server_r, client_w, count=False)
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Relay while inside; yields the relay's own target."""
        server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        async with server:
            yield f"127.0.0.1:{self.port}"
