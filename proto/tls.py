"""Mutual-TLS material, checked the same way at both ends (pure: PEM bytes in, facts out).

The core's server certificate and every agent's client certificate come from one private
authority (``core-ingest ca``). An agent's certificate carries the agent id as its common name,
and the core refuses a batch whose header names another agent (``CERTIFICATE_MISMATCH``): a
stolen certificate cannot send for another substation, nor a stolen signing key without it.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

LOOPBACK_NAMES = ("localhost",)


class TlsMaterialError(ValueError):
    """A PEM file that cannot serve its purpose; ``part`` says which file, ``problem`` why.

    ``part`` is ``"certificate"``, ``"key"`` or ``"authority"``, so each end can name its own
    configuration key.
    """

    def __init__(self, part: str, problem: str) -> None:
        super().__init__(f"{part}: {problem}")
        self.part = part
        self.problem = problem


def read_authority(pem: bytes) -> list[x509.Certificate]:
    """The certificates to trust, from a PEM bundle (at least one)."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TlsMaterialError("authority", "holds no PEM certificate") from None


def read_identity(*, certificate_pem: bytes, key_pem: bytes) -> x509.Certificate:
    """The certificate one presents, after checking that the private key belongs to it."""
    try:
        certificate = x509.load_pem_x509_certificates(certificate_pem)[0]
    except ValueError:
        raise TlsMaterialError("certificate", "holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsMaterialError("key", "is not an unencrypted PEM private key") from None
    if _spki(key.public_key()) != _spki(certificate.public_key()):
        raise TlsMaterialError("key", "does not belong to the certificate")
    return certificate


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def common_name(certificate: x509.Certificate) -> str | None:
    """The subject's common name (an agent's id), or None when the subject has none."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def is_loopback(address: str) -> bool:
    """Whether a ``host:port`` stays on this machine (plaintext is acceptable only there)."""
    host = address.rpartition(":")[0].strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
