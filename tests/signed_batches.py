"""Signed batches built by hand, sent to a real core over gRPC (core ingest tests)."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import EnvelopeError, pb, pb_grpc, read_header, seal_batch

KEY = Ed25519PrivateKey.generate()
AGENT = "agent-core-test"
FIRST_END = 1_790_000_100 - 1_790_000_100 % 900  # an interval end on the 15-minute grid
DEVICE = "modbus://10.0.0.5:502/1"


def meter(number: int) -> bytes:
    """A 32-byte pseudonym standing for meter ``number``."""
    return number.to_bytes(32, "big")


def payload(  # noqa: PLR0913 - every field a test may vary
    *,
    readings: int = 4,
    energy: int | Sequence[int] = 100,
    telemetry: int = 0,
    interval: int = 0,
    meters: Sequence[int] | None = None,
    flags: Sequence[int] | None = None,
) -> pb.BatchPayload:
    """One interval's readings of ``meters`` (default ``range(readings)``).

    ``interval`` counts 15-minute intervals after ``FIRST_END``; ``energy`` and ``flags`` are
    one value for all or one per meter.
    """
    numbers = list(meters) if meters is not None else list(range(readings))
    count = len(numbers)
    body = pb.BatchPayload(devices=[DEVICE])
    columns = body.meter_readings
    columns.meters.extend(meter(m) for m in numbers)
    columns.meter_index.extend(range(count))
    columns.interval_end.extend([FIRST_END + 900 * interval] * count)
    columns.energy_wh.extend([energy] * count if isinstance(energy, int) else energy)
    columns.register_wh.extend([10_000 + m for m in numbers])
    columns.quality_flags.extend(flags if flags is not None else [0] * count)
    columns.poll_time_ms.extend([(FIRST_END + 900 * interval + 5) * 1000] * count)
    columns.device_index.extend([0] * count)
    if telemetry:
        values = body.transformer_telemetry
        values.transformers.append("T1")
        values.metrics.extend(["top_oil_c", "hot_spot_c"])
        values.transformer_index.extend([0] * telemetry)
        values.metric_index.extend([i % 2 for i in range(telemetry)])
        values.time_ms.extend([1_790_000_000_000 + 60_000 * i for i in range(telemetry)])
        values.value.extend([55.5 + i for i in range(telemetry)])
        values.quality_flags.extend([0] * telemetry)
    return body


def seal(
    body: pb.BatchPayload | None = None,
    *,
    sequence: int = 1,
    agent_id: str = AGENT,
    key: Ed25519PrivateKey = KEY,
    key_id: str = "k1",
) -> pb.SignedBatch:
    """Sign ``body`` (default: four meters' first interval) as the agent would."""
    return seal_batch(
        body or payload(),
        agent_id=agent_id,
        sequence=sequence,
        created_ms=1_790_000_000_000,
        pseudonym_key_id=key_id,
        software_version="test",
        register_map_version=1,
        private_key=key,
        validation_ruleset="vee-1",
    )


def send(target: str, *batches: pb.SignedBatch) -> list[pb.Ack]:
    """Stream ``batches`` to the core at ``target``; the ack of each, in the batches' order.

    The core answers each batch as it commits, several at once, so acks may come in another
    order; they are matched back by (agent id, sequence), as the agent does.
    """
    with grpc.insecure_channel(target) as channel:
        acks = list(pb_grpc.IngestStub(channel).StreamBatches(iter(batches), timeout=30))
    by_batch: dict[tuple[str, int], list[pb.Ack]] = collections.defaultdict(list)
    for ack in acks:
        by_batch[ack.agent_id, ack.sequence].append(ack)
    return [by_batch[_key(batch)].pop(0) for batch in batches]


def _key(batch: pb.SignedBatch) -> tuple[str, int]:
    """(agent id, sequence) of the header, or ("", 0) as the core answers an unreadable one."""
    try:
        header = read_header(batch)
    except EnvelopeError:
        return "", 0
    return header.agent_id, header.sequence


def answer(ack: pb.Ack) -> str:
    """The ack's status name, or its reason name when refused."""
    if ack.status == pb.ACK_STATUS_REJECTED:
        return pb.RejectReason.Name(ack.reason)
    return pb.AckStatus.Name(ack.status)
