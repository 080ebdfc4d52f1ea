"""Key files: created private, refused when others can read them, never overwritten; TLS too."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent.config import UplinkTlsConfig
from edge_agent.errors import ConfigError, KeyFileError
from edge_agent.keys import (
    generate_pseudonym_key,
    generate_signing_key,
    load_client_tls,
    load_pseudonym_key,
    load_signing_key,
)


def test_signing_key_roundtrip_and_mode(tmp_path):
    """Keygen writes a 0600 PEM whose public half matches the printed public key."""
    path = tmp_path / "agent.key"
    public_pem = generate_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_signing_key(path)
    assert b"BEGIN PUBLIC KEY" in public_pem
    signature = key.sign(b"x")
    serialization.load_pem_public_key(public_pem).verify(signature, b"x")


@pytest.mark.parametrize("generate", [generate_signing_key, generate_pseudonym_key])
def test_existing_key_is_never_overwritten(tmp_path, generate):
    """Generating over an existing file fails and leaves the file as it was."""
    path = tmp_path / "key"
    path.write_bytes(b"precious")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate(path)
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize("load", [load_signing_key, load_pseudonym_key])
def test_key_readable_by_others_is_refused(tmp_path, load):
    """A key file with group or other permissions is refused, naming the mode and the fix."""
    path = tmp_path / "key"
    (generate_signing_key if load is load_signing_key else generate_pseudonym_key)(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644 .*chmod 600"):
        load(path)


def test_pseudonym_key_roundtrip(tmp_path):
    """The pseudonym key is 32 random bytes stored as hex."""
    path = tmp_path / "p.key"
    generate_pseudonym_key(path)
    assert len(load_pseudonym_key(path)) == 32


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"not hex\n", "hexadecimal"), (b"abcd\n", "at least 32")],
)
def test_bad_pseudonym_key_is_refused(tmp_path, content, problem):
    """A malformed or too short key names the file and the problem."""
    path = tmp_path / "p.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=problem):
        load_pseudonym_key(path)


def test_a_service_reads_systemds_copy_of_its_key(tmp_path, monkeypatch):
    """With LoadCredential, the copy in $CREDENTIALS_DIRECTORY is read, whatever its mode.

    The original (here unreadable, as /etc/credstore is to the service's user) is not opened;
    without the variable, or without a copy of that name, the configured file is read.
    """
    original = tmp_path / "credstore" / "pseudonym.key"
    original.parent.mkdir()
    generate_pseudonym_key(original)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    copy = credentials / "pseudonym.key"
    copy.write_bytes(original.read_bytes())
    copy.chmod(0o440)  # as newer systemd releases expose credentials
    expected = load_pseudonym_key(original)
    original.write_bytes(b"unreadable to the service")
    original.chmod(0o000)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load_pseudonym_key(original) == expected
    signing = tmp_path / "agent.key"
    generate_signing_key(signing)  # no copy of that name: the configured file
    assert load_signing_key(signing).public_key()


def test_missing_key_names_the_path(tmp_path):
    """A missing key file is reported with its path."""
    with pytest.raises(KeyFileError, match="nothere"):
        load_signing_key(tmp_path / "nothere")


@pytest.fixture
def agent_tls(pki) -> UplinkTlsConfig:
    """[uplink.tls] for agent sub-1 from a fresh authority."""
    cert, key = pki.agent("sub-1")
    return UplinkTlsConfig(ca=pki.ca, cert=cert, key=key, server_name="core.example")


def test_client_tls_is_read_and_checked(agent_tls):
    """Authority, certificate and key come back as PEM with the server name to expect."""
    tls = load_client_tls(agent_tls, agent_id="sub-1")
    assert tls.authority == agent_tls.ca.read_bytes()
    assert tls.private_key == agent_tls.key.read_bytes()
    assert tls.server_name == "core.example"


def test_client_tls_key_readable_by_others_is_refused(agent_tls):
    """The TLS key is a secret like the others: mode 0644 is refused, naming the fix."""
    agent_tls.key.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644 .*chmod 600"):
        load_client_tls(agent_tls, agent_id="sub-1")


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (lambda t: {"ca": t.ca.with_name("missing.crt")}, "uplink.tls.ca", "cannot read"),
        (lambda t: {"ca": t.key}, "uplink.tls.ca", "no PEM certificate"),
        (lambda t: {"cert": t.ca.with_name("ca.key")}, "uplink.tls.cert", "no PEM certificate"),
        (lambda t: {"key": t.ca.with_name("ca.key")}, "uplink.tls.key", "does not belong"),
        (lambda t: {"cert": t.ca, "key": t.ca.with_name("ca.key")}, "uplink.tls.cert", "issued to"),
    ],
)
def test_unusable_client_tls_names_the_key(agent_tls, change, key, problem):
    """Each problem names its [uplink.tls] key; a certificate for another agent is one too."""
    with pytest.raises(ConfigError, match=problem) as caught:
        load_client_tls(msgspec.structs.replace(agent_tls, **change(agent_tls)), agent_id="sub-1")
    assert caught.value.key == key
