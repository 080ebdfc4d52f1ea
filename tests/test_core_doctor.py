"""``core-ingest doctor`` and the operator's views, against a real core and database.

An agent that sends, one enrolled that never does (silent), one whose batches are refused (a
key that is not the enrolled one), a core with its metrics; then the database down.
"""

from __future__ import annotations

import contextlib
import json
import subprocess

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_db import operator_dsn
from fix_services import BIN, serving_core, wait_until
from pgcluster import free_loopback_port
from signed_batches import AGENT, KEY, answer, seal, send

from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from proto.diagnosis import ACTION, OK
from proto.envelope import public_key_bytes

pytestmark = pytest.mark.integration


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "core-ingest"), "doctor", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("storage", [TIMESCALEDB])
def test_silent_agents_refused_batches_and_each_core_are_found(storage_dsn, tmp_path):
    """Each finding with its advice; the views say the same from psql."""
    metrics = f"127.0.0.1:{free_loopback_port()}"
    config = tmp_path / "core.toml"
    config.write_text(f'[metrics]\nlisten = "{metrics}"\n')
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()))
        for other in ("refused-1", "silent-1"):
            agents.enroll(conn, other, public_key_bytes(Ed25519PrivateKey.generate().public_key()))
    with contextlib.contextmanager(serving_core)(
        storage_dsn, tmp_path / "core.log", "--config", str(config)
    ) as core:
        assert [answer(a) for a in send(core, seal(sequence=1), seal(sequence=3))] == [
            "ACK_STATUS_ACCEPTED"
        ] * 2
        refused = [seal(sequence=n, agent_id="refused-1") for n in (1, 2)]
        assert {answer(a) for a in send(core, *refused)} == {"REJECT_REASON_BAD_SIGNATURE"}
        wait_until(  # counted as the core answers, written within a second
            lambda: _refusals(storage_dsn) == 2, timeout=30, what="the refusals recorded"
        )
        result = _doctor("--dsn", operator_dsn(storage_dsn), "--metrics", metrics, "--json")
        screen = _doctor("--dsn", operator_dsn(storage_dsn), "--metrics", metrics)
    assert result.returncode == 1, result.stderr
    found = {f["subject"]: f for f in json.loads(result.stdout)["findings"]}
    assert found["PostgreSQL"]["state"] == OK
    assert "TimescaleDB" in found["PostgreSQL"]["seen"]
    assert found["schema"]["state"] == OK
    assert found["silent-1"]["state"] == ACTION
    assert "never sent a batch" in found["silent-1"]["seen"]
    assert found["refused-1"]["state"] == ACTION
    assert "batches refused: 2 BAD_SIGNATURE" in found["refused-1"]["seen"]
    assert "edge-agent resend" in found["refused-1"]["todo"]
    assert AGENT not in found  # heard from, nothing refused
    assert "1 of 3 agents sent in the last hour" in found["latency"]["seen"]
    assert found[metrics]["state"] == OK
    assert "connections busy" in found[metrics]["seen"]
    assert max(len(line) for line in screen.stdout.splitlines()) <= 80
    # silent-1 is silent; refused-1 is silent too (nothing of it was ever stored) and refused
    assert screen.stdout.splitlines()[-1] == "3 findings need action (FIX)."

    with psycopg.connect(operator_dsn(storage_dsn)) as conn:
        activity = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT agent_id, batches_last_hour, sequence_gaps, refused_batches,"
                " latency_p95_s > 0 FROM agent_activity"
            )
        }
        silent = [row[0] for row in conn.execute("SELECT agent_id FROM silent_agents")]
    assert activity[AGENT] == (2, 1, 0, True)  # sequence 2 never arrived: a gap
    assert activity["refused-1"][2] >= 1
    assert sorted(silent) == ["refused-1", "silent-1"]


def _refusals(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(refusals), 0) FROM batch_refusals").fetchone()
    return int(row[0]) if row else 0


def test_a_database_down_and_a_core_not_answering_need_action():
    """Nothing listens where the database and the core's metrics should be."""
    dsn = f"postgresql://nobody@127.0.0.1:{free_loopback_port()}/meters"
    metrics = f"127.0.0.1:{free_loopback_port()}"
    result = _doctor("--dsn", dsn, "--metrics", metrics, "--json")
    assert result.returncode == 1
    found = {f["subject"]: f for f in json.loads(result.stdout)["findings"]}
    assert found["PostgreSQL"]["state"] == ACTION
    assert found["PostgreSQL"]["seen"].startswith("unreachable:")
    assert found[metrics]["state"] == ACTION
    assert "systemctl status core-ingest" in found[metrics]["todo"]
