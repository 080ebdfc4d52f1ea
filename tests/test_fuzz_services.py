"""Fuzzing the running processes: hostile input answered, and the process serves on.

The core gets streams of validly signed batches whose payloads hold anything a protobuf can
(``test_fuzz_decoders.payloads``): every one is answered (stored, or refused with a reason
other than INTERNAL, which would mean a bug of ours), and a well-formed batch from another
agent afterwards is stored. The agent gets MQTT messages of any bytes and any field values on
its transformer's topic: each is stored or quarantined with its reason, none ends the
subscription, and the well-formed message after them is stored.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_services import mqtt_section, stop_process, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt import publish
from signed_batches import answer, payload, seal, send
from test_fuzz_decoders import KEY, json_values, payloads
from test_telemetry import GOOD

from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from edge_agent.transforms.telemetry import Malformed, decode
from proto import public_key_bytes

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
SERVICE_FUZZ = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOPIC = "grid/North/N-S01/N-S01-T1/telemetry"
GOOD_TIME = "2026-11-03T00:00:00Z"  # no hostile message has it


def test_the_core_answers_any_signed_payload_and_serves_on(core_server, storage_dsn):
    neighbour = Ed25519PrivateKey.generate()
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, "fuzz", public_key_bytes(KEY.public_key()))
        agents.enroll(conn, "neighbour", public_key_bytes(neighbour.public_key()))
    sequences = iter(range(1, 10_000))
    answered: list[str] = []

    @SERVICE_FUZZ
    @given(bodies=st.lists(payloads(), min_size=25, max_size=25))
    def hostile_stream(bodies):
        batches = [
            seal(body, sequence=next(sequences), agent_id="fuzz", key=KEY) for body in bodies
        ]
        answered.extend(answer(ack) for ack in send(core_server, *batches))

    hostile_stream()
    assert len(answered) == 6 * 25
    assert "REJECT_REASON_INTERNAL" not in answered
    assert {"ACK_STATUS_ACCEPTED", "REJECT_REASON_MALFORMED"} <= set(answered)
    (good,) = send(core_server, seal(payload(readings=3), agent_id="neighbour", key=neighbour))
    assert answer(good) == "ACK_STATUS_ACCEPTED"


def hostile_messages() -> st.SearchStrategy[bytes]:
    """Any bytes, or the documented message with one field replaced by any JSON value."""
    replaced = st.builds(
        lambda field, value: json.dumps({**GOOD, "transformer_id": "N-S01-T1", field: value}),
        st.sampled_from(sorted(GOOD)),
        json_values,
    ).map(str.encode)
    return st.binary(max_size=300) | replaced


def test_the_agent_quarantines_any_mqtt_payload_and_serves_on(
    simulator, mosquitto, agent_setup, core_server, storage_dsn
):
    sim = simulator(meters=5)
    agent = agent_setup(
        core=core_server, modbus_port=sim.port, extra=mqtt_section(mosquitto, "N-S01-T1")
    )
    process = agent.run()
    sent: list[bytes] = []
    try:
        agent.wait_subscribed()

        @settings(max_examples=1, deadline=None, database=None)
        @given(messages=st.lists(hostile_messages(), min_size=200, max_size=200))
        def publish_hostile(messages):
            sent.extend(messages)
            publish.multiple(
                [(TOPIC, message, 1, False) for message in messages],
                hostname="127.0.0.1",
                port=mosquitto,
            )

        publish_hostile()
        good = {**GOOD, "transformer_id": "N-S01-T1", "seq": 10**9, "time": GOOD_TIME}
        publish.single(TOPIC, json.dumps(good), qos=1, hostname="127.0.0.1", port=mosquitto)

        def stored_good() -> bool:
            with psycopg.connect(storage_dsn) as conn:
                return bool(
                    conn.execute(
                        "SELECT 1 FROM transformer_telemetry WHERE time = %s",
                        (GOOD_TIME,),
                    ).fetchone()
                )

        wait_until(stored_good, timeout=60, what="the good message after the hostile ones")
        status = json.loads(agent.command("status").stdout)
    finally:
        stop_process(process)
    assert process.returncode in {0, -15}  # it was running until stopped
    assert "Traceback" not in (agent.folder / "agent.log").read_text()
    assert status["quarantined"] == sum(map(malformed, sent)) > 0  # each kept raw


def malformed(message: bytes) -> bool:
    """Whether the documented checks refuse ``message`` on the agent's topic."""
    try:
        decode(message, transformer="N-S01-T1", topic=TOPIC)
    except Malformed:
        return True
    return False
