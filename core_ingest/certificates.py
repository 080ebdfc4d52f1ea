"""Certificates for mutual TLS between agents and the core, from a small private authority.

::

    create_authority          D/ca.crt, D/ca.key                 self-signed, 10 years
    issue_server_certificate  D/server-<name>.crt, .key          DNS names and IPs as SANs
    issue_agent_certificate   D/agent-<agent id>.crt, .key       common name = the agent id

Keys are EC P-256 signed with SHA-256: gRPC's TLS library (BoringSSL) refuses Ed25519
certificates in the handshake (``NO_COMMON_SIGNATURE_ALGORITHMS``), and P-256 works with every
TLS stack. Private keys are written with mode 0600, and no file is replaced unless ``force``
is given. The CA key is needed only to issue: keep it off the core's host.

``load_server_tls`` reads and checks what ``[server.tls]`` names before the server starts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core_ingest.config import ServerTlsFiles
from core_ingest.errors import CertificateError, ConfigError
from proto.tls import TlsMaterialError, read_authority, read_identity

AUTHORITY_STEM = "ca"  # the authority's files: ca.crt and ca.key
AUTHORITY_CERTIFICATE, AUTHORITY_KEY = f"{AUTHORITY_STEM}.crt", f"{AUTHORITY_STEM}.key"
AUTHORITY_NAME = "meterpipe uplink CA"
AUTHORITY_DAYS = 3650  # replaced rarely: every agent and the core trust it
LEAF_DAYS = 730  # an agent's or the core's certificate: renewed every two years
CLOCK_SKEW = dt.timedelta(hours=1)  # valid from an hour ago: gateways' clocks drift
# Which configuration key names each part of the TLS material (proto.tls.TlsMaterialError.part).
SERVER_TLS_KEYS = {"certificate": "cert", "key": "key", "authority": "client_ca"}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and key written to disk, described for the operator."""

    certificate: Path
    key: Path
    subject: str
    not_after: dt.datetime
    sha256: str  # fingerprint of the certificate (DER)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The core's TLS material, read and checked: what ``grpc.ssl_server_credentials`` takes."""

    certificate: bytes
    private_key: bytes
    client_authority: bytes


def create_authority(folder: Path, *, days: int = AUTHORITY_DAYS, force: bool = False) -> Issued:
    """Create the self-signed authority in ``folder`` (made with mode 0700 if missing).

    Raises:
        CertificateError: ``ca.crt`` or ``ca.key`` exists and ``force`` is not given.

    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(AUTHORITY_NAME)
    certificate = (
        _builder(subject, issuer=subject, key=key, days=days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _write(folder, AUTHORITY_STEM, certificate, key, force=force)


def issue_server_certificate(  # noqa: PLR0913 - keyword-only, one per certificate field
    folder: Path,
    *,
    name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[IpAddress] = (),
    days: int = LEAF_DAYS,
    force: bool = False,
) -> Issued:
    """Issue the core's certificate: common name ``name``, valid for it and every DNS name and IP.

    Raises:
        CertificateError: no authority in ``folder``, a name unfit for a certificate, or the
            files exist and ``force`` is not given.

    """
    alternatives: list[x509.GeneralName] = [
        x509.DNSName(n) for n in dict.fromkeys((name, *dns_names))
    ]
    alternatives += [x509.IPAddress(ip) for ip in ip_addresses]
    return _issue(
        folder,
        stem=f"server-{name}",
        common_name=name,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alternatives=alternatives,
        days=days,
        force=force,
    )


def issue_agent_certificate(
    folder: Path, *, agent_id: str, days: int = LEAF_DAYS, force: bool = False
) -> Issued:
    """Issue an agent's client certificate; its common name is the agent id the core checks.

    Raises:
        CertificateError: no authority in ``folder``, an id unfit for a certificate or a file
            name, or the files exist and ``force`` is not given.

    """
    return _issue(
        folder,
        stem=f"agent-{agent_id}",
        common_name=agent_id,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        alternatives=[],
        days=days,
        force=force,
    )


def _issue(  # noqa: PLR0913 - private, called with keywords by the two issuers above
    folder: Path,
    *,
    stem: str,
    common_name: str,
    usage: x509.ObjectIdentifier,
    alternatives: list[x509.GeneralName],
    days: int,
    force: bool,
) -> Issued:
    """Sign a new leaf certificate with the authority in ``folder`` and write it with its key."""
    if "/" in stem or "\\" in stem or "\0" in stem:
        raise CertificateError(f"{common_name!r} cannot be part of a file name")
    authority, authority_key = _load_authority(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name), issuer=authority.subject, key=key, days=days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()),
            critical=False,
        )
    )
    if alternatives:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    return _write(folder, stem, builder.sign(authority_key, hashes.SHA256()), key, force=force)


def _name(common_name: str) -> x509.Name:
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    except ValueError as exc:  # empty, or longer than the 64 characters X.509 allows
        raise CertificateError(f"{common_name!r} cannot be a common name: {exc}") from None


def _builder(
    subject: x509.Name, *, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    """What every certificate here shares: subject, issuer, key, serial, validity, key id."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    usages = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{usage: allowed.get(usage, False) for usage in usages})


