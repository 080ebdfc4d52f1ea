"""Verification: the one place a received batch becomes a ``VerifiedBatch`` or a refusal.

In order: the message is a SignedBatch within the size limit; its header parses; under mutual
TLS it names the agent its client certificate was issued to; the agent is enrolled and
unrevoked; the signature verifies with the agent's key (``proto.envelope``); its creation time
is one the ledger can hold; and every value is within ``proto.limits`` (``ranges``: values
outside are set apart one by one, not the batch). A refusal is an ``EnvelopeError`` carrying
the wire protocol's reason, which the receiving stage sends back as the Ack.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from core_ingest.store.batch import AgentKey, VerifiedBatch
from core_ingest.store.reading_rows import ReadingColumns
from core_ingest.verify.agents import AgentDirectory
from core_ingest.verify.ranges import split_readings, split_telemetry
from proto import EnvelopeError, OpenedBatch, limits, load_public_key, open_batch, pb, read_header

LATEST_CREATED_S = 7_258_118_400  # 2200-01-01: any later time is a broken batch
# What a stream message that is not a SignedBatch becomes (refused MALFORMED, stream goes on).
NOT_A_BATCH = pb.SignedBatch()


class Verifier:
    """Turns received batches into verified ones, remembering enrolled keys for a while."""

    def __init__(self, *, require_certificate: bool = False) -> None:
        """``require_certificate``: mutual TLS is on, a batch must come from its certificate."""
        self.require_certificate = require_certificate
        self._agents = AgentDirectory()

    def header(self, batch: pb.SignedBatch) -> pb.BatchHeader:
        """The message is a SignedBatch within the size limit, and its header parses.

        Raises:
            EnvelopeError: the refusal, with its reason.

        """
        _check_message(batch)
        return read_header(batch)

    def check_certificate(self, header: pb.BatchHeader, certified_as: str | None) -> None:
        """Under mutual TLS, a batch must name the agent its client certificate was issued to.

        Raises:
            EnvelopeError: CERTIFICATE_MISMATCH.

        """
        if self.require_certificate and certified_as != header.agent_id:
            raise EnvelopeError(
                pb.REJECT_REASON_CERTIFICATE_MISMATCH,
                f"the client certificate is issued to {certified_as!r}, "
                f"the batch is from agent {header.agent_id!r}",
            )

    async def verify(
        self,
        batch: pb.SignedBatch,
        header: pb.BatchHeader,
        conn: psycopg.AsyncConnection,
        *,
        received_at: dt.datetime,
    ) -> VerifiedBatch:
        """Sender, signature, creation time and bounds, after ``header`` and ``check_certificate``.

        Raises:
            EnvelopeError: the refusal, with its reason.

        """
        opened, agent = await self._open(batch, header, conn)
        _check_created(opened)
        now_s = received_at.timestamp()
        readings = opened.payload.meter_readings
        columns = ReadingColumns.of(readings)
        within, refused = split_readings(columns, list(readings.meters), now_s=now_s)
        points, refused_points = split_telemetry(opened.payload.transformer_telemetry, now_s=now_s)
        return VerifiedBatch(
            opened=opened,
            agent=agent,
            columns=columns.select(within) if refused else columns,
            points=points,
            refused=[*refused, *refused_points],
            received_at=received_at,
        )

    async def _open(
        self, batch: pb.SignedBatch, header: pb.BatchHeader, conn: psycopg.AsyncConnection
    ) -> tuple[OpenedBatch, AgentKey]:
        """Check the sender is enrolled and unrevoked, then the envelope against its key.

        A remembered key that does not verify the signature is looked up again before the
        batch is refused: the agent may have been given a new key.
        """
        for fresh in (False, True):
            agent = await self._agents.get(conn, header.agent_id, fresh=fresh)
            if agent is None:
                raise EnvelopeError(
                    pb.REJECT_REASON_UNKNOWN_AGENT, f"agent {header.agent_id!r} is not enrolled"
                )
            if agent.revoked:
                raise EnvelopeError(
                    pb.REJECT_REASON_REVOKED_AGENT, f"agent {header.agent_id!r} is revoked"
                )
            try:
                return open_batch(batch, load_public_key(agent.public_key)), agent
            except EnvelopeError as exc:
                if exc.reason != pb.REJECT_REASON_BAD_SIGNATURE or fresh:
                    raise
        raise AssertionError  # unreachable: the fresh attempt returns or raises


def _check_message(batch: pb.SignedBatch) -> None:
    """A stream message must be a SignedBatch within the size limit (``limits``)."""
    if batch is NOT_A_BATCH:
        raise EnvelopeError(pb.REJECT_REASON_MALFORMED, "the message is not a SignedBatch")
    if (size := batch.ByteSize()) > limits.MAX_BATCH_BYTES:
        raise EnvelopeError(
            pb.REJECT_REASON_MALFORMED,
            f"the batch has {size} bytes, over the limit of {limits.MAX_BATCH_BYTES}",
        )


def _check_created(opened: OpenedBatch) -> None:
    """The batch's creation time must be a time the ledger can hold (2000 to 2200).

    It is the gateway's clock, metadata of the batch: a gateway clock days ahead must not get
    every batch refused for good, since the readings carry the devices' own times.
    """
    created_s = opened.header.created_ms / 1000
    if not limits.EARLIEST_INTERVAL_END_S <= created_s <= LATEST_CREATED_S:
        raise EnvelopeError(
            pb.REJECT_REASON_MALFORMED,
            f"created_ms {opened.header.created_ms} is outside 2000-01-01 to 2200-01-01",
        )
