"""The catalog: what the pipeline stores, from the dictionary, on both storages.

Checked against the database, written as comments, published as OpenLineage dataset events.
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import ClassVar

import psycopg
import pytest
from fix_db import store_one_reading
from fix_services import governance

from core_ingest import schema
from core_ingest.schema import NATIVE, TIMESCALEDB, Migration
from core_ingest.schema.dictionary import load_dictionary
from proto.lineage_names import DEFAULT_DATABASE_NAMESPACE

pytestmark = pytest.mark.integration


def test_show_lists_every_dictionary_object_with_estimated_rows(storage_dsn, storage):
    """Each object appears once, described and owned, whatever partitions lie beneath.

    Stored tables carry the planner's row estimate, views none.
    """
    store_one_reading(storage_dsn, storage)
    done = governance("catalog", "show", "--json", "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    datasets = {d["name"]: d for d in json.loads(done.stdout)}
    assert set(datasets) == set(load_dictionary().objects)
    readings = datasets["meter_readings"]
    assert "pseudonymous meter" in readings["description"]
    assert readings["personal_data"] == "pseudonymized-personal"
    assert readings["owner"]
    assert readings["steward"]
    assert readings["rows_estimated"] == 1
    assert datasets["region_daily"]["rows_estimated"] is None
    text = governance("catalog", "show", "--dsn", storage_dsn)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "kind", "personal"]
    assert len(lines) == 1 + len(datasets)


def test_show_one_object_gives_its_columns_types_and_storage(storage_dsn, storage):
    """The live type of every column, its class where it differs, and what lies beneath."""
    done = governance("catalog", "show", "meter_readings", "--json", "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)
    expected = {TIMESCALEDB: "TimescaleDB hypertable", NATIVE: "daily partitions"}[storage]
    assert entry["storage"] == expected
    columns = {c["name"]: c for c in entry["columns"]}
    assert list(columns) == list(load_dictionary().objects["meter_readings"].columns)
    assert columns["interval_end"]["type"] == "timestamp with time zone"
    assert columns["energy_wh"]["unit"] == "Wh"
    assert columns["batch_id"]["personal_data"] == "technical"
    assert entry["subject_columns"] == ["meter_id"]
    assert any("vee-1" in rule for rule in entry["quality_rules"])
    text = governance("catalog", "show", "meter_readings", "--dsn", storage_dsn).stdout
    assert f"time-partitioned ({expected})" in text
    assert "batch_id" in text
    assert "[technical]" in text
    unknown = governance("catalog", "show", "readings", "--dsn", storage_dsn)
    assert unknown.returncode == 2
    assert "meter_readings" in unknown.stderr  # names containing it


def test_check_passes_on_the_migrated_schema_and_names_what_differs(storage_dsn, monkeypatch):
    """A migration that adds an undocumented column, a dropped view: each named, exit 1."""
    done = governance("catalog", "check", "--dsn", storage_dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "describes the database exactly" in done.stdout
    extra = Migration(
        schema.SCHEMA_VERSION + 1, "tariffs", "ALTER TABLE meters ADD COLUMN tariff text;"
    )
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, extra))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", extra.version)
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        assert schema.migrate(conn) == [extra]
        conn.execute("DROP VIEW region_day_completeness")  # a view nothing depends on
    done = governance("catalog", "check", "--dsn", storage_dsn)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "region_day_completeness: in the dictionary, not in the database",
        "meters.tariff: in the database, not in the dictionary",
    ]
    assert "2 differences between the database and dictionary" in done.stderr


def test_sync_writes_the_descriptions_as_comments_and_refuses_a_foreign_schema(storage_dsn):
    """Users of psql see the dictionary's words; a schema that differs is not commented."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute("COMMENT ON TABLE meter_readings IS NULL")
        conn.execute("COMMENT ON COLUMN meter_readings.energy_wh IS 'stale'")
    done = governance("catalog", "sync", "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    dictionary = load_dictionary()
    columns = sum(len(o.columns) for o in dictionary.objects.values())
    assert done.stdout.strip() == f"{len(dictionary.objects) + columns} comments written"
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        table, column = conn.execute(
            "SELECT obj_description('meter_readings'::regclass, 'pg_class'),"
            " col_description('meter_readings'::regclass, 3)"
        ).fetchone()
        conn.execute("ALTER TABLE agents ADD COLUMN notes text")
    assert table == dictionary.objects["meter_readings"].description
    assert column == "Energy of the interval (Wh)"
    refused = governance("catalog", "sync", "--dsn", storage_dsn)
    assert refused.returncode == 1
    assert "agents.notes: in the database, not in the dictionary" in refused.stderr


class _Consumer(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def test_publish_writes_one_dataset_event_per_object_with_standard_facets(storage_dsn, tmp_path):
    """To a JSON-lines file, and to an HTTP consumer on loopback: the same events."""
    out = tmp_path / "catalog.jsonl"
    done = governance("catalog", "publish", "--out", str(out), "--dsn", storage_dsn)
    assert done.returncode == 0, done.stderr
    events = {e["dataset"]["name"]: e for e in map(json.loads, out.read_text().splitlines())}
    dictionary = load_dictionary()
    assert set(events) == set(dictionary.objects)
    readings = events["meter_readings"]
    assert readings["dataset"]["namespace"] == DEFAULT_DATABASE_NAMESPACE
    facets = readings["dataset"]["facets"]
    fields = {f["name"]: f for f in facets["schema"]["fields"]}
    assert list(fields) == list(dictionary.objects["meter_readings"].columns)
    energy = fields["energy_wh"]
    assert (energy["type"], energy["description"]) == ("bigint", "Energy of the interval (Wh)")
    assert (
        facets["documentation"]["description"] == dictionary.objects["meter_readings"].description
    )
    assert {(o["name"], o["type"]) for o in facets["ownership"]["owners"]} == {
        ("team:metering operations", "owner"),
        ("team:metering data steward", "steward"),
    }
    tags = {(t["key"], t["value"], t.get("field")) for t in facets["tags"]["tags"]}
    assert ("personal_data", "pseudonymized-personal", None) in tags
    assert ("personal_data", "technical", "batch_id") in tags
    assert ("retention", "P10Y", None) in tags
    assert events["region_daily"]["dataset"]["facets"]["datasetType"]["datasetType"] == "VIEW"

    _Consumer.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Consumer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        posted = governance("catalog", "publish", "--url", url, "--dsn", storage_dsn)
    finally:
        server.shutdown()
        server.server_close()
    assert posted.returncode == 0, posted.stderr
    assert sorted(e["dataset"]["name"] for e in _Consumer.received) == sorted(events)
    refused = governance("catalog", "publish", "--url", url, "--dsn", storage_dsn)
    assert refused.returncode == 1
    assert "refused the catalog" in refused.stderr
