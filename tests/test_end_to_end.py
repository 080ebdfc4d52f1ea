"""One reading's whole path: simulator → edge agent → core → database, on real services."""

from __future__ import annotations

import hashlib
import hmac
import json

import psycopg
import pytest
from fix_services import stop_process, stored_readings, wait_until

pytestmark = pytest.mark.integration

METERS = 1_000
INTERVALS = 4


def test_every_served_reading_is_stored_once_even_when_every_batch_is_sent_again(
    simulator, core_server, agent_setup, storage_dsn
):
    """1,000 meters x 4 intervals arrive exactly as served; re-sending all batches adds nothing."""
    sim = simulator(meters=METERS)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    process = agent.run()
    try:
        for interval in range(1, INTERVALS + 1):
            sim.close_interval()
            wait_until(
                lambda n=interval: stored_readings(storage_dsn) >= n * METERS,
                timeout=60,
                what=f"interval {interval} in the database",
            )
    finally:
        stop_process(process)

    served = sim.served()
    assert len(served) == METERS * INTERVALS
    expected = {
        (
            hmac.digest(agent.pseudonym_key, str(r.serial).encode(), hashlib.sha256),
            r.interval_end,
            r.energy_wh,
            r.register_wh,
        )
        for r in served
    }
    with psycopg.connect(storage_dsn) as conn:
        rows = conn.execute(
            "SELECT m.pseudonym, extract(epoch FROM interval_end)::bigint, energy_wh, register_wh"
            " FROM meter_readings JOIN meters m USING (meter_id)"
        ).fetchall()
        batches = conn.execute("SELECT count(*) FROM batches").fetchone()[0]
        rulesets = conn.execute("SELECT DISTINCT validation_ruleset FROM batches").fetchall()
    assert len(rows) == METERS * INTERVALS
    assert {(bytes(m), e, w, r) for m, e, w, r in rows} == expected
    assert rulesets == [("vee-1",)]  # every flag traceable to the ruleset that set it

    resent = agent.command("resend", "--from-sequence", "1")
    assert resent.returncode == 0, resent.stderr
    answers = json.loads(resent.stdout)
    assert answers == {"sent": batches, "answers": {"duplicate": batches}}, resent.stdout
    assert stored_readings(storage_dsn) == METERS * INTERVALS


def test_no_meter_serial_reaches_the_buffer_the_wire_or_the_database(
    simulator, core_server, agent_setup, storage_dsn
):
    """No serial past the agent's memory: not in the buffer, the sent batches or the database.

    Sent batches are kept in the buffer for resend, so scanning the buffer covers the wire too.
    """
    sim = simulator(meters=200)
    agent = agent_setup(core=core_server, modbus_port=sim.port)
    process = agent.run()
    try:
        sim.close_interval()
        wait_until(
            lambda: stored_readings(storage_dsn) >= 200, timeout=60, what="the interval stored"
        )
    finally:
        stop_process(process)
    serials = {r.serial for r in sim.served()}
    needles = {str(s).encode() for s in serials} | {s.to_bytes(8, "big") for s in serials}
    files = [p for p in agent.folder.iterdir() if p.name.startswith("buffer.sqlite")]
    assert files
    for path in files:
        content = path.read_bytes()
        assert not [n for n in needles if n in content], path.name
    with psycopg.connect(storage_dsn) as conn:
        raw = b"".join(bytes(m) for (m,) in conn.execute("SELECT pseudonym FROM meters"))
        text = "".join(
            row
            for (row,) in conn.execute(
                "SELECT t::text FROM meter_readings t UNION ALL SELECT b::text FROM batches b"
                " UNION ALL SELECT m::text FROM meters m"
            )
        ).encode()
    assert len(raw) == 200 * 32
    assert not [n for n in needles if n in raw or n in text]
