"""Transformer telemetry: schema checks that name the field, duplicates, range, rate, stuck."""

from __future__ import annotations

import json
import re

import pytest

from edge_agent.transforms.telemetry import (
    Malformed,
    Message,
    TelemetryPoint,
    TelemetryValidator,
    decode,
)
from proto.quality import QualityFlag as Q

GOOD = {
    "schema": "meterpipe.transformer-telemetry/1",
    "transformer_id": "T1",
    "time": "2026-11-02T00:01:00Z",
    "seq": 1,
    "ambient_c": 10.0,
    "top_oil_c": 40.0,
    "hot_spot_c": 50.0,
    "load_current_a": {"L1": 300.0, "L2": 301.0, "L3": 299.5},
    "tap_position": 9,
    "gases_ppm": {
        "H2": 15.0,
        "CH4": 8.0,
        "C2H6": 5.0,
        "C2H4": 3.0,
        "C2H2": 0.2,
        "CO": 250.0,
        "CO2": 2200.0,
    },
}


def payload(**changes) -> bytes:
    document = {**GOOD, **changes}
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def test_a_good_message_becomes_fourteen_points():
    message = decode(payload(), transformer="T1")
    assert (message.seq, message.time_ms) == (1, 1_793_577_660_000)
    points = {p.metric: p.value for p in message.points}
    assert len(points) == 14
    assert points["top_oil_c"] == 40.0
    assert points["load_current_l2_a"] == 301.0
    assert points["c2h2_ppm"] == 0.2


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b"\xff\xfeTEMP=40", "not JSON"),
        (b'{"schema": "meterpipe', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (payload(schema="other/1"), "schema"),
        (payload(transformer_id="T2"), "transformer_id"),
        (payload(seq=0), "seq"),
        (payload(time=None), "time"),
        (payload(time="yesterday"), "time"),
        (payload(top_oil_c="hot"), "top_oil_c"),
        (payload(tap_position=9.5), "tap_position"),
        (payload(load_current_a={"L1": 1}), "load_current_a.L2"),
        (payload(gases_ppm=None), "gases_ppm"),
        (json.dumps({"firmware": "2.3.1"}).encode(), "schema"),
    ],
)
def test_malformed_messages_name_what_is_wrong(raw, names):
    with pytest.raises(Malformed, match=names):
        decode(raw, transformer="T1")


def test_an_unmapped_topic_is_malformed():
    with pytest.raises(Malformed, match="not mapped"):
        decode(payload(), transformer="", topic="grid/x/y")


def taken(validator: TelemetryValidator, message: Message) -> list[TelemetryPoint] | None:
    """Validate ``message`` and, when not a repeat, adopt it as the agent does after its commit."""
    points = validator.validate(message)
    if points is not None:
        validator.adopt(message)
    return points


def test_repeated_sequence_numbers_are_dropped_even_out_of_order():
    validator = TelemetryValidator()
    first, second = (decode(payload(seq=s), transformer="T1") for s in (1, 2))
    assert taken(validator, second) is not None
    assert taken(validator, first) is not None  # late, not a duplicate
    assert taken(validator, second) is None
    assert taken(validator, first) is None


def test_a_message_not_committed_is_judged_again_when_it_comes_again():
    """A message is adopted only after its commit: one whose commit failed is no duplicate.

    Nor are its values the reference for the next message's rate-of-change check.
    """
    validator = TelemetryValidator()
    first = decode(payload(seq=1, top_oil_c=40.0), transformer="T1")
    assert validator.validate(first) is not None  # the commit then fails: nothing adopted
    again = validator.validate(first)
    assert again is not None
    assert again == validator.validate(first)
    later = decode(payload(seq=2, time="2026-11-02T00:02:00Z", top_oil_c=70.0), transformer="T1")
    flags = {p.metric: p.quality_flags for p in validator.validate(later) or []}
    assert flags["top_oil_c"] == 0  # 30 degrees in a minute, but from nothing adopted
    validator.adopt(first)
    flags = {p.metric: p.quality_flags for p in validator.validate(later) or []}
    assert flags["top_oil_c"] == Q.RATE_OF_CHANGE


def test_range_rate_and_stuck_rules():
    validator = TelemetryValidator()

    def flags_at(minute: int, **values) -> dict[str, int]:
        message = decode(
            payload(
                seq=minute + 1,
                time=f"2026-11-02T{minute // 60:02d}:{minute % 60:02d}:00Z",
                **values,
            ),
            transformer="T1",
        )
        return {p.metric: p.quality_flags for p in taken(validator, message) or []}

    assert flags_at(0)["top_oil_c"] == 0
    assert flags_at(1, top_oil_c=55.0)["top_oil_c"] == Q.RATE_OF_CHANGE  # 15 degrees a minute
    assert flags_at(2, top_oil_c=200.0)["top_oil_c"] & Q.OUT_OF_RANGE
    stuck = [flags_at(3 + i, ambient_c=10.0)["ambient_c"] for i in range(62)]
    assert stuck[0] == 0
    assert stuck[-1] == Q.STUCK


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b'"top_oil_c": NaN', "top_oil_c must be a finite number, got nan"),
        (b'"top_oil_c": Infinity', "top_oil_c must be a finite number, got inf"),
        (b'"top_oil_c": -Infinity', "top_oil_c must be a finite number, got -inf"),
        (b'"top_oil_c": 1e999', "top_oil_c must be a finite number, got inf"),
        (b'"top_oil_c": 1' + b"0" * 400, "top_oil_c must be a finite number, got 1000"),
    ],
)
def test_non_finite_numbers_are_malformed(raw, names):
    """JSON as Python reads it allows NaN and Infinity literals: no sensor measures them."""
    text = payload(top_oil_c=None).replace(b'"seq": 1', b'"seq": 1, ' + raw)
    with pytest.raises(Malformed, match=re.escape(names)):
        decode(text, transformer="T1")
