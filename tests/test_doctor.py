"""``edge-agent doctor``: each finding made for real, with its advice and the exit code.

Running agent: a concentrator whose clock is 60 s ahead, a dead device (nothing listens) and a
black hole (takes the connection, never answers), a healthy core. Stopped agent: the doctor
probes for itself and finds the core down, the broker down and a certificate expiring in 10
days. The full buffer is made in ``test_buffer_pressure``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from fix_services import mqtt_section, stop_process, wait_until
from pgcluster import free_loopback_port

from core_ingest.certificates import create_authority, issue_agent_certificate
from core_ingest.schema import TIMESCALEDB
from edge_agent.doctor import Diagnosis
from edge_agent.health import health_path, read_health
from proto.diagnosis import ACTION, OK, Finding

with_services = pytest.mark.parametrize(
    "storage", [pytest.param(TIMESCALEDB, marks=pytest.mark.integration)]
)
CLOCK_SKEW = {"kind": "clock_skew", "start_hour": 0, "hours": 1_000, "seconds": 60}


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that completes TCP handshakes and never answers a byte."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def _device(name: str, port: int) -> str:
    return (
        f'name = "{name}"\nhost = "127.0.0.1"\nport = {port}\nunit_id = 1\n'
        "timeout_seconds = 0.5\nretries = 0\npoll_interval_seconds = 0.2\nfailure_threshold = 2\n"
        "breaker_reset_seconds = 60\n"
    )


def _findings(stdout: str) -> dict[str, dict]:
    return {f["subject"]: f for f in json.loads(stdout)["findings"]}


@with_services
def test_a_running_agent_shows_a_dead_device_a_black_hole_and_a_clock_60_s_ahead(
    simulator, core_server, agent_setup, black_hole, mosquitto
):
    """Each failing device named with how it fails and what to do; exit code 1.

    The broker is up and one configured transformer publishes, the other never does.
    """
    sim = simulator(meters=5, faults=(CLOCK_SKEW,), mqtt_port=mosquitto)
    sim.close_interval()
    dead = free_loopback_port()
    agent = agent_setup(
        core=core_server,
        modbus_port=sim.port,
        extra_sources=(_device("dead", dead), _device("black-hole", black_hole)),
        extra=mqtt_section(mosquitto, "N-S01-T1", "N-S01-T9"),
    )
    process = agent.run()
    path = health_path(agent.folder / "buffer.sqlite")
    try:

        def seen_everything() -> bool:
            health = read_health(path)
            if health is None or not health.core.checked_ms:
                return False
            devices = {d.name: d for d in health.devices}
            mqtt = health.mqtt
            return (
                mqtt is not None
                and "N-S01-T1" in mqtt.last_message_ms
                and devices["conc-1"].last_good_ms > 0
                and devices["dead"].errors.get("unreachable", 0) > 0
                and devices["black-hole"].errors.get("no_reply", 0) > 0
            )

        agent.wait_subscribed()
        sim.run_clock(speed=900, intervals=1)  # a minute's telemetry, published
        wait_until(seen_everything, timeout=60, what="the health record to show every device")
        result = agent.command("doctor", "--json")
        screen = agent.command("doctor")
    finally:
        stop_process(process)
    after = json.loads(agent.command("doctor", "--json").stdout)
    assert after["agent_running"] is False  # its last record says it stopped in order
    assert "not running (stopped " in _findings(json.dumps(after))["edge-agent"]["seen"]
    assert result.returncode == 1, result.stderr
    found = _findings(result.stdout)
    assert json.loads(result.stdout)["agent_running"] is True
    assert found["conc-1"]["state"] == ACTION
    assert "60 s ahead of the gateway's" in found["conc-1"]["seen"]
    assert "set the concentrator's clock" in found["conc-1"]["todo"]
    assert found["dead"]["state"] == ACTION
    assert "unreachable since" in found["dead"]["seen"]
    assert f"edge-agent probe modbus 127.0.0.1:{dead} --unit 1" in found["dead"]["todo"]
    assert found["black-hole"]["state"] == ACTION
    assert "not answering (connects, no reply)" in found["black-hole"]["seen"]
    assert "breaker open, next try" in found["black-hole"]["seen"]
    assert found[core_server]["state"] == OK
    assert found["gateway"]["state"] == OK  # the core's clock is this machine's
    assert found[f"127.0.0.1:{mosquitto}"]["seen"] == "connected"
    assert found["N-S01-T1"]["state"] == OK
    assert "last message" in found["N-S01-T1"]["seen"]
    assert found["N-S01-T9"]["state"] == "warn"
    assert "no message since the agent started" in found["N-S01-T9"]["seen"]
    assert screen.returncode == 1
    lines = screen.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, screen.stdout
    assert lines[-1] == "3 findings need action (FIX)."
    assert any(line.startswith("  FIX   dead: 127.0.0.1:") for line in lines), screen.stdout


@with_services
def test_a_stopped_agent_is_probed_core_down_broker_down_certificate_expiring(
    simulator, agent_setup, tmp_path
):
    """Without the agent the doctor asks devices, broker and core itself, and finds each."""
    sim = simulator(meters=5)
    sim.close_interval()
    authority = tmp_path / "ca"
    create_authority(authority)
    issued = issue_agent_certificate(authority, agent_id="substation-test-1", days=10)
    core = f"127.0.0.1:{free_loopback_port()}"
    broker = free_loopback_port()
    agent = agent_setup(
        core=core,
        modbus_port=sim.port,
        uplink=f'[uplink.tls]\nca = "{authority}/ca.crt"\ncert = "{issued.certificate}"\n'
        f'key = "{issued.key}"\n',
        extra=f'\n[mqtt]\nhost = "127.0.0.1"\nport = {broker}\n\n[[mqtt.transformers]]\n'
        'topic = "grid/North/N-S01/N-S01-T1/telemetry"\ntransformer_id = "N-S01-T1"\n',
    )
    result = agent.command("doctor", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    found = _findings(result.stdout)
    assert report["agent_running"] is False
    assert found["edge-agent"]["state"] == ACTION
    assert "systemctl start edge-agent" in found["edge-agent"]["todo"]
    assert found["conc-1"]["state"] == OK
    assert "answers, 5 meters" in found["conc-1"]["seen"]
    assert "within a second of the gateway's" in found["conc-1"]["seen"]
    assert found[core]["state"] == ACTION
    assert "core unreachable" in found[core]["seen"]
    assert found[f"127.0.0.1:{broker}"]["state"] == ACTION
    assert "systemctl status mosquitto" in found[f"127.0.0.1:{broker}"]["todo"]
    certificate = found[str(issued.certificate)]
    assert certificate["state"] == ACTION
    assert "(9 d from now)" in certificate["seen"] or "(10 d from now)" in certificate["seen"]
    assert "core-ingest ca issue-agent" in certificate["todo"]


def test_the_screen_fits_80_columns_and_says_what_needs_action():
    """Long findings wrap under their tag; the last line counts what needs action."""
    diagnosis = Diagnosis(
        "a-very-long-agent-identifier-for-a-substation-gateway",
        1_790_000_000_000,
        agent_running=True,
        findings=[
            Finding("device", "conc-" + "x" * 60, ACTION, "y " * 80, "z " * 70),
            Finding("buffer", "fill", OK, "3% of 512.0 MB used"),
        ],
    )
    lines = diagnosis.screen().splitlines()
    assert max(map(len, lines)) <= 80
    devices = lines.index("DEVICES")
    assert lines[devices + 1].startswith("  FIX   conc-")
    assert any(line.startswith("        -> z z") for line in lines)
    assert lines[-1] == "1 finding needs action (FIX)."
