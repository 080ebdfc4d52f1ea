"""ACCEPTED means durable: a batch the core acknowledged survives the database crashing at once.

The test cluster runs with ``synchronous_commit = off``, as some production servers do for
speed; the core's writing transactions must turn it on for themselves.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fix_db import core_dsn, running_cluster, set_up
from fix_services import BIN, wait_until
from pgcluster import PostgresCluster, free_loopback_port
from signed_batches import AGENT, KEY, answer, payload, seal, send

from core_ingest import agents
from core_ingest.schema import NATIVE
from proto import public_key_bytes

pytestmark = pytest.mark.integration
CRASHES = 5


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own: it is crashed and restarted."""
    yield from running_cluster(timescaledb=False)


def stored_batches(dsn: str) -> set[int]:
    with psycopg.connect(dsn) as conn:
        return {seq for (seq,) in conn.execute("SELECT sequence FROM batches").fetchall()}


def test_an_accepted_batch_survives_an_immediate_database_crash(cluster, tmp_path: Path):
    """Each batch acknowledged, then the database crashed at once: every one is there after."""
    dsn = cluster.create_database("durability")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        set_up(dsn, NATIVE)
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()))
    target = f"127.0.0.1:{free_loopback_port()}"
    core = subprocess.Popen(
        [str(BIN / "core-ingest"), "serve", "--dsn", core_dsn(dsn), "--listen", target],
        stderr=(tmp_path / "core.log").open("w"),
    )
    try:
        accepted = []
        for sequence in range(1, CRASHES + 1):
            batch = seal(payload(readings=2_000, interval=sequence), sequence=sequence)
            acks = wait_until(
                lambda batch=batch: _accepted(target, batch), timeout=60, what="an ACCEPTED"
            )
            accepted.append(acks)
            cluster.crash()  # right after the answer: nothing else may flush the WAL
            cluster.restart()
        assert stored_batches(dsn) == set(range(1, CRASHES + 1))
    finally:
        core.terminate()
        core.wait(10)


def _accepted(target: str, batch) -> int | None:
    """The batch's sequence once the core answers ACCEPTED (None while it cannot store)."""
    try:
        (ack,) = send(target, batch)
    except Exception:  # noqa: BLE001 - the core may still be starting: try again
        return None
    return ack.sequence if answer(ack) == "ACK_STATUS_ACCEPTED" else None
