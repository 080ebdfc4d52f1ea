"""`governance export`: what leaves is anonymized, measured and recorded, or nothing leaves.

Readings of two regions go in through a real core; a data scientist limited to North exports
them as the CLI is run, and the file, the exports record, the meters it included and the audit
entry are checked against each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from fix_services import governance
from pgcluster import as_login
from signed_batches import KEY, answer, meter, payload, seal, send

from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from governance import access
from governance.export_events import EXPORT_FACET_SCHEMA_PATH
from proto import public_key_bytes

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]

ROOT = Path(__file__).resolve().parent.parent
METERS = 24  # per region
FIRST = {"North": 1, "South": 101}
PERIOD = ("--from", "2026-09-01", "--to", "2026-10-01")  # holds signed_batches' intervals


@pytest.fixture
def exporter(storage_dsn: str, core_server: str) -> str:
    """Two regions' readings stored; the DSN of a data scientist limited to North."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        for region in FIRST:
            agent_id = f"{region.lower()}-1"
            agents.enroll(conn, agent_id, public_key_bytes(KEY.public_key()), region=region)
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'scientist_north'").fetchone():
            conn.execute("CREATE ROLE scientist_north LOGIN")  # roles are the cluster's
        access.grant(conn, "scientist_north", "data_scientist", regions=["North"])
    for region, first in FIRST.items():
        meters = range(first, first + METERS)
        for sequence, interval in enumerate((0, 1, 2, 3, 4, 5, 38, 39), start=1):
            energy = [60 + 7 * (m % METERS) + 11 * (interval % 3) for m in meters]
            body = payload(meters=meters, interval=interval, energy=energy)  # 39: 23:45-24:00
            batch = seal(body, sequence=sequence, agent_id=f"{region.lower()}-1")
            assert [answer(a) for a in send(core_server, batch)] == ["ACK_STATUS_ACCEPTED"]
    return as_login(storage_dsn, "scientist_north")


def test_an_export_is_anonymized_measured_recorded_and_audited(exporter, storage_dsn, tmp_path):
    out = tmp_path / "north.csv"
    done = governance("export", "weekly-profiles", "--k", "4", "--l", "2", "--out", str(out),
                      *PERIOD, "--json", dsn=exporter)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    table = pd.read_csv(out)
    assert len(table) == report["meters"] == METERS  # North's meters only, none suppressed
    assert report["k"] >= 4
    assert report["l"] >= 2
    assert report["profiles_unique_before"] == 1.0
    assert report["profiles_unique_after"] == 0
    assert set(table.columns[:5]) == {
        "area_level", "area", "customer_class", "consumption_band", "profile_id"
    }  # fmt: skip
    assert not {"meter_id", "meter", "pseudonym"} & set(table.columns)
    assert table.groupby(["area", "customer_class", "profile_id"]).size().min() >= 4
    assert table["area"].str.startswith("north-1/f").all()  # feeders numbered, not addressed
    slots = table.filter(regex=r"^p\d{3}$")
    used = {column for column in slots.columns if (slots[column] > 0).any()}
    assert used == {"p014", "p015", "p023"}  # Monday 14:00-16:00 and 23:30-24:00 (interval start)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert report["sha256"] == digest
    with psycopg.connect(storage_dsn) as conn:
        recorded = conn.execute(
            "SELECT dataset, filter->>'resolution', k, l, measured_k, meters, key_ids, made_by,"
            " encode(file_sha256, 'hex') FROM exports"
        ).fetchall()
        included = conn.execute(
            "SELECT DISTINCT m.region, count(*) OVER () FROM export_meters JOIN meters m"
            " USING (meter_id)"
        ).fetchall()
        audited = conn.execute(
            "SELECT entry_id, actor, detail FROM audit_log WHERE action = 'export.write'"
        ).fetchall()
    assert recorded == [
        ("weekly-profiles", "hour", 4, 2, report["k"], METERS, ["k1"], "scientist_north", digest)
    ]
    assert included == [("North", METERS)]
    ((entry, actor, detail),) = audited
    assert (entry, actor) == (report["audit_entry"], "scientist_north")
    assert detail["export_id"] == report["export_id"]
    assert (detail["k"], detail["l"], detail["meters"], detail["sha256"]) == (4, 2, METERS, digest)
    assert detail["filter"]["regions"] == []  # the login's scope limited it, not the filter
    traced = governance("trace", "subject", "--pseudonym", meter(1).hex(), *PERIOD,
                        "--format", "json", dsn=storage_dsn)  # fmt: skip
    assert traced.returncode == 0, traced.stderr
    (held,) = json.loads(traced.stdout)["exports"]
    assert (held["export_id"], held["k"], held["made_by"]) == (
        report["export_id"],
        4,
        "scientist_north",
    )
    _is_a_lineage_run(storage_dsn, report, tmp_path / "runs.jsonl")
    south = governance("trace", "subject", "--pseudonym", meter(101).hex(), *PERIOD,
                       "--format", "json", dsn=storage_dsn)  # fmt: skip
    assert json.loads(south.stdout)["exports"] == []


