"""Roles, least privilege: each group role reads and writes what the dictionary says, no more.

Logins connect as members of each role and try the tables, the views, a chunk or partition
directly, COPY and the audit function.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from fix_db import store_one_reading
from fix_services import governance
from pgcluster import OWNER_LOGIN
from signed_batches import AGENT, KEY, answer, payload, seal, send

from core_ingest import agents
from core_ingest.schema import NATIVE, TIMESCALEDB
from proto import public_key_bytes

pytestmark = pytest.mark.integration

ROLES = ("ingest", "analyst", "data_scientist", "operations", "steward", "auditor")
READ = {
    "region_daily": {"analyst", "data_scientist", "operations", "steward", "ingest"},
    "substation_daily": {"analyst", "data_scientist", "operations", "steward", "ingest"},
    "meter_readings": {"data_scientist", "operations", "ingest"},  # ingest: upserts read
    "reading_lineage": {"data_scientist", "operations"},
    "meters": {"data_scientist", "operations", "ingest"},
    "audit_log": {"operations", "steward", "auditor", "ingest"},
    "batches": {"operations", "steward", "auditor", "ingest"},
}


def can(dsn: str, statement: str) -> bool:
    """Whether the login may run ``statement`` (in a transaction rolled back)."""
    with psycopg.connect(dsn) as conn:
        try:
            if statement.startswith("COPY"):
                with conn.cursor().copy(statement) as copy:
                    for _ in copy:
                        pass
            else:
                conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()
    return True


@pytest.fixture
def logins(storage_dsn, storage):
    """A login per group role, after access init, and a partition or chunk holding a reading."""
    part = store_one_reading(storage_dsn, storage)
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        for role in ROLES:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (f"{role}_login",))
            if not exists.fetchone():
                conn.execute(f"CREATE ROLE {role}_login LOGIN")  # roles are the cluster's
    done = governance("access", "init", "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(storage_dsn, autocommit=True) as conn:  # the CLI's grant: tested below
        for role in ROLES:
            conn.execute(f"GRANT {role} TO {role}_login")
        conn.execute("ALTER ROLE ingest_login BYPASSRLS")  # as `access grant --role ingest` does
    return {role: storage_dsn.replace("postgres@", f"{role}_login@") for role in ROLES}, part


def test_each_role_reads_what_its_class_allows(logins):
    dsns, _part = logins
    readers = {
        obj: {
            role
            for role, dsn in dsns.items()
            if can(dsn, f"SELECT * FROM {obj} LIMIT 1")  # noqa: S608 - names from READ
        }
        for obj in READ
    }
    assert readers == READ


def test_writes_chunks_copy_functions_and_ddl(logins):
    """Only the writers write, and no role changes the schema.

    A chunk or partition read directly, COPY and the audit function follow the same rules.
    """
    dsns, part = logins
    insert = (
        "INSERT INTO meter_readings (meter_id, interval_end, energy_wh, register_wh,"
        " quality_flags, poll_time, batch_id, device_no, region_id)"
        " VALUES (2, '2026-01-01 00:15+00', 1, 1, 0, '2026-01-01 00:16+00', 1, 1, 1)"
    )
    assert {r for r, d in dsns.items() if can(d, insert)} == {"ingest"}
    assert not any(can(d, "DELETE FROM meter_readings") for d in dsns.values())
    assert {r for r, d in dsns.items() if can(d, "INSERT INTO agents (agent_id, public_key,"
            " substation) VALUES ('x', sha256('x'), 'S')")} == {"operations"}  # fmt: skip
    direct = f"SELECT * FROM {part}"  # noqa: S608 - the catalog's name for it
    chunk_readers = {r for r, d in dsns.items() if can(d, direct)}
    assert chunk_readers <= READ["meter_readings"]  # never more than through the table
    assert "analyst" not in chunk_readers
    copiers = {
        r for r, d in dsns.items() if can(d, "COPY (SELECT * FROM meter_readings) TO STDOUT")
    }
    assert copiers == READ["meter_readings"]
    auditing = {r for r, d in dsns.items() if can(d, "SELECT audit_append('x', 'y', '{}')")}
    assert auditing == {"ingest", "data_scientist", "operations", "steward", "auditor"}
    assert not any(can(d, "CREATE TABLE mine (x int)") for d in dsns.values())
    assert not any(can(d, "UPDATE audit_log SET actor = 'x'") for d in dsns.values())


def test_grant_revoke_show_and_clear_errors(logins, storage_dsn):
    dsns, _part = logins
    shown = json.loads(governance("access", "show", "--json", "--dsn", storage_dsn).stdout)
    assert {m["login"]: m["roles"] for m in shown}["analyst_login"] == ["analyst"]
    revoked = governance(
        "access", "revoke", "--login", "analyst_login", "--role", "analyst", "--dsn", storage_dsn
    )
    assert revoked.returncode == 0, revoked.stderr
    assert not can(dsns["analyst"], "SELECT * FROM region_daily")
    unknown = governance(
        "access", "grant", "--login", "nobody_here", "--role", "analyst", "--dsn", storage_dsn
    )
    assert unknown.returncode == 1
    assert "no login 'nobody_here'" in unknown.stderr
    with psycopg.connect(storage_dsn) as conn:
        actions = [
            r[0]
            for r in conn.execute(
                "SELECT action FROM audit_log WHERE action LIKE 'access.%' ORDER BY entry_id"
            ).fetchall()
        ]
    assert actions[0] == "access.init"
    assert actions[-1] == "access.revoke"
    governance(
        "access", "grant", "--login", "analyst_login", "--role", "analyst", "--dsn", storage_dsn
    )


@pytest.mark.parametrize("storage", [NATIVE])  # TimescaleDB makes its chunks itself
def test_ingest_makes_daily_partitions_without_ddl_rights_and_nothing_else(logins, storage_dsn):
    """The core's partitions come from a function with the owner's rights, for ingest only."""
    dsns, _part = logins
    day = "SELECT ensure_daily_partition('meter_readings', '2026-01-03')"
    assert {r for r, d in dsns.items() if can(d, day)} == {"ingest"}
    with psycopg.connect(dsns["ingest"]) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="agents"):
            conn.execute("SELECT ensure_daily_partition('agents', '2026-01-03')")
        conn.rollback()
        conn.execute(day)
        conn.commit()
    with psycopg.connect(storage_dsn) as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'meter_readings_p20260103'"
        ).fetchone()
    assert owner == (OWNER_LOGIN,)  # the schema's owner, not ingest


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # grants work alike on both storages
def test_a_batch_refused_for_missing_grants_waits_for_access_init(
    storage_dsn, core_server, tmp_path
):
    """A migration not followed by `access init`: the batch is retried, not lost, and goes in."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()))
        conn.execute("REVOKE INSERT ON meter_readings FROM ingest")  # as a new table would be
    batch = seal(payload(readings=3), sequence=1)
    assert [answer(a) for a in send(core_server, batch)] == ["REJECT_REASON_STORAGE_UNAVAILABLE"]
    log = (tmp_path / "core.log").read_text()
    assert "permission denied for table meter_readings" in log
    assert "run `governance access init`" in log
    assert governance("access", "init", "--dsn", storage_dsn).returncode == 0
    assert [answer(a) for a in send(core_server, batch)] == ["ACK_STATUS_ACCEPTED"]
