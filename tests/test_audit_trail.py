"""The audit trail: written by the database, closed to changes, and tampering found.

`governance audit verify` names the entry each tampering touched; sealed heads catch a
rewrite of the whole chain.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from fix_services import governance
from pgcluster import CORE_LOGIN, OPERATOR_LOGIN, OWNER_LOGIN
from signed_batches import AGENT, KEY, payload, seal, send

from core_ingest import agents
from core_ingest.schema import MIGRATIONS, NATIVE, TIMESCALEDB
from proto import public_key_bytes

pytestmark = pytest.mark.integration
# What a fresh migrate appends: one entry per migration, and the dictionary's version.
# The migrations, the dictionary's version, `access init` and the logins of the core and the
# operator made members (tests/fix_db.py sets each cluster's template database up so).
SET_UP = len(MIGRATIONS) + 4

REWRITE_FROM_3 = """
DO $$
DECLARE r record; previous bytea;
BEGIN
    SELECT hash INTO previous FROM audit_log WHERE entry_id = 2;
    FOR r IN SELECT * FROM audit_log WHERE entry_id >= 3 ORDER BY entry_id LOOP
        UPDATE audit_log SET previous_hash = previous,
            hash = sha256(previous || convert_to(audit_entry_text(r.entry_id, r.at, r.actor,
                r.application, r.action, r.object, r.detail), 'UTF8'))
        WHERE entry_id = r.entry_id RETURNING hash INTO previous;
    END LOOP;
END $$
"""


def actions(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT entry_id, action, object FROM audit_log ORDER BY 1").fetchall()


def as_owner(dsn: str, *statements: str) -> None:
    """What only the owner or a superuser can do: with the triggers off."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement)
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


def test_migrations_batches_and_deletions_are_recorded_and_the_chain_holds(
    storage_dsn, core_server
):
    """Every migration, a committed batch (its ledger digest), and a deletion of readings."""
    migrated = actions(storage_dsn)
    assert [(a, o) for _, a, o in migrated] == [("schema.migrate", "schema")] * len(MIGRATIONS) + [
        ("dictionary.version", "dictionary"),
        ("access.init", "roles"),
        ("access.grant", CORE_LOGIN),
        ("access.grant", OPERATOR_LOGIN),
    ]
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()))
    send(core_server, seal(payload(readings=5), sequence=1))
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM meter_readings WHERE meter_id = (SELECT min(meter_id) FROM meters)"
        )
        header = conn.execute("SELECT header_sha256 FROM batches").fetchone()[0]
        detail = conn.execute(
            "SELECT detail FROM audit_log WHERE action = 'batch.ingest'"
        ).fetchone()[0]
    assert [(a, o) for _, a, o in actions(storage_dsn)[SET_UP:]] == [
        ("batch.ingest", f"{AGENT}/1"),
        ("readings.delete", "meter_readings"),
    ]
    assert detail["header_sha256"] == bytes(header).hex()
    assert (detail["readings"], detail["readings_stored"], detail["estimates_replaced"]) == (
        5,
        5,
        0,
    )
    verified = governance("audit", "verify", dsn=storage_dsn)
    assert verified.returncode == 0, verified.stderr
    assert f"audit trail intact: {SET_UP + 2} entries" in verified.stdout


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"]
)
def test_no_role_changes_or_removes_an_entry_while_the_triggers_stand(storage_dsn, statement):
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        count = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    assert count == SET_UP


