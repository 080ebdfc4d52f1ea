"""The agent's secrets: signing key, pseudonymization key and, with mutual TLS, its TLS key.

Each file must be readable by the agent's user only: a key that others can read is refused at
start, because a leaked pseudonymization key turns every pseudonym back into a meter serial,
and a leaked signing or TLS key lets others speak for the substation.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config import UplinkTlsConfig
from edge_agent.errors import ConfigError, KeyFileError
from proto import key_files
from proto.tls import TlsMaterialError, common_name, read_authority, read_identity

PSEUDONYM_KEY_BYTES = 32  # HMAC-SHA-256 key as long as its output
# Which [uplink.tls] key names each part of the TLS material (proto.tls.TlsMaterialError.part).
UPLINK_TLS_KEYS = {"authority": "ca", "certificate": "cert", "key": "key"}


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The agent's mutual-TLS material, read and checked (PEM, as gRPC's credentials take it)."""

    authority: bytes
    certificate: bytes
    private_key: bytes
    server_name: str | None


def generate_signing_key(path: Path) -> bytes:
    """Write a new Ed25519 private key (PKCS#8 PEM) to ``path``; return the public key PEM."""
    return key_files.generate_signing_key(path, KeyFileError)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the agent's private key written by ``generate_signing_key``."""
    return key_files.load_signing_key(path, KeyFileError)


def generate_pseudonym_key(path: Path) -> None:
    """Write a new random pseudonymization key, hex-encoded, to ``path`` (mode 0600)."""
    key = secrets.token_hex(PSEUDONYM_KEY_BYTES).encode() + b"\n"
    key_files.write_secret(path, key, KeyFileError)


def load_pseudonym_key(path: Path) -> bytes:
    """Load the pseudonymization key written by ``generate_pseudonym_key``."""
    text = key_files.read_secret(path, KeyFileError).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(str(path), "must hold the key as hexadecimal text") from None
    if len(key) < PSEUDONYM_KEY_BYTES:
        raise KeyFileError(str(path), f"key has {len(key)} bytes; at least 32 are needed")
    return key


def load_client_tls(tls: UplinkTlsConfig, *, agent_id: str) -> ClientTls:
    """Read and check ``[uplink.tls]``: PEM files, a private key, a certificate for this agent.

    Raises:
        ConfigError: naming the ``uplink.tls`` key whose file is missing or unusable, or the
            certificate issued to another agent (the core would refuse every batch).
        KeyFileError: the private key is missing or readable by others.

    """
    authority = _read_public(tls.ca, "uplink.tls.ca")
    certificate_pem = _read_public(tls.cert, "uplink.tls.cert")
    key_pem = key_files.read_secret(tls.key, KeyFileError)
    try:
        read_authority(authority)
        certificate = read_identity(certificate_pem=certificate_pem, key_pem=key_pem)
    except TlsMaterialError as exc:
        name = UPLINK_TLS_KEYS[exc.part]
        raise ConfigError(f"uplink.tls.{name}", f"{getattr(tls, name)} {exc.problem}") from None
    issued_to = common_name(certificate)
    if issued_to != agent_id:
        raise ConfigError(
            "uplink.tls.cert",
            f"{tls.cert} is issued to {issued_to!r}, not to agent.id {agent_id!r}; "
            "the core would refuse every batch",
        )
    return ClientTls(authority, certificate_pem, key_pem, tls.server_name)


def _read_public(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
