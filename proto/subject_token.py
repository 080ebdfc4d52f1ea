"""Signed documents about one data subject, made on the gateway and checked centrally.

The pseudonymization key never leaves the gateway, so only the gateway can say which pseudonym
a meter serial has. ``edge-agent subject token`` computes it and signs a small JSON document
with the agent's Ed25519 key (the one the core already trusts for its batches); ``governance
subject access|erase`` verifies it with the enrolled public key before looking anything up.
``edge-agent subject erase`` signs its receipt the same way. The serial itself is never
written: the document names the meter by pseudonym only.

The signature covers the document's canonical JSON (sorted keys, no spaces) without its
``signature`` field, so any change to any field is caught.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SUBJECT_TOKEN = "meterpipe.subject-token.v1"  # noqa: S105 - a kind of document, not a secret
EDGE_RECEIPT = "meterpipe.edge-erasure.v1"


class DocumentError(Exception):
    """A document that is not what it claims: says what is wrong with it."""


def canonical(fields: dict[str, Any]) -> bytes:
    """The bytes a signature covers."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign(kind: str, fields: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """``fields`` as a document of ``kind``, signed."""
    document = {"kind": kind, **fields}
    signature = key.sign(canonical(document))
    return document | {"signature": base64.b64encode(signature).decode()}


def verify(document: dict[str, Any], kind: str, public_key: bytes) -> dict[str, Any]:
    """The document's fields once its kind and signature hold.

    Raises:
        DocumentError: another kind, no signature, or one the key did not make.

    """
    if document.get("kind") != kind:
        raise DocumentError(f"not a {kind} document (kind {document.get('kind')!r})")
    fields = {key: value for key, value in document.items() if key != "signature"}
    try:
        signature = base64.b64decode(document["signature"], validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, canonical(fields))
    except (KeyError, ValueError, TypeError, InvalidSignature):
        raise DocumentError(
            "the signature does not verify with the agent's enrolled key:"
            " the document was changed, or another key signed it"
        ) from None
    return fields


def read(text: str) -> dict[str, Any]:
    """A document from its JSON text.

    Raises:
        DocumentError: not a JSON object.

    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DocumentError("not a JSON object")
    return document
