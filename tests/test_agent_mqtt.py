"""Transformer telemetry from the simulator over a real Mosquitto broker, through agent and core."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiomqtt
import psycopg
import pytest
from fix_services import mqtt_section, stop_process, wait_until

from core_ingest.schema import TIMESCALEDB
from edge_agent.agent import EdgeAgent
from edge_agent.config import MqttConfig, TransformerTopic, load_config
from edge_agent.keys import generate_pseudonym_key, generate_signing_key
from edge_agent.sources.mqtt import MqttSource
from edge_agent.transforms.telemetry import GASES, Malformed, decode

pytestmark = pytest.mark.integration
TOPIC = "grid/North/N-S01/N-S01-T1/telemetry"


def decoded_seq(payload: bytes) -> int | None:
    """The sequence number of a well-formed message, None for a malformed one."""
    try:
        return decode(payload, transformer="N-S01-T1").seq
    except Malformed:
        return None


@pytest.mark.parametrize("storage", [TIMESCALEDB])
def test_telemetry_arrives_once_and_bad_messages_wait_in_quarantine(
    simulator, mosquitto, core_server, agent_setup, storage_dsn
):
    """Duplicates stored once, malformed kept raw in the edge quarantine, the rest in the core."""
    faults = (
        {"kind": "duplicate", "start_hour": 0, "hours": 2, "share": 0.1},
        {"kind": "malformed", "start_hour": 0, "hours": 2, "share": 0.1},
        {"kind": "out_of_order", "start_hour": 0, "hours": 2, "share": 0.05},
    )
    sim = simulator(meters=20, faults=faults, mqtt_port=mosquitto)
    mqtt = mqtt_section(mosquitto, "N-S01-T1")
    agent = agent_setup(core=core_server, modbus_port=sim.port, extra=mqtt)
    process = agent.run()
    try:
        agent.wait_subscribed()
        sim.run_clock(speed=36_000, intervals=4)  # one simulated hour: 60 messages
        truth = sim.record.truth()
        malformed = sum(t.kind == "malformed" for t in truth)
        sent = [row[0] for row in sim.record._db.execute("SELECT payload FROM telemetry")]
        well_formed = {decoded_seq(payload) for payload in sent} - {None}
        assert len(well_formed) + malformed >= 59  # the last one may still be held back
        expected_points = len(well_formed) * 14

        def points() -> int:
            with psycopg.connect(storage_dsn) as conn:
                return conn.execute("SELECT count(*) FROM transformer_telemetry").fetchone()[0]

        wait_until(lambda: points() >= expected_points, timeout=60, what="telemetry stored")
        status = json.loads(agent.command("status").stdout)
    finally:
        stop_process(process)
    assert points() == expected_points
    assert status["quarantined"] == malformed > 0
    assert sum(t.kind == "duplicate" for t in truth) > 0
    with psycopg.connect(storage_dsn) as conn:
        distinct = conn.execute(
            "SELECT count(DISTINCT (time, metric)) FROM transformer_telemetry"
        ).fetchone()[0]
    assert distinct == expected_points


def session(port: int, client_id: str) -> MqttConfig:
    """The agent's MQTT source for TOPIC at QoS 1, with a persistent session as ``client_id``."""
    return MqttConfig(
        host="127.0.0.1",
        port=port,
        client_id=client_id,
        qos=1,
        transformers=[TransformerTopic(topic=TOPIC, transformer_id="N-S01-T1")],
    )


def test_a_message_not_yet_stored_is_delivered_again_after_a_crash(mosquitto):
    """Manual acknowledgement: a message whose handling failed comes back on reconnect."""
    config = session(mosquitto, "redelivery-test")
    seen: list[bytes] = []

    async def scenario() -> None:
        redelivered = asyncio.Event()

        async def crash_once(topic: str, transformer: str, payload: bytes) -> None:
            seen.append(payload)
            if len(seen) == 1:
                raise RuntimeError("power cut before the commit")
            redelivered.set()

        source = MqttSource(config)
        first = asyncio.create_task(source.run(crash_once))
        async with asyncio.timeout(10):
            while not source.connected:  # noqa: ASYNC110 - a flag the source sets
                await asyncio.sleep(0.05)
        async with aiomqtt.Client("127.0.0.1", port=mosquitto) as publisher:
            await publisher.publish(TOPIC, b"reading-1", qos=1)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(first, timeout=10)
        second = asyncio.create_task(source.run(crash_once))
        try:
            await asyncio.wait_for(redelivered.wait(), timeout=10)
        finally:
            second.cancel()

    asyncio.run(scenario())
    assert seen == [b"reading-1", b"reading-1"]


