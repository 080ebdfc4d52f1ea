"""Sealing: what leaves the buffer as one batch, laid out, hashed and signed (Ed25519).

Pure but for the clock: the buffer calls the sealer inside the transaction that moves pending
readings into a batch (``Buffer.seal_batch``), so a crash leaves the readings pending and the
sequence number unused, and a batch is never signed twice under one sequence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.sources.register_map import REGISTER_MAP_VERSION
from edge_agent.transforms.batch import batch_payload
from edge_agent.transforms.pseudonymize import PseudonymousReading, Rotation
from edge_agent.transforms.telemetry import TelemetryPoint
from edge_agent.transforms.validate import RULESET_VERSION
from proto import seal_batch
from proto.version import __version__


class Sealer:
    """One agent's batches: its id, signing key, pseudonym key id and device roles."""

    def __init__(
        self,
        *,
        agent_id: str,
        signing_key: Ed25519PrivateKey,
        pseudonym_key_id: str,
        device_roles: Mapping[str, str],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """``device_roles``: what each device's meters measure (``customer`` when unnamed)."""
        self.agent_id = agent_id
        self._signing_key = signing_key
        self.pseudonym_key_id = pseudonym_key_id
        self._roles = device_roles
        self._clock_ns = clock_ns

    def __call__(
        self,
        readings: list[PseudonymousReading],
        points: list[TelemetryPoint],
        sequence: int,
        rotations: list[Rotation],
    ) -> bytes:
        """The serialized SignedBatch of these readings, points and rotations as ``sequence``."""
        signed = seal_batch(
            batch_payload(
                readings,
                points,
                [(r.old_key_id, r.new_key_id, r.pairs()) for r in rotations],
                self._roles,
            ),
            agent_id=self.agent_id,
            sequence=sequence,
            created_ms=self._clock_ns() // 1_000_000,
            pseudonym_key_id=self.pseudonym_key_id,
            software_version=__version__,
            register_map_version=REGISTER_MAP_VERSION,
            validation_ruleset=RULESET_VERSION,
            private_key=self._signing_key,
        )
        return signed.SerializeToString()
