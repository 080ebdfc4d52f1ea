"""The audit question over real batches: everything that touched one meter's data."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from fix_services import governance
from pgcluster import CORE_LOGIN
from signed_batches import AGENT, FIRST_END, KEY, meter, payload, seal, send

from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from proto import public_key_bytes
from proto.quality import QualityFlag

pytestmark = pytest.mark.integration

ESTIMATED = int(QualityFlag.ESTIMATED)
PERIOD = ("--from", "2026-01-01", "--to", "2027-01-01")
ROTATED = bytes(range(32))


@pytest.fixture
def history(storage_dsn, core_server):
    """Meter 2: an estimate then its read value, a conflicting copy, a key rotation, a read."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()), substation="N-S01")
    # The core writes as postgres here: left out of read auditing (and must be, on TimescaleDB).
    enabled = governance("audit", "enable-reads", "--loader", CORE_LOGIN, "--dsn", storage_dsn)
    assert enabled.returncode == 0, enabled.stderr
    # One send each: the core commits a stream's batches concurrently, these in order.
    send(
        core_server,
        seal(payload(energy=[100, 110, 90, 130], flags=[0, 0, ESTIMATED, 0]), sequence=1),
    )
    send(core_server, seal(payload(meters=[2], energy=120), sequence=2))
    send(core_server, seal(payload(interval=1), sequence=3))
    # another value for a stored read value: quarantined, never stored over it
    send(core_server, seal(payload(meters=[2], energy=999), sequence=4))
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pseudonym_map VALUES (%s, %s, 'k1', 'k2', %s, 5, 1)",
            (meter(2), ROTATED, AGENT),
        )
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'analyst_ben'").fetchone():
            conn.execute("CREATE ROLE analyst_ben LOGIN")  # roles are the cluster's
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst_ben")
    reader = storage_dsn.replace("postgres@", "analyst_ben@")
    with psycopg.connect(reader, autocommit=True) as conn:
        # a literal, as an analyst types it: the statement names the meter
        named = "SELECT * FROM meter_readings_continuous WHERE meter = '\\x" + meter(2).hex() + "'"  # noqa: S608 - a constant pseudonym
        conn.execute(named).fetchall()
        conn.execute("SELECT count(*) FROM meter_readings").fetchone()
    return storage_dsn


def test_the_report_answers_the_audit_question_for_one_meter(history):
    """Found by its new pseudonym: everything about its data, its reads among them.

    Readings, producers, the correction, the quarantined copy, the rotation, the rollups,
    and the reads of personal data, the one naming the meter picked out.
    """
    done = governance(
        "trace", "subject", "--pseudonym", ROTATED.hex(), *PERIOD, "--format", "json",
        "--dsn", history,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["meter"]["pseudonyms"] == [meter(2).hex()]
    readings = found["readings"]
    assert (readings["stored"], readings["read"], readings["estimated"]) == (2, 2, 0)
    assert readings["batches"] == 2
    assert [p["validation_ruleset"] for p in found["producers"]] == ["vee-1"]
    assert [c["estimated_energy_wh"] for c in found["corrections"]] == [90]
    assert [(q["energy_wh"], q["reason"]) for q in found["quarantined"]] == [
        (999, "conflicts-with-stored")
    ]
    assert [(r["old_key_id"], r["new_key_id"]) for r in found["rotations"]] == [("k1", "k2")]
    assert (found["rollups"]["hourly"], found["rollups"]["substation"]) == (
        len({(FIRST_END - 900) // 3600, FIRST_END // 3600}),
        "N-S01",
    )
    assert found["reads_unavailable"] is None
    relations = {(r["user"], r["relation"]) for r in found["reads"]}
    assert ("analyst_ben", "public.meter_readings") in relations
    assert [r["user"] for r in found["reads_naming"]] == ["analyst_ben"] * len(
        found["reads_naming"]
    )
    assert found["reads_naming"]
    assert any(c["action"] == "readings.update" for c in found["changes"])  # the correction


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # the formats, not the storage
def test_markdown_and_html_say_the_same(history, tmp_path):
    markdown = governance(
        "trace", "subject", "--pseudonym", meter(2).hex(), *PERIOD, "--dsn", history
    )
    assert markdown.returncode == 0, markdown.stderr
    text = markdown.stdout
    assert text.startswith(f"# Data of meter {meter(2).hex()[:16]}")
    for heading in (
        "## Readings", "## How they were produced", "## Estimates replaced by read values",
        "## Values set aside", "## Key rotations", "## Rollups", "## Access",
    ):  # fmt: skip
        assert heading in text
    assert "| 2026-" in text  # a table row with a time
    page = tmp_path / "subject.html"
    html = governance(
        "trace", "subject", "--pseudonym", meter(2).hex(), *PERIOD, "--format", "html",
        "--out", str(page), "--dsn", history,
    )  # fmt: skip
    assert html.returncode == 0, html.stderr
    body = page.read_text()
    assert "<h2>Estimates replaced by read values</h2>" in body
    assert body.count("<h2>") == text.count("\n## ")
    missing = governance("trace", "subject", "--pseudonym", "ab" * 32, *PERIOD, "--dsn", history)
    assert missing.returncode == 1
    assert "no stored meter has the pseudonym" in missing.stderr


@pytest.mark.parametrize("storage", [TIMESCALEDB])  # the formats, not the storage
def test_a_period_without_data_says_so(history):
    quiet = governance(
        "trace", "subject", "--pseudonym", meter(2).hex(), "--from", "2020-01-01",
        "--to", "2020-02-01", "--format", "json", "--dsn", history,
    )  # fmt: skip
    found = json.loads(quiet.stdout)
    assert found["readings"]["stored"] == 0
    assert found["corrections"] == found["quarantined"] == []
    assert dt.datetime.fromisoformat(found["start"]).year == 2020
