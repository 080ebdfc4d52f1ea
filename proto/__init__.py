"""The wire contract shared by edge and core: generated messages and the signed envelope.

Layout: ``meterpipe.proto`` is the source of truth; ``meterpipe_pb2*.py`` are generated from it
and committed (``tests/test_proto_generated.py`` proves they match a fresh generation);
``envelope`` seals and opens signed batches; ``tls`` checks the mutual-TLS material both ends
load. Nothing here does I/O.
"""

from proto import meterpipe_pb2 as pb
from proto import meterpipe_pb2_grpc as pb_grpc
from proto.envelope import (
    PAYLOAD_SCHEMA_VERSION,
    EnvelopeError,
    OpenedBatch,
    load_private_key,
    load_public_key,
    open_batch,
    private_key_bytes,
    public_key_bytes,
    read_header,
    seal_batch,
)
from proto.quality import QualityFlag

__all__ = [
    "PAYLOAD_SCHEMA_VERSION",
    "EnvelopeError",
    "OpenedBatch",
    "QualityFlag",
    "load_private_key",
    "load_public_key",
    "open_batch",
    "pb",
    "pb_grpc",
    "private_key_bytes",
    "public_key_bytes",
    "read_header",
    "seal_batch",
]
