"""Rotating the edge's pseudonymization key keeps each meter's central history joined."""

from __future__ import annotations

import json

import psycopg
import pytest
from fix_services import stop_process, stored_readings, wait_until

from core_ingest.schema import NATIVE
from edge_agent.keys import generate_pseudonym_key

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [NATIVE])]
METERS = 100


def test_history_stays_continuous_across_a_key_rotation(
    simulator, core_server, agent_setup, storage_dsn
):
    """Interval 1 under key 1, interval 2 under key 2: one current pseudonym per meter."""
    sim = simulator(meters=METERS)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    process = agent.run()
    try:
        sim.close_interval()
        wait_until(lambda: stored_readings(storage_dsn) >= METERS, timeout=30, what="interval 1")
    finally:
        stop_process(process)
    generate_pseudonym_key(agent.folder / "pseudonym-2.key")
    rotated = agent.command(
        "rotate-pseudonym-key",
        "--new-key-file",
        str(agent.folder / "pseudonym-2.key"),
        "--new-key-id",
        "test-key-2",
    )
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["meters_mapped"] == METERS
    refused = agent.command("check-config")
    assert refused.returncode == 78
    assert "rotate-pseudonym-key" in refused.stderr
    old_run = agent.run()
    old_run.wait(timeout=30)
    assert old_run.returncode == 1
    assert "rotate-pseudonym-key" in (agent.folder / "agent.log").read_text()
    config = agent.config_path.read_text()
    agent.config_path.write_text(
        config.replace('key_file = "pseudonym.key"', 'key_file = "pseudonym-2.key"').replace(
            'key_id = "test-key-1"', 'key_id = "test-key-2"'
        )
    )
    process = agent.run()
    try:
        sim.close_interval()
        wait_until(
            lambda: stored_readings(storage_dsn) >= 2 * METERS, timeout=30, what="interval 2"
        )
    finally:
        stop_process(process)
    with psycopg.connect(storage_dsn) as conn:
        raw = conn.execute("SELECT count(DISTINCT meter_id) FROM meter_readings").fetchone()[0]
        joined = conn.execute(
            "SELECT count(DISTINCT meter_now), min(n), max(n) FROM ("
            " SELECT meter_now, count(*) AS n FROM meter_readings_continuous GROUP BY meter_now) m"
        ).fetchone()
        keys = conn.execute("SELECT DISTINCT pseudonym_key_id FROM batches ORDER BY 1").fetchall()
    assert raw == 2 * METERS  # stored values keep the pseudonym they arrived with
    assert joined == (METERS, 2, 2)  # ... and each meter's two intervals join up
    assert keys == [("test-key-1",), ("test-key-2",)]
