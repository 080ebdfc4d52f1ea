"""Seal and open signed batches: serialization, hashing, Ed25519 signing and verification.

Both ends call these pure functions. The signature covers the header's exact serialized bytes and
the header carries the payload's SHA-256, so the verifier never re-serializes anything: it checks
the bytes it received, then parses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from proto import meterpipe_pb2 as pb

PAYLOAD_SCHEMA_VERSION = 1  # the only BatchPayload layout this release writes and reads
MAX_AGENT_ID_LENGTH = 64
PSEUDONYM_BYTES = 32  # HMAC-SHA-256 output
MAX_SEQUENCE = 2**63 - 1  # sequences are stored as signed 64-bit integers
SPOKEN_SCHEMA_VERSIONS = frozenset({1})
# Domain separation: a signature made for a batch can never be valid for any other message type.
SIGNING_CONTEXT = b"meterpipe.v1.batch\x00"


class EnvelopeError(Exception):
    """A batch that cannot be accepted; ``reason`` is the RejectReason the core answers with."""

    def __init__(self, reason: pb.RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """A verified batch: the parsed header and payload plus the digests that identify it."""

    header: pb.BatchHeader
    payload: pb.BatchPayload
    payload_sha256: bytes
    header_sha256: bytes  # with payload_sha256, tells a resend from a different batch


def seal_batch(  # noqa: PLR0913 - one keyword per header field
    payload: pb.BatchPayload,
    *,
    agent_id: str,
    sequence: int,
    created_ms: int,
    pseudonym_key_id: str,
    software_version: str,
    register_map_version: int,
    private_key: Ed25519PrivateKey,
    validation_ruleset: str = "",
) -> pb.SignedBatch:
    """Serialize ``payload`` once, hash it, and sign a header that names it."""
    payload_bytes = payload.SerializeToString(deterministic=True)
    header = pb.BatchHeader(
        agent_id=agent_id,
        sequence=sequence,
        created_ms=created_ms,
        schema_version=PAYLOAD_SCHEMA_VERSION,
        pseudonym_key_id=pseudonym_key_id,
        payload_sha256=hashlib.sha256(payload_bytes).digest(),
        software_version=software_version,
        register_map_version=register_map_version,
        validation_ruleset=validation_ruleset,
    )
    header_bytes = header.SerializeToString(deterministic=True)
    signature = private_key.sign(SIGNING_CONTEXT + header_bytes)
    return pb.SignedBatch(header=header_bytes, payload=payload_bytes, signature=signature)


def read_header(batch: pb.SignedBatch) -> pb.BatchHeader:
    """Parse the header without verifying it, to learn which agent's key to verify with."""
    header = pb.BatchHeader()
    try:
        header.ParseFromString(batch.header)
    except DecodeError as exc:
        raise EnvelopeError(pb.REJECT_REASON_MALFORMED, f"header does not parse: {exc}") from None
    if not 1 <= len(header.agent_id) <= MAX_AGENT_ID_LENGTH or not header.agent_id.isprintable():
        raise EnvelopeError(
            pb.REJECT_REASON_MALFORMED,
            f"agent_id must be 1..{MAX_AGENT_ID_LENGTH} printable characters",
        )
    if not 1 <= header.sequence <= MAX_SEQUENCE:
        raise EnvelopeError(
            pb.REJECT_REASON_MALFORMED,
            f"sequence {header.sequence} of {header.agent_id!r} is not in 1..{MAX_SEQUENCE}",
        )
    return header