@pytest.mark.parametrize(
    ("tampering", "says"),
    [
        (["UPDATE audit_log SET actor = 'mallory' WHERE entry_id = 3"], "entry 3 was changed"),
        (
            ["UPDATE audit_log SET detail = detail || '{\"version\": 99}' WHERE entry_id = 3"],
            "entry 3 was changed",
        ),
        (["DELETE FROM audit_log WHERE entry_id = 3"], "entry 3 is missing"),
        (
            [
                "UPDATE audit_log SET entry_id = entry_id + 1000 WHERE entry_id IN (3, 4)",
                "UPDATE audit_log SET entry_id = 1007 - entry_id WHERE entry_id > 1000",
            ],
            "entry 3 does not follow entry 2",
        ),
        (
            [
                "DELETE FROM audit_log WHERE entry_id >= 3",
                (
                    "INSERT INTO audit_log SELECT 3, now(), 'mallory', '', 'schema.migrate',"
                    " 'schema', '{}', hash, hash FROM audit_log WHERE entry_id = 2"
                ),
            ],
            "entry 3 was changed",
        ),
    ],
    ids=["actor", "detail", "deleted", "reordered", "forged"],
)
@pytest.mark.parametrize("storage", [TIMESCALEDB])  # the trail is a plain table on either
def test_verify_names_the_entry_each_tampering_touched(storage_dsn, tampering, says):
    """Whoever can switch the triggers off is still found out, at the entry touched."""
    as_owner(storage_dsn, *tampering)
    done = governance("audit", "verify", dsn=storage_dsn)
    assert done.returncode == 1
    assert says in done.stderr, done.stderr


