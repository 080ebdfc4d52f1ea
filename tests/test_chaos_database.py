"""Chaos: the database stopped under load (immediate shutdown), then started: nothing lost.

The simulator's clock runs (an interval a second) while the agent streams to a core whose
database is stopped as a crash would stop it, kept down, then started on its files. The core
answers STORAGE_UNAVAILABLE meanwhile, the agent keeps polling into its buffer, and the core
heals on its own (no restart). Afterwards every reading served is in the database exactly once,
as served, read. ``MP_CHAOS=full``: down 60 s; the test suite: 6 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from chaos_runs import CHAOS, run_and_drain
from fix_db import running_cluster, set_up
from fix_services import start_core, stop_process
from pgcluster import PostgresCluster, free_loopback_port
from scorecard import assert_clean, scaled

pytestmark = CHAOS
METERS = 300
DOWN_S = scaled(6, 60)


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own: it is crashed and started again."""
    yield from running_cluster(timescaledb=True)


@pytest.fixture
def storage_dsn(cluster: PostgresCluster, storage: str) -> str:
    """The test's database on its own cluster (the agent is enrolled there too)."""
    return set_up(cluster.create_database("chaos"), storage)


def test_the_database_stopped_under_load_then_started(
    cluster, simulator, agent_setup, storage_dsn, tmp_path
):
    target = f"127.0.0.1:{free_loopback_port()}"
    core = start_core(storage_dsn, target, tmp_path / "core.log")
    sim = simulator(meters=METERS)
    agent = agent_setup(core=target, modbus_port=sim.port)

    def stop_the_database() -> str:
        time.sleep(3)
        cluster.crash()
        time.sleep(DOWN_S)
        cluster.restart()
        return f"the database stopped (immediate shutdown) for {DOWN_S} s under load"

    try:
        card = run_and_drain(
            sim, agent, storage_dsn, intervals=DOWN_S + 12, chaos=stop_the_database
        )
        assert core.poll() is None, "the core did not survive the outage"
    finally:
        stop_process(core)
    assert_clean(card)