def open_batch(batch: pb.SignedBatch, public_key: Ed25519PublicKey) -> OpenedBatch:
    """Verify signature, schema version and payload hash, in that order, then parse the payload.

    Raises:
        EnvelopeError: with the reason code the core reports back to the agent.

    """
    header = read_header(batch)
    try:
        public_key.verify(batch.signature, SIGNING_CONTEXT + batch.header)
    except InvalidSignature:
        raise EnvelopeError(
            pb.REJECT_REASON_BAD_SIGNATURE,
            f"signature of batch {header.agent_id}#{header.sequence} does not verify "
            "with the enrolled key",
        ) from None
    if header.schema_version not in SPOKEN_SCHEMA_VERSIONS:
        raise EnvelopeError(
            pb.REJECT_REASON_UNSUPPORTED_SCHEMA,
            f"payload schema version {header.schema_version} is not one of "
            f"{sorted(SPOKEN_SCHEMA_VERSIONS)}",
        )
    digest = hashlib.sha256(batch.payload).digest()
    if digest != header.payload_sha256:
        raise EnvelopeError(
            pb.REJECT_REASON_HASH_MISMATCH,
            f"payload SHA-256 {digest.hex()[:16]}… differs from the header's "
            f"{header.payload_sha256.hex()[:16]}…",
        )
    payload = pb.BatchPayload()
    try:
        payload.ParseFromString(batch.payload)
    except DecodeError as exc:
        raise EnvelopeError(pb.REJECT_REASON_MALFORMED, f"payload does not parse: {exc}") from None
    _check_columns(payload)
    return OpenedBatch(
        header=header,
        payload=payload,
        payload_sha256=digest,
        header_sha256=hashlib.sha256(batch.header).digest(),
    )


def _check_columns(payload: pb.BatchPayload) -> None:
    """Refuse payloads whose columns differ in length or whose indexes leave their lists."""
    readings = payload.meter_readings
    _check_table(
        "meter reading",
        (
            readings.interval_end,
            readings.meter_index,
            readings.energy_wh,
            readings.register_wh,
            readings.quality_flags,
            readings.poll_time_ms,
            readings.device_index,
        ),
        (
            ("meter_index", readings.meter_index, len(readings.meters)),
            ("device_index", readings.device_index, len(payload.devices)),
        ),
    )
    if payload.device_roles and len(payload.device_roles) != len(payload.devices):
        raise EnvelopeError(
            pb.REJECT_REASON_MALFORMED, "device_roles must name one role per device, or none"
        )
    if len(set(readings.meters)) != len(readings.meters):
        raise EnvelopeError(pb.REJECT_REASON_MALFORMED, "a meter pseudonym is listed twice")
    if any(len(meter) != PSEUDONYM_BYTES for meter in readings.meters):
        raise EnvelopeError(pb.REJECT_REASON_MALFORMED, "a meter pseudonym is not 32 bytes")
    for rotation in payload.rotations:
        meters = [*rotation.old_meters, *rotation.new_meters]
        if len(rotation.old_meters) != len(rotation.new_meters) or any(
            len(m) != PSEUDONYM_BYTES for m in meters
        ):
            raise EnvelopeError(pb.REJECT_REASON_MALFORMED, "a pseudonym rotation is not pairwise")
        if len(set(rotation.old_meters)) != len(rotation.old_meters):
            raise EnvelopeError(
                pb.REJECT_REASON_MALFORMED, "a pseudonym rotation maps one old pseudonym twice"
            )
    telemetry = payload.transformer_telemetry
    if not readings.interval_end and not telemetry.time_ms and not payload.rotations:
        raise EnvelopeError(
            pb.REJECT_REASON_MALFORMED, "the batch carries no reading, telemetry or rotation"
        )
    _check_table(
        "telemetry",
        (
            telemetry.time_ms,
            telemetry.transformer_index,
            telemetry.metric_index,
            telemetry.value,
            telemetry.quality_flags,
        ),
        (
            ("transformer_index", telemetry.transformer_index, len(telemetry.transformers)),
            ("metric_index", telemetry.metric_index, len(telemetry.metrics)),
        ),
    )


def _check_table(
    name: str,
    columns: tuple[Sequence[object], ...],
    indexes: tuple[tuple[str, Sequence[int], int], ...],
) -> None:
    """One columnar table: equal column lengths, every dictionary index within its list."""
    if len({len(column) for column in columns}) > 1:
        raise EnvelopeError(pb.REJECT_REASON_MALFORMED, f"{name} columns differ in length")
    for index_name, index, size in indexes:
        if index and max(index) >= size:
            raise EnvelopeError(
                pb.REJECT_REASON_MALFORMED, f"{index_name} points outside its list of {size}"
            )


def private_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte raw private key, as stored in the agent's key file."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32-byte raw public key, as enrolled at the core."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(raw: bytes) -> Ed25519PrivateKey:
    """Build a private key from its 32 raw bytes."""
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """Build a public key from its 32 raw bytes."""
    return Ed25519PublicKey.from_public_bytes(raw)
