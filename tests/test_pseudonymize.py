"""Pseudonyms: keyed, stable, and free of the serial."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from edge_agent.sources.register_map import MeterRecord
from edge_agent.transforms.pseudonymize import Pseudonymizer

KEY = bytes(range(32))


def test_pseudonym_is_hmac_sha256_of_the_decimal_serial():
    """The documented construction, so the core's data stewards can rely on it."""
    expected = hmac.new(KEY, b"4000100042", hashlib.sha256).digest()
    assert Pseudonymizer(key=KEY, key_id="k").pseudonym(4_000_100_042) == expected


def test_same_serial_same_pseudonym_other_key_other_pseudonym():
    """Stable for one key (history stays joined), unlinkable across keys."""
    one = Pseudonymizer(key=KEY, key_id="k1")
    other = Pseudonymizer(key=bytes(32), key_id="k2")
    assert one.pseudonym(7) == one.pseudonym(7)
    assert one.pseudonym(7) != other.pseudonym(7)
    assert one.pseudonym(7) != one.pseudonym(8)


def test_applied_reading_carries_no_serial():
    """The pseudonymous reading has no field that holds the serial."""
    record = MeterRecord(
        serial=4_000_100_042, interval_end=900, energy_wh=5, register_wh=9, quality_flags=0
    )
    reading = Pseudonymizer(key=KEY, key_id="k").apply(record, poll_time_ms=1, device="d")
    assert "serial" not in reading._fields
    assert 4_000_100_042 not in reading
    assert b"4000100042" not in reading.meter
    assert len(reading.meter) == 32
    assert (reading.interval_end, reading.energy_wh, reading.register_wh) == (900, 5, 9)


def test_empty_key_id_is_refused():
    """Every batch must name its key; an empty id is a configuration error."""
    with pytest.raises(ValueError, match="key_id"):
        Pseudonymizer(key=KEY, key_id="")
