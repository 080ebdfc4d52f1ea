"""The private authority: what it issues, what it refuses, and the core's checks of [server.tls]."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from core_ingest.certificates import (
    create_authority,
    issue_agent_certificate,
    issue_server_certificate,
    load_server_tls,
)
from core_ingest.config import ServerTlsFiles
from core_ingest.errors import CertificateError, ConfigError
from proto.tls import common_name


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def authority(tmp_path):
    create_authority(tmp_path / "ca")
    return tmp_path / "ca"


def test_the_authority_is_a_self_signed_p256_ca_with_a_private_key(tmp_path):
    """ca.crt may sign and nothing else; ca.key is 0600 and the folder is the owner's only."""
    issued = create_authority(tmp_path / "ca")
    ca = load(issued.certificate)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)
    assert issued.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca").stat().st_mode & 0o777 == 0o700
    assert issued.subject == "CN=meterpipe uplink CA"


def test_the_server_certificate_names_every_dns_name_and_ip(authority):
    """SANs for --name, each --dns and each --ip; usable only to serve; signed by the CA."""
    issued = issue_server_certificate(
        authority,
        name="core.example",
        dns_names=["ingest.example", "core.example"],
        ip_addresses=[ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("::1")],
    )
    server = load(issued.certificate)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["core.example", "ingest.example"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.7", "::1"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    server.verify_directly_issued_by(load(authority / "ca.crt"))
    assert issued.certificate.name == "server-core.example.crt"
    assert issued.key.stat().st_mode & 0o777 == 0o600


def test_an_agent_certificate_carries_the_agent_id_as_its_common_name(authority):
    """The core matches this name with each batch's agent id; usable only as a client."""
    issued = issue_agent_certificate(authority, agent_id="sub-north-0042", days=30)
    agent = load(issued.certificate)
    assert common_name(agent) == "sub-north-0042"
    usage = agent.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not agent.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (agent.not_valid_after_utc - agent.not_valid_before_utc).days == 30
    agent.verify_directly_issued_by(load(authority / "ca.crt"))


def test_nothing_is_overwritten_without_force(authority):
    """A second issue for the same agent fails and leaves both files; ``force`` replaces them."""
    first = issue_agent_certificate(authority, agent_id="sub-1")
    before = first.certificate.read_bytes(), first.key.read_bytes()
    with pytest.raises(CertificateError, match="exists already"):
        issue_agent_certificate(authority, agent_id="sub-1")
    assert (first.certificate.read_bytes(), first.key.read_bytes()) == before
    first.key.chmod(0o644)
    again = issue_agent_certificate(authority, agent_id="sub-1", force=True)
    assert again.sha256 != first.sha256
    assert again.key.stat().st_mode & 0o777 == 0o600  # not the replaced file's mode
    with pytest.raises(CertificateError, match="exists already"):
        create_authority(authority)


@pytest.mark.parametrize(
    ("agent_id", "problem"),
    [("../etc/x", "file name"), ("a" * 65, "common name"), ("", "common name")],
)
def test_unfit_agent_ids_are_refused(authority, agent_id, problem):
    """An id that cannot be a file name or an X.509 common name gets no certificate."""
    with pytest.raises(CertificateError, match=problem):
        issue_agent_certificate(authority, agent_id=agent_id)


def test_issuing_without_an_authority_says_to_create_one(tmp_path):
    """The message names the missing file and the command that makes it."""
    with pytest.raises(CertificateError, match=r"ca\.crt.*core-ingest ca init"):
        issue_agent_certificate(tmp_path, agent_id="sub-1")


def server_files(authority, **changes) -> ServerTlsFiles:
    issue_server_certificate(authority, name="core.example")
    files = {
        "cert": authority / "server-core.example.crt",
        "key": authority / "server-core.example.key",
        "client_ca": authority / "ca.crt",
    }
    return ServerTlsFiles(**(files | changes))


def test_the_core_reads_its_tls_files_once_checked(authority):
    """Certificate, matching key and the agents' authority come back as PEM for gRPC."""
    tls = load_server_tls(server_files(authority))
    assert tls.certificate.startswith(b"-----BEGIN CERTIFICATE-----")
    assert tls.client_authority == (authority / "ca.crt").read_bytes()


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (lambda a: {"cert": a / "missing.crt"}, "server.tls.cert", "cannot read"),
        (lambda a: {"key": a / "ca.key"}, "server.tls.key", "does not belong"),
        (lambda a: {"client_ca": a / "ca.key"}, "server.tls.client_ca", "no PEM certificate"),
        (lambda a: {"cert": a / "ca.key"}, "server.tls.cert", "no PEM certificate"),
        (lambda a: {"key": a / "ca.crt"}, "server.tls.key", "not an unencrypted PEM private"),
    ],
)
def test_unusable_tls_files_stop_the_core_naming_the_key(authority, change, key, problem):
    """Checked before serving, so a bad file is one line at start, not a failed handshake."""
    with pytest.raises(ConfigError, match=problem) as caught:
        load_server_tls(server_files(authority, **change(authority)))
    assert caught.value.key == key
