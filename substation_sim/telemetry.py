"""Transformer telemetry over MQTT: topics, JSON payloads and their fault variants.

docs/mqtt-topics.md documents the topics and the payload schema; this module is what the
simulator publishes. Publishing is at-least-once (QoS 1) to a broker the scenario names.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from substation_sim.thermal import Reading

PAYLOAD_SCHEMA = "meterpipe.transformer-telemetry/1"
MALFORMED_VARIANTS = ("truncated", "not_json", "wrong_type", "missing_field", "unknown_field_only")


def topic(prefix: str, region: str, substation: str, transformer: str) -> str:
    """``<prefix>/<region>/<substation>/<transformer>/telemetry``."""
    return f"{prefix}/{region}/{substation}/{transformer}/telemetry"


def payload(reading: Reading, sequence: int) -> bytes:
    """The JSON document for one reading (keys in a fixed order, UTF-8)."""
    l1, l2, l3 = reading.currents_a
    return json.dumps(
        {
            "schema": PAYLOAD_SCHEMA,
            "transformer_id": reading.transformer,
            "time": dt.datetime.fromtimestamp(reading.time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seq": sequence,
            "ambient_c": reading.ambient_c,
            "top_oil_c": reading.top_oil_c,
            "hot_spot_c": reading.hot_spot_c,
            "load_current_a": {"L1": l1, "L2": l2, "L3": l3},
            "tap_position": reading.tap_position,
            "gases_ppm": reading.gases_ppm,
        },
        separators=(",", ":"),
    ).encode()


def malformed(good: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """A broken version of ``good`` and the name of the way it is broken."""
    variant = str(rng.choice(MALFORMED_VARIANTS))
    document = json.loads(good)
    if variant == "truncated":
        return good[: len(good) // 2], variant
    if variant == "not_json":
        return b"\xff\xfeTEMP=" + str(document["top_oil_c"]).encode(), variant
    if variant == "wrong_type":
        document["top_oil_c"] = "hot"
    elif variant == "missing_field":
        del document["time"]
    else:
        document = {"firmware": "2.3.1"}
    return json.dumps(document).encode(), variant