def _is_a_lineage_run(storage_dsn: str, report: dict, out: Path) -> None:
    """`lineage export` writes the export as a run from the tables it read to its file."""
    today = dt.datetime.now(dt.UTC).date()
    tomorrow = today + dt.timedelta(days=1)
    done = governance("lineage", "export", "--from", str(today), "--to", str(tomorrow),
                      "--out", str(out), dsn=storage_dsn)  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    (run,) = [e for e in events if e["job"]["name"] == "governance.export.weekly-profiles"]
    facet = run["run"]["facets"]["meterpipe_export"]
    assert (facet["exportId"], facet["k"], facet["l"]) == (report["export_id"], 4, 2)
    assert (facet["measuredK"], facet["sha256"]) == (report["k"], report["sha256"])
    assert [i["name"] for i in run["inputs"]] == ["meter_readings", "meters"]
    (written,) = run["outputs"]
    assert (written["namespace"], written["name"]) == ("file", "north.csv")
    assert written["outputFacets"]["outputStatistics"]["rowCount"] == METERS
    schema = json.loads((ROOT / EXPORT_FACET_SCHEMA_PATH).read_text())
    properties = schema["$defs"]["MeterpipeExportRunFacet"]["allOf"][1]["properties"]
    assert set(facet) - {"_producer", "_schemaURL"} == set(properties)


def test_parquet_holds_the_same_release(exporter, tmp_path):
    out = tmp_path / "north.parquet"
    done = governance("export", "weekly-profiles", "--k", "4", "--out", str(out), *PERIOD,
                      "--resolution", "day", dsn=exporter)  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_parquet(out)
    assert len(table) == METERS
    days = table.filter(regex=r"^p\d{3}$")
    assert list(days.columns) == [f"p{d:03d}" for d in range(7)]
    assert (days["p000"] > 0).all()  # Monday
    assert (days.drop(columns="p000") == 0).all().all()
    assert "measured (pycanon): k=" in done.stdout


def test_an_unreachable_target_writes_and_records_nothing(exporter, storage_dsn, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / "north.csv"
    done = governance("export", "weekly-profiles", "--k", "50", "--out", str(out), *PERIOD,
                      dsn=exporter)  # fmt: skip
    assert done.returncode == 1
    assert "cannot export weekly-profiles: k=50 cannot be reached for 24 meters" in done.stderr
    assert list(folder.iterdir()) == []  # no file, no partial file
    with psycopg.connect(storage_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM exports").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'export.write'"
        ).fetchone() == (0,)
    wrong = governance("export", "weekly-profiles", "--k", "4", "--out",
                       str(Path(folder / "north.txt")), *PERIOD, dsn=exporter)  # fmt: skip
    assert wrong.returncode == 1
    assert "--out must end in .csv or .parquet, got 'north.txt'" in wrong.stderr
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'analyst_x'").fetchone():
            conn.execute("CREATE ROLE analyst_x LOGIN")
        access.grant(conn, "analyst_x", "analyst")
    analyst = governance("export", "weekly-profiles", "--k", "4", "--out", str(out), *PERIOD,
                         dsn=as_login(storage_dsn, "analyst_x"))  # fmt: skip
    assert analyst.returncode == 1
    assert "permission denied for table meter_readings: this login's roles" in analyst.stderr
    assert "Traceback" not in analyst.stderr
