"""Lineage traces over real batches: a reading, a batch, a meter-day, a rollup, an export."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from fix_services import governance
from signed_batches import AGENT, FIRST_END, KEY, meter, payload, seal, send

from core_ingest import agents
from core_ingest.lineage.events import job_name, run_id
from proto import public_key_bytes
from proto.quality import QualityFlag

pytestmark = pytest.mark.integration

FIRST = dt.datetime.fromtimestamp(FIRST_END, dt.UTC)
ESTIMATED = int(QualityFlag.ESTIMATED)
QUARTER = dt.timedelta(minutes=15)


@pytest.fixture
def traced(storage_dsn, core_server):
    """What the traces follow: four meters' first interval, meter 2's estimated.

    Meter 2's real reading comes in a second batch; a third brings the next interval.
    """
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(KEY.public_key()), substation="N-S01")
    # One send each: the core commits a stream's batches concurrently, these in order.
    send(
        core_server,
        seal(payload(energy=[100, 110, 90, 130], flags=[0, 0, ESTIMATED, 0]), sequence=1),
    )
    send(core_server, seal(payload(meters=[2], energy=120), sequence=2))
    send(core_server, seal(payload(interval=1), sequence=3))
    return storage_dsn


def as_json(*args: str, dsn: str) -> dict:
    done = governance(*args, "--json", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_reading_leads_back_to_its_read_and_on_to_its_rollups(traced):
    """An estimate replaced by a read value: the read, its batch, the estimate, the rollups.

    The batch's audit entry and header digest are those the ledger and the trail hold.
    """
    trace = as_json(
        "lineage", "reading", "--pseudonym", meter(2).hex(),
        "--interval-end", f"{FIRST:%Y-%m-%dT%H:%M:%S}", dsn=traced,
    )  # fmt: skip
    assert (trace["energy_wh"], trace["provenance"]) == (120, "read")
    assert [s["step"] for s in trace["steps"]] == [
        "acquire", "validate", "pseudonymize", "sign", "transmit", "ingest",
    ]  # fmt: skip
    assert trace["steps"][1]["detail"]["ruleset"] == "vee-1"
    batch = trace["batch"]
    assert (batch["batch"]["sequence"], batch["batch"]["pseudonym_key_id"]) == (2, "k1")
    assert batch["audit_entry"] is not None
    with psycopg.connect(traced) as conn:
        header, ingest_entry = conn.execute(
            "SELECT encode(header_sha256, 'hex'), (SELECT entry_id FROM audit_log"
            " WHERE object = %s) FROM batches WHERE sequence = 2",
            (f"{AGENT}/2",),
        ).fetchone()
    assert (batch["header_sha256"], batch["audit_entry"]) == (header, ingest_entry)
    assert trace["correction"]["estimated_energy_wh"] == 90
    assert trace["correction"]["estimated_flags"] == ["ESTIMATED"]
    rollups = {r["table"]: r for r in trace["rollups"]}
    same_hour = (FIRST - QUARTER).hour == FIRST.hour  # interval 1 starts at FIRST
    first_interval, second_interval = 100 + 110 + 120 + 130, 4 * 100
    assert rollups["substation_hourly"]["energy_wh"] == first_interval + (
        second_interval if same_hour else 0
    )
    assert rollups["substation_daily"]["received"] == 8
    text = governance(
        "lineage", "reading", "--pseudonym", meter(2).hex(),
        "--interval-end", f"{FIRST:%Y-%m-%dT%H:%M:%S}", "--dsn", traced,
    ).stdout  # fmt: skip
    assert "replaced an estimate: 90 Wh (ESTIMATED)" in text
    assert "1. acquire" in text


def test_batch_meter_day_and_rollup_traces(traced):
    batch = as_json("lineage", "batch", AGENT, "1", dsn=traced)
    assert batch["batch"]["meter_readings"] == 4
    assert batch["schema_version"] is not None
    assert batch["dictionary_version"] is not None
    day = as_json(
        "lineage", "meter-day", "--pseudonym", meter(2).hex(),
        "--day", f"{FIRST - dt.timedelta(minutes=15):%Y-%m-%d}", dsn=traced,
    )  # fmt: skip
    assert (day["read"], day["estimated"], day["missing"]) == (2, 0, 94)
    assert day["batches"] == [f"{AGENT}/2", f"{AGENT}/3"]
    rollup = as_json(
        "lineage", "rollup", "--substation", "N-S01",
        "--day", f"{FIRST - dt.timedelta(minutes=15):%Y-%m-%d}", dsn=traced,
    )  # fmt: skip
    assert rollup["consistent"] is True
    assert rollup["stored"]["received"] == 8
    assert {b["batch"] for b in rollup["batches"]} == {f"{AGENT}/{n}" for n in (1, 2, 3)}
    with psycopg.connect(traced, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM meter_readings WHERE meter_id = (SELECT min(meter_id) FROM meters)"
        )
    changed = as_json(
        "lineage", "rollup", "--substation", "N-S01",
        "--day", f"{FIRST - dt.timedelta(minutes=15):%Y-%m-%d}", dsn=traced,
    )  # fmt: skip
    assert changed["consistent"] is False


def test_export_rebuilds_the_cores_run_events_and_a_rotated_meter_is_found(traced, tmp_path):
    out = tmp_path / "runs.jsonl"
    done = governance(
        "lineage", "export", "--from", "2000-01-01", "--to", "2100-01-01",
        "--out", str(out), "--dsn", traced,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    # in commit order, which need not be the sequence's: the core commits batches concurrently
    assert sorted(e["run"]["runId"] for e in events) == sorted(
        str(run_id(AGENT, n)) for n in (1, 2, 3)
    )
    assert {e["job"]["name"] for e in events} == {job_name(AGENT)}
    assert {o["name"] for o in events[0]["outputs"]} == {"meter_readings"}

    rotated = bytes(range(32))
    with psycopg.connect(traced, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pseudonym_map VALUES (%s, %s, 'k1', 'k2', %s, 4, 1)",
            (meter(1), rotated, AGENT),
        )
    found = as_json(
        "lineage", "meter-day", "--pseudonym", rotated.hex(),
        "--day", f"{FIRST - dt.timedelta(minutes=15):%Y-%m-%d}", dsn=traced,
    )  # fmt: skip
    assert found["meter"]["pseudonyms"] == [meter(1).hex()]
    assert found["read"] == 2
    unknown = governance("lineage", "meter-day", "--pseudonym", "ab" * 32, "--day", "2026-01-01",
                         "--dsn", traced)  # fmt: skip
    assert unknown.returncode == 1
    assert f"no stored meter has the pseudonym {'ab' * 32}" in unknown.stderr
    garbage = governance("lineage", "meter-day", "--pseudonym", "xyz", "--day", "2026-01-01",
                         "--dsn", traced)  # fmt: skip
    assert "pseudonym 'xyz' is not hexadecimal" in garbage.stderr
