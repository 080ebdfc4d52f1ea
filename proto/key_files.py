"""Secret key files, one convention for every deployable: created 0600, refused if others read.

A key another user can read is refused, because a leaked signing key lets others speak for
whoever holds it. Each function takes the caller's ``error(path, problem)`` factory, as
``proto.settings.read_toml`` does, so the edge agent raises its ``KeyFileError`` and the
governance command its own, with the same words.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ErrorFactory = Callable[[str, str], Exception]  # (path, problem) -> the caller's error


def write_secret(path: Path, data: bytes, error: ErrorFactory) -> None:
    """Create ``path`` with mode 0600 and refuse to overwrite an existing key."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise error(str(path), "exists already; refusing to overwrite a key") from None
    except OSError as exc:
        raise error(str(path), f"cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def read_secret(path: Path, error: ErrorFactory) -> bytes:
    """Read a key file after checking that only its owner can read it.

    A service that systemd started with ``LoadCredential=NAME:PATH`` reads systemd's copy
    instead, when ``$CREDENTIALS_DIRECTORY`` holds one named like ``path``: the original stays
    where only root reads it (``/etc/credstore``), and the commands a technician runs as root
    read it there. The copy's folder is the service's alone, so its mode is systemd's affair.
    """
    credential = _credential(path)
    if credential is not None:
        try:
            return credential.read_bytes()
        except OSError as exc:
            raise error(str(credential), f"cannot read: {exc.strerror}") from None
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise error(str(path), f"cannot read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(str(path), f"mode {stat.S_IMODE(mode):04o} lets others read it; run chmod 600")
    return data


def _credential(path: Path) -> Path | None:
    """The copy systemd made of ``path`` for this service, if it was given one."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    copy = Path(folder) / path.name
    return copy if copy.is_file() else None


def generate_signing_key(path: Path, error: ErrorFactory) -> bytes:
    """Write a new Ed25519 private key (PKCS#8 PEM) to ``path``; return the public key PEM."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(path, pem, error)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_signing_key(path: Path, error: ErrorFactory) -> Ed25519PrivateKey:
    """Load a private key written by ``generate_signing_key``."""
    try:
        key = serialization.load_pem_private_key(read_secret(path, error), password=None)
    except ValueError as exc:
        raise error(str(path), f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise error(str(path), "is not an Ed25519 key")
    return key
