"""The buffer cap: telemetry is shed first, interval polling pauses, no billing data is lost."""

from __future__ import annotations

import json
import subprocess
import threading

import psycopg
import pytest
from fix_db import core_dsn
from fix_services import BIN, core_healthy, stop_process, stored_and_sent, wait_until
from pgcluster import free_loopback_port

from core_ingest.schema import TIMESCALEDB

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
METERS = 300
INTERVALS = 40
TOPIC = "grid/North/N-S01/N-S01-T1/telemetry"


def test_a_full_buffer_sheds_telemetry_pauses_polling_and_loses_no_interval(
    simulator, mosquitto, agent_setup, storage_dsn, tmp_path
):
    """A 1 MiB buffer with the core away: telemetry thinned, polling paused, nothing lost.

    Alarms are logged and shown by status. When the core returns every interval arrives, read
    back from the concentrator's history, exactly once.
    """
    sim = simulator(meters=METERS, mqtt_port=mosquitto)
    target = f"127.0.0.1:{free_loopback_port()}"
    extra = (
        f'\n[buffer]\nmax_bytes = 1048576\n\n[mqtt]\nhost = "127.0.0.1"\n'
        f'port = {mosquitto}\n\n[[mqtt.transformers]]\ntopic = "{TOPIC}"\n'
        'transformer_id = "N-S01-T1"\n'
    )
    agent = agent_setup(core=target, modbus_port=sim.port, extra=extra)
    process = agent.run()
    core = None
    log = agent.folder / "agent.log"
    try:
        wait_until(lambda: "subscribed" in log.read_text(), timeout=30, what="subscription")
        clock = threading.Thread(target=lambda: sim.run_clock(speed=1_800, intervals=INTERVALS))
        clock.start()
        wait_until(
            lambda: "-> paused" in log.read_text(),
            timeout=120,
            what="the buffer to fill up and polling to pause",
        )
        status = json.loads(agent.command("status").stdout)
        assert status["pressure"] == "paused", status
        assert status["fill"] > 0.2
        doctor = agent.command("doctor", "--json")
        assert doctor.returncode == 1, doctor.stderr
        fill = next(f for f in json.loads(doctor.stdout)["findings"] if f["subject"] == "fill")
        assert fill["state"] == "action", fill
        assert "pressure paused" in fill["seen"]
        assert "polling paused" in fill["seen"]
        assert "get batches delivered" in fill["todo"]
        clock.join(timeout=120)
        core = subprocess.Popen(
            [str(BIN / "core-ingest"), "serve", "--dsn", core_dsn(storage_dsn), "--listen", target],
            stderr=(tmp_path / "core.log").open("w"),
        )
        wait_until(lambda: core_healthy(target), timeout=30, what="core to start")

        wait_until(
            lambda: stored_and_sent(storage_dsn)[0] >= METERS * INTERVALS,
            timeout=180,
            what="every interval, read back after the pause",
        )
    finally:
        stop_process(process)
        if core is not None:
            stop_process(core)
    text = log.read_text()
    assert "-> shedding" in text
    assert stored_and_sent(storage_dsn) == (METERS * INTERVALS, METERS * INTERVALS)
    with psycopg.connect(storage_dsn) as conn:
        minutes = conn.execute("SELECT count(DISTINCT time) FROM transformer_telemetry").fetchone()[
            0
        ]
    assert minutes < INTERVALS * 15  # some telemetry was shed
