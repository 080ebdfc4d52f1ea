"""The pure TLS helpers both ends share: which addresses count as this machine."""

from __future__ import annotations

import pytest

from proto.tls import is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.3.4.5:1", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("10.0.0.7:50051", False),
        ("core.example.net:50051", False),
        ("[2001:db8::1]:50051", False),
    ],
)
def test_only_addresses_on_this_machine_count_as_loopback(address, loopback):
    """Plaintext is warned about everywhere else, including the wildcard address."""
    assert is_loopback(address) is loopback