def test_a_rewritten_chain_is_found_by_the_sealed_heads(storage_dsn, tmp_path):
    """Recomputing every hash after a change fools the chain, not a head sealed before."""
    key = tmp_path / "seal.key"
    made = governance("audit", "keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    assert (key.stat().st_mode & 0o777) == 0o600
    heads = tmp_path / "heads"
    sealed = governance("audit", "seal", "--key", str(key), "--out", str(heads), dsn=storage_dsn)
    assert sealed.returncode == 0, sealed.stderr
    sealed_entry = SET_UP + 1
    assert f"entry {sealed_entry} sealed" in sealed.stdout
    trusted = ["--anchors", str(heads), "--public-key", f"{key}.pub"]
    intact = governance("audit", "verify", *trusted, dsn=storage_dsn)
    assert intact.returncode == 0, intact.stderr
    assert "1 of 1 sealed heads matched" in intact.stdout

    as_owner(
        storage_dsn, "UPDATE audit_log SET actor = 'mallory' WHERE entry_id = 3", REWRITE_FROM_3
    )
    assert governance("audit", "verify", dsn=storage_dsn).returncode == 0  # the chain alone holds
    caught = governance("audit", "verify", *trusted, dsn=storage_dsn)
    assert caught.returncode == 1
    assert f"entry {sealed_entry} is not the entry sealed at" in caught.stderr

    as_owner(storage_dsn, "DELETE FROM audit_log WHERE action = 'audit.seal'")
    cut = governance("audit", "verify", *trusted, dsn=storage_dsn)
    assert f"entry {sealed_entry} was sealed at" in cut.stderr
    assert f"is gone: the trail ends at entry {sealed_entry - 1}" in cut.stderr


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # the heads are files; storage is moot
def test_a_head_signed_by_another_key_is_refused(storage_dsn, tmp_path):
    """Heads count only when the trusted sealing key signed them."""
    for name in ("ours", "theirs"):
        assert governance("audit", "keygen", "--out", str(tmp_path / name)).returncode == 0
    heads = tmp_path / "heads"
    governance(
        "audit", "seal", "--key", str(tmp_path / "theirs"), "--out", str(heads), dsn=storage_dsn
    )
    done = governance(
        "audit", "verify", "--anchors", str(heads), "--public-key", str(tmp_path / "ours.pub"),
        dsn=storage_dsn,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not signed by the trusted sealing key" in done.stderr


def test_report_counts_actions_by_actor_and_lists_governance_actions(storage_dsn, tmp_path):
    """The catalog sync and the seal are listed in full; migrations counted."""
    assert governance("catalog", "sync", dsn=storage_dsn).returncode == 0
    governance("audit", "keygen", "--out", str(tmp_path / "k"))
    governance(
        "audit", "seal", "--key", str(tmp_path / "k"), "--out", str(tmp_path), dsn=storage_dsn
    )
    done = governance("audit", "report", "--json", dsn=storage_dsn)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    counts = {(c["action"], c["actor"]): c["entries"] for c in found["counts"]}
    assert counts[("schema.migrate", OWNER_LOGIN)] == len(MIGRATIONS)  # the schema's owner
    assert counts[("access.init", "postgres")] == 1  # the administrator
    assert counts[("catalog.sync", "postgres")] == 1
    listed = [a["action"] for a in found["actions"]]
    assert listed[-2:] == ["catalog.sync", "audit.seal"]
    assert found["actions"][-2]["detail"]["comments"] > 100
    text = governance("audit", "report", dsn=storage_dsn)
    assert "ingest: 0 batches" in text.stdout
    assert "catalog.sync" in text.stdout
    assert len(list(tmp_path.glob("audit-head-*.json"))) == 1


def test_reads_of_personal_data_by_role_come_from_pgaudit(storage_dsn, tmp_path):
    """A login's reads of readings and the lineage view are reported, not a technical table."""
    enabled = governance("audit", "enable-reads", "--loader", CORE_LOGIN, dsn=storage_dsn)
    assert enabled.returncode == 0, enabled.stderr
    assert "meter_readings" in enabled.stdout
    assert "agents" not in enabled.stdout.split(":", 1)[1]
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE analyst_anna LOGIN")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst_anna")
    reader = storage_dsn.replace("postgres@", "analyst_anna@")
    with psycopg.connect(reader, autocommit=True, application_name="notebook") as conn:
        conn.execute("SELECT count(*) FROM meter_readings WHERE meter_id = 3").fetchone()
        conn.execute("SELECT count(*) FROM meter_readings").fetchone()
        conn.execute("SELECT * FROM reading_lineage LIMIT 1").fetchall()
        conn.execute("SELECT count(*) FROM agents").fetchone()
    done = governance("audit", "report", "--json", dsn=storage_dsn)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["reads_unavailable"] is None
    by_relation = {
        r["relation"]: r["statements"] for r in found["reads"] if r["user"] == "analyst_anna"
    }
    assert by_relation["public.meter_readings"] == 3  # two queries, and the view's base table
    assert by_relation["public.reading_lineage"] == 1
    assert "public.agents" not in by_relation
    assert {r["application"] for r in found["reads"] if r["user"] == "analyst_anna"} == {"notebook"}
    assert found["actions"][-1]["action"] == "audit.reads.enable"
    text = governance("audit", "report", dsn=storage_dsn).stdout
    assert "analyst_anna  notebook" in text


@pytest.mark.parametrize("storage", [NATIVE])  # log files; the other storage reads the server's
def test_reads_from_a_copied_log_file_and_an_unreadable_server_log(storage_dsn, tmp_path):
    """A CSV log copied off the server is read as the server's.

    Without the rights to read the server's logs, the report says so instead of claiming
    nobody read anything.
    """
    log = tmp_path / "postgresql.csv"
    log.write_text(
        '2026-12-01 10:00:00.123 UTC,"dora","meters",1,"127.0.0.1:1",a.1,1,"SELECT",'
        '2026-12-01 10:00:00 UTC,4/1,0,LOG,00000,"AUDIT: OBJECT,1,1,READ,SELECT,TABLE,'
        'public.meters,SELECT * FROM meters,<not logged>",,,,,,,,,"psql","client backend",,0\n'
    )
    copied = governance(
        "audit", "report", "--json", "--from", "2026-12-01", "--to", "2026-12-02",
        "--pgaudit-log", str(log), dsn=storage_dsn,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["reads"] == [
        {
            "user": "dora",
            "application": "psql",
            "relation": "public.meters",
            "statements": 1,
            "first": "2026-12-01T10:00:00.123000+00:00",
            "last": "2026-12-01T10:00:00.123000+00:00",
        }
    ]
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE clerk LOGIN")
        conn.execute("GRANT SELECT ON audit_log TO clerk")
    denied = governance("audit", "report", dsn=storage_dsn.replace("postgres@", "clerk@"))
    assert denied.returncode == 0, denied.stderr
    assert "not available: cannot read the server's logs" in denied.stdout


def test_read_auditing_needs_the_loader_named_on_timescaledb(storage_dsn, storage):
    """On TimescaleDB the core's login must be left out of read auditing, and the refusal says why.

    pgaudit's object auditing crashes TimescaleDB's COPY (timescaledb#7667); native
    partitioning does not need it.
    """
    done = governance("audit", "enable-reads", dsn=storage_dsn)
    if storage == TIMESCALEDB:
        assert done.returncode == 1
        assert "timescale/timescaledb#7667" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
