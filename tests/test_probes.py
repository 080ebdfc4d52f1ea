"""The technician's probes against the simulator: probe modbus, probe mqtt, once, tail.

Every figure a probe prints is checked against what the simulator recorded serving.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import threading
import time

import aiomqtt
import pytest
from fix_services import BIN, stop_process, wait_until
from pgcluster import free_loopback_port

from core_ingest.schema import TIMESCALEDB
from edge_agent.probe import mask_serial

TOPIC = "grid/North/N-S01/N-S01-T1/telemetry"


def _edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edge-agent"), *args], capture_output=True, text=True, check=False
    )


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def test_probe_modbus_decodes_the_header_the_clock_and_the_first_records(simulator):
    """Records as served, serials shown by their last four digits; raw registers on request."""
    sim = simulator(meters=10)
    end = sim.close_interval()
    result = _edge_agent("probe", "modbus", f"127.0.0.1:{sim.port}", "--unit", "1")
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["header"]["meter_count"] == 10
    assert probe["header"]["last_interval_end"] == _utc(end)
    assert abs(probe["clock_offset_s"]) < 1.5
    served = {mask_serial(r.serial): r for r in sim.served() if r.interval_end == end}
    assert len(probe["records"]) == 3
    for record in probe["records"]:
        assert len(record["serial"]) >= 4
        assert record["serial"].startswith("*")
        reading = served[record["serial"]]
        assert (record["interval_end"], record["energy_wh"], record["register_wh"]) == (
            _utc(end),
            reading.energy_wh,
            reading.register_wh,
        )
    raw = json.loads(
        _edge_agent(
            "probe", "modbus", f"127.0.0.1:{sim.port}", "--address", "0", "--count", "8"
        ).stdout
    )
    assert raw["registers"][:2] == [1, 10]  # map version, meter count
    assert raw["records"] == []
    torn = _edge_agent(
        "probe", "modbus", f"127.0.0.1:{sim.port}", "--address", "104", "--count", "8"
    )
    assert torn.returncode == 2  # part of a record would show a serial in clear: refused
    assert "read whole records" in torn.stderr


def test_probe_modbus_names_an_unreachable_device():
    """Nothing listening: exit 1 and the kind of failure."""
    result = _edge_agent("probe", "modbus", f"127.0.0.1:{free_loopback_port()}", "--timeout", "1")
    assert result.returncode == 1
    assert json.loads(result.stdout)["kind"] == "unreachable"


def test_probe_mqtt_shows_each_message_and_what_the_agent_would_do_with_it(
    simulator, mosquitto, tmp_path
):
    """The simulator's telemetry checked ok; a malformed payload named as quarantined."""
    sim = simulator(meters=5, mqtt_port=mosquitto)
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        '[agent]\nid = "probe"\nsigning_key_file = "k"\n[pseudonymization]\nkey_file = "p"\n'
        'key_id = "x"\n[uplink]\ntarget = "127.0.0.1:1"\n[[sources.modbus]]\nname = "c"\n'
        f'host = "127.0.0.1"\n[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto}\n'
        f'[[mqtt.transformers]]\ntopic = "{TOPIC}"\ntransformer_id = "N-S01-T1"\n'
    )
    probe = subprocess.Popen(
        [str(BIN / "edge-agent"), "probe", "mqtt", "--config", str(config), "--seconds", "8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # let it subscribe; what arrives before is simply not shown

    async def publish_garbage() -> None:
        async with aiomqtt.Client("127.0.0.1", port=mosquitto) as client:
            await client.publish(TOPIC, b"not json", qos=1)

    clock = threading.Thread(target=lambda: sim.run_clock(speed=900, intervals=2))
    clock.start()
    asyncio.run(publish_garbage())
    clock.join(timeout=60)
    out, _ = probe.communicate(timeout=60)
    assert probe.returncode == 0
    messages = json.loads(out)["messages"]
    checks = [m["check"] for m in messages if m["topic"] == TOPIC]
    assert any(c.startswith("ok: ") for c in checks), checks
    assert any(c.startswith("would be quarantined: not JSON") for c in checks), checks
    assert {m["transformer"] for m in messages} == {"N-S01-T1"}


@pytest.mark.parametrize("storage", [pytest.param(TIMESCALEDB, marks=pytest.mark.integration)])
def test_once_reads_every_held_interval_keeps_nothing_and_tail_follows_what_is_sealed(
    simulator, agent_setup, core_server
):
    """``once`` shows what would be sealed without writing; ``tail`` then shows it sealed."""
    sim = simulator(meters=4)
    ends = [sim.close_interval() for _ in range(3)]
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    result = agent.command("once")
    assert result.returncode == 0, result.stderr
    cycle = json.loads(result.stdout)
    (device,) = cycle["devices"]
    assert [i["interval_end"] for i in device["intervals"]] == [_utc(end) for end in ends]
    assert [i["from_history"] for i in device["intervals"]] == [True, True, False]
    assert device["readings"] == 12 == cycle["would_seal"]["readings"]
    assert device["by_quality"] == {"read": 12}
    assert cycle["sent"] is False
    assert not (agent.folder / "buffer.sqlite").exists()  # nothing kept

    process = agent.run()
    try:
        wait_until((agent.folder / "buffer.sqlite").exists, timeout=30, what="the buffer")
        tail = subprocess.Popen(
            [str(BIN / "edge-agent"), "tail", "--config", str(agent.config_path),
             "--from-sequence", "1"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            lines = [tail.stdout.readline() for _ in range(12)]  # type: ignore[union-attr]
        finally:
            stop_process(tail)
    finally:
        stop_process(process)
    served = {
        (dt.datetime.fromtimestamp(r.interval_end, dt.UTC).strftime("%m-%d %H:%M"), r.energy_wh)
        for r in sim.served()
    }
    seen = set()
    for line in lines:
        fields = line.split()
        assert fields[2] == "conc-1", line
        assert fields[-1] == "read", line
        seen.add((f"{fields[4]} {fields[5]}", int(fields[6])))
    assert len(served) == 12
    assert seen == served