def _load_authority(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The authority's certificate and key from ``folder``, as ``create_authority`` wrote them."""
    paths = (folder / AUTHORITY_CERTIFICATE, folder / AUTHORITY_KEY)
    try:
        certificate_pem, key_pem = (path.read_bytes() for path in paths)
    except OSError as exc:
        raise CertificateError(
            f"{exc.filename}: cannot read ({exc.strerror}); run `core-ingest ca init` first"
        ) from None
    try:
        certificate = read_identity(certificate_pem=certificate_pem, key_pem=key_pem)
    except TlsMaterialError as exc:
        raise CertificateError(f"{folder}: the authority's {exc.part} {exc.problem}") from None
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{paths[1]}: not an EC key as `core-ingest ca init` makes")
    return certificate, key


def _write(
    folder: Path,
    stem: str,
    certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    force: bool,
) -> Issued:
    """Write ``<stem>.key`` (0600) and ``<stem>.crt``; both or neither when they exist."""
    certificate_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    existing = [path for path in (certificate_path, key_path) if path.exists()]
    if existing and not force:
        raise CertificateError(f"{existing[0]} exists already; refusing to overwrite it (--force)")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _create(key_path, key_pem, mode=0o600)
    _create(certificate_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return Issued(
        certificate=certificate_path,
        key=key_path,
        subject=certificate.subject.rfc4514_string(),
        not_after=certificate.not_valid_after_utc,
        sha256=certificate.fingerprint(hashes.SHA256()).hex(),
    )


def _create(path: Path, data: bytes, *, mode: int) -> None:
    """Write a new file with ``mode`` from the start (a replaced file does not keep its mode)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_server_tls(files: ServerTlsFiles) -> ServerTls:
    """Read ``[server.tls]``'s files and check them, so a bad file stops the start, not a client.

    Raises:
        ConfigError: naming the ``server.tls`` key whose file is missing or unusable, or whose
            key does not belong to the certificate.

    """
    pems = {}
    for name in ServerTlsFiles.__struct_fields__:
        path = getattr(files, name)
        try:
            pems[name] = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"server.tls.{name}", f"cannot read {path}: {exc.strerror}") from None
    try:
        read_identity(certificate_pem=pems["cert"], key_pem=pems["key"])
        read_authority(pems["client_ca"])
    except TlsMaterialError as exc:
        name = SERVER_TLS_KEYS[exc.part]
        raise ConfigError(f"server.tls.{name}", f"{getattr(files, name)} {exc.problem}") from None
    return ServerTls(
        certificate=pems["cert"], private_key=pems["key"], client_authority=pems["client_ca"]
    )
