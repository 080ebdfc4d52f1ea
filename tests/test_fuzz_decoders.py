"""Fuzzing every decoder of outside input: no crash, no hang, a clear error naming the input.

Hypothesis drives each with what a broken or hostile peer could send: MQTT payloads (bytes at
random, and the documented message with any field replaced by any JSON value), signed batches
(bytes at random; and validly signed payloads whose columns hold anything a protobuf can),
and the three configuration files (TOML with any value at any documented key, and bytes at
random). Each decoder either returns what it decodes or raises its own error type; anything
else is a crash the process would die of. Modbus replies are fuzzed in
``tests/test_poll_consistency.py`` against ``tests/doc_concentrator.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signed_batches import seal
from test_telemetry import GOOD

from core_ingest.config import load_config as load_core_config
from core_ingest.errors import ConfigError as CoreConfigError
from edge_agent.config import load_config as load_agent_config
from edge_agent.errors import ConfigError as AgentConfigError
from edge_agent.transforms.telemetry import Malformed, decode
from proto import EnvelopeError, open_batch, pb, read_header
from substation_sim.scenario import ScenarioError, load_scenario

KEY = Ed25519PrivateKey.generate()
T = TypeVar("T")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decoded(call: Callable[[], T], error: type[Exception]) -> T | Exception:
    """``call()``'s result, or the decoder's own error, which must say what is wrong."""
    try:
        return call()
    except error as exc:
        outcome: Exception = exc
    assert str(outcome), f"{error.__name__} without words"
    return outcome


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=2_000))
def test_any_bytes_as_an_mqtt_payload(raw):
    decoded(lambda: decode(raw, transformer="T1", topic="grid/North/N-S01/T1/telemetry"), Malformed)


@FUZZ
@given(st.sampled_from(sorted(GOOD)), json_values, st.booleans())
def test_the_documented_message_with_any_field_replaced_or_dropped(field, value, drop):
    document = dict(GOOD)
    if drop:
        del document[field]
    else:
        document[field] = value
    message = decoded(lambda: decode(json.dumps(document).encode(), transformer="T1"), Malformed)
    if not isinstance(message, Malformed):  # what passes is a message a store can hold
        assert all(math.isfinite(point.value) for point in message.points)
        assert 0 <= message.seq < 2**63


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=3_000), st.binary(max_size=80))
def test_any_bytes_as_a_signed_batch(header, payload, signature):
    batch = pb.SignedBatch(header=header, payload=payload, signature=signature)
    decoded(lambda: read_header(batch), EnvelopeError)
    decoded(lambda: open_batch(batch, KEY.public_key()), EnvelopeError)


def columns(draw: st.DrawFn, kind: st.SearchStrategy, size: int, *, exact: bool) -> list:
    """A column of ``size`` values, or (not ``exact``) sometimes one too few or many."""
    length = size if exact else draw(st.sampled_from([size, max(0, size - 1), size + 1, 0]))
    return draw(st.lists(kind, min_size=length, max_size=length))


int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
uint32 = st.integers(min_value=0, max_value=2**32 - 1)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)


def index(exact: bool, size: int) -> st.SearchStrategy[int]:  # noqa: FBT001 - as columns'
    """A reference into a list of ``size``: within it when ``exact``, anything otherwise."""
    return st.integers(min_value=0, max_value=max(0, size - 1)) if exact and size else uint32


@st.composite
def payloads(draw: st.DrawFn) -> pb.BatchPayload:
    """A BatchPayload whose columns hold anything; half of them of agreeing shape.

    Shapes that agree get past the envelope's checks to the value bounds and the store.
    """
    exact = draw(st.booleans())
    rows = draw(st.integers(min_value=0 if not exact else 1, max_value=6))
    body = pb.BatchPayload(devices=draw(st.lists(st.text(max_size=20), min_size=1, max_size=3)))
    table = body.meter_readings
    table.meters.extend(
        draw(st.lists(st.binary(min_size=30, max_size=34), min_size=1, max_size=rows + 1))
    )
    table.meter_index.extend(columns(draw, index(exact, len(table.meters)), rows, exact=exact))
    table.interval_end.extend(columns(draw, int64, rows, exact=exact))
    table.energy_wh.extend(columns(draw, int64, rows, exact=exact))
    table.register_wh.extend(columns(draw, uint64, rows, exact=exact))
    table.quality_flags.extend(columns(draw, uint32, rows, exact=exact))
    table.poll_time_ms.extend(columns(draw, int64, rows, exact=exact))
    table.device_index.extend(columns(draw, index(exact, len(body.devices)), rows, exact=exact))
    points = draw(st.integers(min_value=0, max_value=4))
    values = body.transformer_telemetry
    values.transformers.extend(draw(st.lists(st.text(max_size=12), min_size=1, max_size=2)))
    values.metrics.extend(draw(st.lists(st.text(max_size=12), min_size=1, max_size=2)))
    values.transformer_index.extend(
        columns(draw, index(exact, len(values.transformers)), points, exact=exact)
    )
    values.metric_index.extend(
        columns(draw, index(exact, len(values.metrics)), points, exact=exact)
    )
    values.time_ms.extend(columns(draw, int64, points, exact=exact))
    values.value.extend(columns(draw, st.floats(), points, exact=exact))
    values.quality_flags.extend(columns(draw, uint32, points, exact=exact))
    return body


@FUZZ
@given(payloads())
def test_validly_signed_payloads_with_any_columns(body):
    opened = decoded(
        lambda: open_batch(seal(body, agent_id="fuzz", key=KEY), KEY.public_key()), EnvelopeError
    )
    if isinstance(opened, EnvelopeError):
        return
    table = opened.payload.meter_readings  # what opens is one row per index, references held
    assert len({len(column) for column in (table.meter_index, table.interval_end,
                table.energy_wh, table.register_wh, table.quality_flags,
                table.poll_time_ms, table.device_index)}) == 1  # fmt: skip
    assert all(i < len(table.meters) for i in table.meter_index)
    assert all(i < len(opened.payload.devices) for i in table.device_index)


# The documented keys of each configuration file, by table, to put any value at.
AGENT_KEYS = {
    "agent": ["id", "signing_key_file"],
    "pseudonymization": ["key_file", "key_id"],
    "uplink": ["target", "batch_max_readings", "batch_max_age_seconds"],
    "buffer": ["path", "synchronous", "max_bytes", "retain_acknowledged_seconds"],
}
CORE_KEYS = {
    "database": ["dsn", "storage", "pool_size"],
    "server": ["listen", "batches_per_stream"],
}
SCENARIO_KEYS = {"scenario": ["name", "seed", "start", "speed"], "modbus": ["host", "base_port"]}
toml_values = st.recursive(
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def documents(keys: dict[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    """TOML documents: the documented tables, each key absent or holding any value."""
    return st.fixed_dictionaries(
        {
            table: st.fixed_dictionaries({}, optional=dict.fromkeys(names, toml_values))
            for table, names in keys.items()
        }
    )


CONFIG_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@CONFIG_FUZZ
@given(document=documents(AGENT_KEYS) | documents(CORE_KEYS) | documents(SCENARIO_KEYS))
def test_configuration_files_with_any_value_at_any_documented_key(document, tmp_path):
    path = tmp_path / "fuzz.toml"
    path.write_text(tomli_w.dumps(document))
    loaded_without_a_crash(path)


@CONFIG_FUZZ
@given(raw=st.binary(max_size=500))
def test_configuration_files_of_any_bytes(raw, tmp_path):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    loaded_without_a_crash(path)


def loaded_without_a_crash(path: Path) -> None:
    """Each program's loader either accepts the file or names what is wrong with it."""
    decoded(lambda: load_agent_config(path), AgentConfigError)
    decoded(lambda: load_core_config(path), CoreConfigError)
    decoded(lambda: load_scenario(path), ScenarioError)


@pytest.mark.parametrize("name", ["small", "storm"])
def test_the_shipped_scenarios_still_load(name):
    """The fuzzed loader is the one the simulator uses (a guard against fuzzing a stub)."""
    assert load_scenario(name).regions
