"""PostgreSQL fixtures: one cluster with TimescaleDB preloaded and one plain, per test session.

Each test gets a fresh, migrated database in the cluster of its storage parameter, so the
integration tests that take ``storage_dsn`` run on TimescaleDB and on plain PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest
from pgcluster import (
    CORE_LOGIN,
    OPERATOR_LOGIN,
    OWNER_LOGIN,
    PostgresCluster,
    as_login,
    free_loopback_port,
)

from core_ingest.schema import NATIVE, TIMESCALEDB, migrate
from core_ingest.schema.dictionary import load_dictionary
from governance import access

_database_names = itertools.count(1)


def running_cluster(*, timescaledb: bool) -> Iterator[PostgresCluster]:
    """A new cluster on a free port, started; stopped and deleted after use."""
    cluster = PostgresCluster(port=free_loopback_port(), timescaledb=timescaledb)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def timescale_cluster() -> Iterator[PostgresCluster]:
    """A cluster with TimescaleDB preloaded (when installed; ``empty_dsn`` fails without it)."""
    yield from running_cluster(timescaledb=True)


@pytest.fixture(scope="session")
def plain_cluster() -> Iterator[PostgresCluster]:
    """A cluster without any extension: native partitioning only."""
    yield from running_cluster(timescaledb=False)


@pytest.fixture(params=[TIMESCALEDB, NATIVE])
def storage(request: pytest.FixtureRequest) -> str:
    """Each test that uses it runs twice: on TimescaleDB and on native partitioning."""
    return request.param


def cluster_of(storage: str, request: pytest.FixtureRequest) -> PostgresCluster:
    """The session's cluster for ``storage``."""
    if storage == TIMESCALEDB:
        cluster = request.getfixturevalue("timescale_cluster")
        if not cluster.timescaledb:
            pytest.fail("TimescaleDB is not installed: run scripts/install-timescaledb.sh")
        return cluster
    return request.getfixturevalue("plain_cluster")


@pytest.fixture
def empty_dsn(storage: str, request: pytest.FixtureRequest) -> str:
    """A new empty database in the cluster matching ``storage``."""
    return cluster_of(storage, request).create_database(f"test_{next(_database_names)}")


@pytest.fixture
def storage_dsn(storage: str, request: pytest.FixtureRequest) -> str:
    """A new database set up as a deployment sets it up (``set_up``); the superuser's DSN.

    Copied from a template set up once per cluster: a copy takes a third of the time of
    migrating, and is the same database.
    """
    cluster = cluster_of(storage, request)
    return cluster.create_database(
        f"test_{next(_database_names)}", template=_template(cluster, storage)
    )


_templates: set[tuple[int, str]] = set()


def _template(cluster: PostgresCluster, storage: str) -> str:
    """The cluster's set-up template database for ``storage``, made on first use.

    A template must have no connection when copied: it is closed to new ones and TimescaleDB's
    job scheduler, which connects to every database that allows it, is ended.
    """
    name = f"template_{storage.replace('-', '_')}"
    if (cluster.port, name) not in _templates:
        set_up(cluster.create_database(name), storage)
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        _templates.add((cluster.port, name))
    return name


def set_up(dsn: str, storage: str) -> str:
    """Set up an empty database as a deployment does; return ``dsn`` (the superuser's).

    Its owner migrates it to the current schema with ``storage``, then ``governance access
    init`` grants the objects: the core connects as ``core_dsn(...)``, a member of ``ingest``,
    and an operator as ``operator_dsn(...)``, a member of ``operations``. Tests look at
    anything through ``dsn``.
    """
    with psycopg.connect(as_login(dsn, OWNER_LOGIN), autocommit=True) as conn:
        migrate(conn, storage=storage)
    with psycopg.connect(dsn, autocommit=True) as conn:
        access.init(conn, load_dictionary())
        if not access.show(conn, CORE_LOGIN):  # memberships are the cluster's: once
            access.grant(conn, CORE_LOGIN, "ingest")
            access.grant(conn, OPERATOR_LOGIN, "operations")
    return dsn


def core_dsn(dsn: str) -> str:
    """The core's DSN for a database of ``storage_dsn``: the ``ingest`` member's login."""
    return as_login(dsn, CORE_LOGIN)


def operator_dsn(dsn: str) -> str:
    """An operator's DSN for a database of ``storage_dsn``: an ``operations`` member's login."""
    return as_login(dsn, OPERATOR_LOGIN)


def store_one_reading(dsn: str, storage: str) -> str:
    """One reading on 2026-01-01 (its daily partition created under native partitioning).

    Returns the chunk or partition holding it, as the catalog names it.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        if storage == NATIVE:
            conn.execute(
                "CREATE TABLE meter_readings_p20260101 PARTITION OF meter_readings"
                " FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-01-02 00:00+00')"
            )
        conn.execute(
            "INSERT INTO meter_readings (meter_id, interval_end, energy_wh, register_wh,"
            " quality_flags, poll_time, batch_id, device_no, region_id)"
            " VALUES (1, '2026-01-01 00:15+00', 1, 1, 0, '2026-01-01 00:16+00', 1, 1, 1)"
        )
        conn.execute("ANALYZE")
        return conn.execute(
            "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'meter_readings'::regclass LIMIT 1"
        ).fetchone()[0]