def test_messages_queued_while_away_are_acknowledged_only_once_stored(mosquitto):
    """What the broker kept for the session is not acknowledged on arrival at reconnect."""
    config = session(mosquitto, "queued-test")
    seen: list[bytes] = []

    async def scenario() -> None:
        async def ignore(topic: str, transformer: str, payload: bytes) -> None:
            return

        source = MqttSource(config)
        first = asyncio.create_task(source.run(ignore))  # subscribes: the session is kept
        async with asyncio.timeout(10):
            while not source.connected:  # noqa: ASYNC110 - a flag the source sets
                await asyncio.sleep(0.05)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        async with aiomqtt.Client("127.0.0.1", port=mosquitto) as publisher:
            for n in (1, 2):  # queued by the broker for the absent session
                await publisher.publish(TOPIC, f"queued-{n}".encode(), qos=1)

        async def crash_on_first(topic: str, transformer: str, payload: bytes) -> None:
            seen.append(payload)
            if len(seen) == 1:
                raise RuntimeError("power cut before the commit")

        with pytest.raises(RuntimeError):
            await asyncio.wait_for(MqttSource(config).run(crash_on_first), timeout=10)
        done = asyncio.Event()

        async def store(topic: str, transformer: str, payload: bytes) -> None:
            seen.append(payload)
            if b"queued-2" in payload:
                done.set()

        again = asyncio.create_task(MqttSource(config).run(store))
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
        finally:
            again.cancel()

    asyncio.run(scenario())
    assert seen[0] == b"queued-1"
    assert b"queued-1" in seen[1:], f"the unstored message was not redelivered: {seen}"


def telemetry_payload(seq: int, top_oil_c: float) -> bytes:
    """A message of the documented schema for N-S01-T1 (json writes NaN and Infinity as is)."""
    return json.dumps(
        {
            "schema": "meterpipe.transformer-telemetry/1",
            "transformer_id": "N-S01-T1",
            "time": f"2026-11-02T00:{seq:02d}:00Z",
            "seq": seq,
            "ambient_c": 10.0,
            "top_oil_c": top_oil_c,
            "hot_spot_c": 50.0,
            "load_current_a": {"L1": 300.0, "L2": 301.0, "L3": 299.5},
            "tap_position": 9,
            "gases_ppm": dict(zip(GASES, (15.0, 8.0, 5.0, 3.0, 0.2, 250.0, 2200.0), strict=True)),
        }
    ).encode()


def test_non_finite_telemetry_over_a_real_broker_is_quarantined_and_the_loop_goes_on(
    mosquitto, tmp_path
):
    """NaN and Infinity once crashed the MQTT loop in the buffer, and the message was lost.

    Now each goes to the edge quarantine as malformed, and the next message is stored.
    """
    generate_signing_key(tmp_path / "agent.key")
    generate_pseudonym_key(tmp_path / "pseudonym.key")
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        '[agent]\nid = "nan-test"\nsigning_key_file = "agent.key"\n'
        '[pseudonymization]\nkey_file = "pseudonym.key"\nkey_id = "k"\n'
        '[uplink]\ntarget = "127.0.0.1:1"\n'
        '[[sources.modbus]]\nname = "c"\nhost = "127.0.0.1"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto}\nclient_id = "nan-test"\n'
        f'[[mqtt.transformers]]\ntopic = "{TOPIC}"\ntransformer_id = "N-S01-T1"\n'
    )

    async def scenario() -> tuple[int, int, bool]:
        async with EdgeAgent(load_config(config)) as agent:
            assert agent.mqtt is not None
            loop = asyncio.create_task(agent.mqtt.run(agent.on_telemetry))
            async with asyncio.timeout(10):
                while not agent.mqtt.connected:  # noqa: ASYNC110 - a flag the source sets
                    await asyncio.sleep(0.05)
            async with aiomqtt.Client("127.0.0.1", port=mosquitto) as publisher:
                for seq, value in ((1, float("nan")), (2, float("inf")), (3, 40.0)):
                    await publisher.publish(TOPIC, telemetry_payload(seq, value), qos=1)
            async with asyncio.timeout(10):
                while (await agent.statistics()).pending_telemetry < 14:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # the buffer's count, read through the agent
            stats = await agent.statistics()
            alive = not loop.done()
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            return stats.pending_telemetry, stats.quarantined, alive

    assert asyncio.run(scenario()) == (14, 2, True)
