"""Key files: created private, refused when others can read them, never overwritten."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent.errors import KeyFileError
from edge_agent.keys import (
    generate_pseudonym_key,
    generate_signing_key,
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


def test_missing_key_names_the_path(tmp_path):
    """A missing key file is reported with its path."""
    with pytest.raises(KeyFileError, match="nothere"):
        load_signing_key(tmp_path / "nothere")
