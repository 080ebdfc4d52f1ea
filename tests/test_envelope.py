"""The signed envelope: what verifies, and the reason code for each way a batch can be bad."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import EnvelopeError, open_batch, pb, read_header, seal_batch
from proto.envelope import SIGNING_CONTEXT

KEY = Ed25519PrivateKey.generate()


def payload(readings: int = 3) -> pb.BatchPayload:
    columns = pb.MeterReadings(
        meters=[bytes([i]) * 32 for i in range(readings)],
        meter_index=list(range(readings)),
        interval_end=[900 * (i + 1) for i in range(readings)],
        energy_wh=[100 + i for i in range(readings)],
        register_wh=[1_000 + i for i in range(readings)],
        quality_flags=[0] * readings,
        poll_time_ms=[1_000] * readings,
        device_index=[0] * readings,
    )
    return pb.BatchPayload(meter_readings=columns, devices=["modbus://x:502/1"])


def seal(body: pb.BatchPayload | None = None, *, sequence: int = 1) -> pb.SignedBatch:
    return seal_batch(
        body or payload(),
        agent_id="agent-1",
        sequence=sequence,
        created_ms=5,
        pseudonym_key_id="k1",
        software_version="t",
        register_map_version=1,
        private_key=KEY,
    )


def reason_of(batch: pb.SignedBatch) -> int:
    with pytest.raises(EnvelopeError) as caught:
        open_batch(batch, KEY.public_key())
    return caught.value.reason


def test_sealed_batch_opens_with_the_signers_public_key():
    """A batch opens to the same header fields and payload that were sealed."""
    opened = open_batch(seal(sequence=42), KEY.public_key())
    assert opened.header.agent_id == "agent-1"
    assert opened.header.sequence == 42
    assert opened.payload == payload()
    assert opened.payload_sha256 == hashlib.sha256(seal().payload).digest()


def test_batch_survives_the_wire_byte_for_byte():
    """Serializing and parsing the SignedBatch keeps it verifiable (no re-serialization)."""
    wire = seal().SerializeToString()
    opened = open_batch(pb.SignedBatch.FromString(wire), KEY.public_key())
    assert len(opened.payload.meter_readings.interval_end) == 3


def test_other_key_is_a_bad_signature():
    """A batch verified with another agent's key is refused as BAD_SIGNATURE."""
    with pytest.raises(EnvelopeError) as caught:
        open_batch(seal(), Ed25519PrivateKey.generate().public_key())
    assert caught.value.reason == pb.REJECT_REASON_BAD_SIGNATURE


def test_changed_header_is_a_bad_signature():
    """Editing a signed header (here: the sequence) breaks the signature."""
    batch = seal()
    header = pb.BatchHeader.FromString(batch.header)
    header.sequence = 2
    batch.header = header.SerializeToString()
    assert reason_of(batch) == pb.REJECT_REASON_BAD_SIGNATURE


def test_changed_payload_is_a_hash_mismatch():
    """Editing the payload after signing is caught by the hash in the signed header."""
    batch = seal()
    body = pb.BatchPayload.FromString(batch.payload)
    body.meter_readings.energy_wh[0] += 1
    batch.payload = body.SerializeToString()
    assert reason_of(batch) == pb.REJECT_REASON_HASH_MISMATCH


def test_unknown_schema_version_is_refused_even_when_signed():
    """A correctly signed batch in a payload layout the core does not speak is refused."""
    batch = seal()
    header = pb.BatchHeader.FromString(batch.header)
    header.schema_version = 99
    batch.header = header.SerializeToString()
    batch.signature = KEY.sign(SIGNING_CONTEXT + batch.header)
    assert reason_of(batch) == pb.REJECT_REASON_UNSUPPORTED_SCHEMA


def test_garbage_header_is_malformed():
    """Bytes that are no BatchHeader are refused as MALFORMED, not as a crash."""
    batch = pb.SignedBatch(header=b"\xff\xff\xff", payload=b"", signature=b"")
    with pytest.raises(EnvelopeError) as caught:
        read_header(batch)
    assert caught.value.reason == pb.REJECT_REASON_MALFORMED


def test_header_without_sequence_is_malformed():
    """Sequence 0 is not a batch number: sequences start at 1."""
    batch = pb.SignedBatch(header=pb.BatchHeader(agent_id="a").SerializeToString())
    with pytest.raises(EnvelopeError) as caught:
        read_header(batch)
    assert caught.value.reason == pb.REJECT_REASON_MALFORMED


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.meter_readings.energy_wh.pop(),
        lambda p: p.meter_readings.meter_index.__setitem__(0, 7),
        lambda p: p.meter_readings.device_index.__setitem__(0, 3),
        lambda p: p.meter_readings.meters.__setitem__(0, b"short"),
        lambda p: p.transformer_telemetry.time_ms.append(1),
    ],
    ids=["ragged-columns", "meter-index", "device-index", "short-pseudonym", "ragged-telemetry"],
)
def test_inconsistent_columns_are_malformed(damage):
    """Signed but internally inconsistent payloads are refused before anything is stored."""
    body = payload()
    damage(body)
    assert reason_of(seal(body)) == pb.REJECT_REASON_MALFORMED
