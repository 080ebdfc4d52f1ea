"""A data subject's requests at the gateway, where the pseudonymization key lives.

Centrally a household is a pseudonym; only the gateway can compute it from the meter serial
the household knows. ``token`` signs the pair (agent, pseudonym) with the agent's key for
``governance subject access|erase``; ``holdings`` says what the buffer holds about the meter;
``erase`` removes it from the buffer and signs a receipt with the counts before and after and
a digest of what went. The serial is used in memory only and written nowhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.keys import load_pseudonym_key, load_signing_key
from edge_agent.sinks.buffer import Buffer
from edge_agent.transforms.pseudonymize import Pseudonymizer
from proto import subject_token


def pseudonym(config: AgentConfig, serial: int) -> bytes:
    """The meter's pseudonym under the configured key."""
    keys = config.pseudonymization
    return Pseudonymizer(key=load_pseudonym_key(keys.key_file), key_id=keys.key_id).pseudonym(
        serial
    )


def token(
    config: AgentConfig, serial: int, *, action: str, reference: str, valid_days: int
) -> dict[str, Any]:
    """The signed subject token for ``serial``: one ``action``, used once, until it expires.

    ``action`` is access or erase; ``reference`` the request's case number.
    """
    issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return subject_token.sign(
        subject_token.SUBJECT_TOKEN,
        {
            "agent_id": config.agent.id,
            "key_id": config.pseudonymization.key_id,
            "pseudonym": pseudonym(config, serial).hex(),
            "action": action,
            "reference": reference,
            "issued_at": issued.isoformat(),
            "expires_at": (issued + dt.timedelta(days=valid_days)).isoformat(),
        },
        load_signing_key(config.agent.signing_key_file),
    )


def holdings(config: AgentConfig, serial: int) -> dict[str, Any]:
    """What the buffer holds about the meter (counts, batch sequences)."""
    meter = pseudonym(config, serial)
    buffer = Buffer(config.buffer.path, read_only=True)
    try:
        held = buffer.subject_holdings(meter)
    finally:
        buffer.close()
    return {"pseudonym": meter.hex(), **dataclasses.asdict(held)}


def erase(config: AgentConfig, serial: int, reference: str) -> dict[str, Any]:
    """Erase the meter from the buffer; the signed receipt.

    Raises:
        SubjectPendingError: pending batches carry the meter (nothing erased).

    """
    meter = pseudonym(config, serial)
    buffer = Buffer(config.buffer.path, synchronous=config.buffer.synchronous)
    try:
        before, after, digest = buffer.erase_subject(meter)
    finally:
        buffer.close()
    return subject_token.sign(
        subject_token.EDGE_RECEIPT,
        {
            "agent_id": config.agent.id,
            "key_id": config.pseudonymization.key_id,
            "pseudonym": meter.hex(),
            "reference": reference,
            "erased_at": _now(),
            "before": dataclasses.asdict(before),
            "after": dataclasses.asdict(after),
            "sha256": digest,
        },
        load_signing_key(config.agent.signing_key_file),
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
