"""OpenLineage events per committed batch: configuration, event content, delivery, failure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from openlineage.client.serde import Serde
from pgcluster import free_loopback_port

from core_ingest.errors import ConfigError
from core_ingest.lineage.config import (
    DEFAULT_MAX_QUEUED_EVENTS,
    LineageConfig,
    parse_lineage_config,
)
from core_ingest.lineage.emitter import LineageEmitter, LineageStatistics
from core_ingest.lineage.events import (
    BATCH_FACET_SCHEMA_PATH,
    BATCH_FACET_SCHEMA_URL,
    build_event,
    device_dataset,
    run_id,
)
from core_ingest.lineage.record import CommittedBatch
from proto.lineage_names import DEFAULT_DATABASE_NAMESPACE

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
BATCH = CommittedBatch(
    agent_id="sub-north-0042",
    sequence=17,
    batch_id=901,
    substation="N-S01",
    region="North",
    devices=("modbus://10.20.0.11:502/1", "modbus://10.20.0.12:502/1"),
    poll_start=T0,
    poll_end=T0 + dt.timedelta(minutes=1),
    created_at=T0 + dt.timedelta(seconds=65),
    received_at=T0 + dt.timedelta(seconds=66),
    committed_at=T0 + dt.timedelta(seconds=66, milliseconds=250),
    software_version="0.1.0",
    register_map_version=1,
    validation_ruleset="vee-1",
    pseudonym_key_id="north-2026-11",
    core_version="0.1.0",
    meter_readings=1000,
    readings_stored=990,
    telemetry_points=14,
    quality_counts={"SPIKE": 3, "ESTIMATED": 10},
)
# The run id of BATCH, computed once: ids must never change between releases.
BATCH_RUN_ID = "04d9ffc2-ac7f-5229-bbf6-73eb16e2ff65"
EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}


def openlineage_table(text):
    return tomllib.loads(text).get("openlineage")


def test_readme_example_is_valid_and_names_every_key():
    """The core.toml example in README.md parses, and shows each key of both transports."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Core (`core.toml`)")[1].split("```toml\n")[1].split("```")[0]
    config = parse_lineage_config(openlineage_table(block))
    assert config is not None
    assert config.transport == "http"
    table = block.split("[openlineage]")[1]
    for key in LineageConfig.__struct_fields__:
        assert f"{key} = " in table, key


def test_no_table_means_lineage_events_are_off():
    """A core.toml without [openlineage] emits nothing."""
    assert parse_lineage_config(openlineage_table('[database]\ndsn = "x"\n')) is None


def test_file_transport_defaults_and_relative_path(tmp_path):
    """A relative path is taken from the configuration file's folder; the rest are defaults."""
    config = parse_lineage_config(
        openlineage_table('[openlineage]\ntransport = "file"\npath = "lineage.jsonl"\n'),
        base=tmp_path,
    )
    assert config == LineageConfig(
        transport="file",
        namespace="meterpipe",
        database_namespace=DEFAULT_DATABASE_NAMESPACE,
        max_queued_events=DEFAULT_MAX_QUEUED_EVENTS,
        path=tmp_path / "lineage.jsonl",
    )


def test_http_transport_keys():
    """Every HTTP key is read; an integer timeout is accepted as seconds."""
    config = parse_lineage_config(
        openlineage_table(
            '[openlineage]\ntransport = "http"\nurl = "https://marquez.example.net:5000"\n'
            'endpoint = "api/v1/lineage"\ntimeout_seconds = 2\nnamespace = "grid-north"\n'
            'database_namespace = "postgres://db.example.net:5432"\nmax_queued_events = 50\n'
        )
    )
    assert config is not None
    assert (config.url, config.endpoint, config.timeout_seconds) == (
        "https://marquez.example.net:5000",
        "api/v1/lineage",
        2.0,
    )
    assert (config.namespace, config.database_namespace, config.max_queued_events) == (
        "grid-north",
        "postgres://db.example.net:5432",
        50,
    )


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('openlineage = "file"', "openlineage"),
        ("[openlineage]", "openlineage.transport"),
        ('[openlineage]\ntransport = "kafka"', "openlineage.transport"),
        ('[openlineage]\ntransport = "file"', "openlineage.path"),
        ('[openlineage]\ntransport = "file"\npath = "no-such-folder/x.jsonl"', "openlineage.path"),
        ('[openlineage]\ntransport = "file"\npath = "."', "openlineage.path"),
        ('[openlineage]\ntransport = "file"\npath = "x"\nurl = "http://h"', "openlineage.url"),
        ('[openlineage]\ntransport = "http"', "openlineage.url"),
        ('[openlineage]\ntransport = "http"\nurl = "ftp://h/"', "openlineage.url"),
        ('[openlineage]\ntransport = "http"\nurl = "http://h"\npath = "x"', "openlineage.path"),
        ('[openlineage]\ntransport = "http"\nurl = "http://h"\ntimeout = 3', "openlineage.timeout"),
        (
            '[openlineage]\ntransport = "http"\nurl = "http://h"\ntimeout_seconds = 0',
            "openlineage.timeout_seconds",
        ),
        (
            '[openlineage]\ntransport = "http"\nurl = "http://h"\ntimeout_seconds = "5"',
            "openlineage.timeout_seconds",
        ),
        ('[openlineage]\ntransport = "file"\npath = "x"\nnamespace = ""', "openlineage.namespace"),
        (
            '[openlineage]\ntransport = "file"\npath = "x"\nmax_queued_events = 0',
            "openlineage.max_queued_events",
        ),
        (
            '[openlineage]\ntransport = "file"\npath = "x"\nmax_queued_events = 1.5',
            "openlineage.max_queued_events",
        ),
    ],
)
def test_config_error_names_the_key(tmp_path, table, key):
    """Each kind of mistake is reported against its dotted key."""
    with pytest.raises(ConfigError) as caught:
        parse_lineage_config(tomllib.loads(table).get("openlineage"), base=tmp_path)
    assert caught.value.key == key, str(caught.value)
    assert str(caught.value).startswith(f"{key}: ")


def event_dict(batch, namespace="meterpipe", database_namespace="postgres://meterpipe"):
    event = build_event(batch, namespace=namespace, database_namespace=database_namespace)
    return json.loads(Serde.to_json(event))


def assert_timestamp(value):
    parsed = dt.datetime.fromisoformat(value)
    assert "T" in value, value
    assert parsed.tzinfo is not None, value


def assert_facet(facet, name):
    """Every facet names its producer and the schema of its class (spec: BaseFacet)."""
    for key in ("_producer", "_schemaURL"):
        parts = urlsplit(facet[key])
        assert (parts.scheme, bool(parts.netloc)) == ("https", True), (name, key, facet[key])
    assert facet["_schemaURL"].endswith(f"#/$defs/{name}"), facet["_schemaURL"]


def assert_openlineage_shape(event):
    """The RunEvent's required fields and types (spec 2-0-2), and every facet's base fields."""
    assert_timestamp(event["eventTime"])
    assert event["eventType"] in EVENT_TYPES
    assert event["schemaURL"].endswith("#/$defs/RunEvent")
    assert urlsplit(event["producer"]).scheme == "https"
    uuid.UUID(event["run"]["runId"])
    for named in [event["job"], *event["inputs"], *event["outputs"]]:
        assert isinstance(named["namespace"], str), named
        assert isinstance(named["name"], str), named
        assert named["namespace"], named
        assert named["name"], named
    classes = {
        "processing_engine": "ProcessingEngineRunFacet",
        "nominalTime": "NominalTimeRunFacet",
        "meterpipe_batch": "MeterpipeBatchRunFacet",
        "jobType": "JobTypeJobFacet",
        "dataQualityMetrics": "DataQualityMetricsInputDatasetFacet",
        "outputStatistics": "OutputStatisticsOutputDatasetFacet",
        "tags": "TagsRunFacet",  # added by the client: its own version
    }
    facets = [*event["run"]["facets"].items(), *event["job"]["facets"].items()]
    for dataset in event["inputs"]:
        facets += [*dataset.get("facets", {}).items(), *dataset.get("inputFacets", {}).items()]
    for dataset in event["outputs"]:
        facets += [*dataset.get("facets", {}).items(), *dataset.get("outputFacets", {}).items()]
    for key, facet in facets:
        assert_facet(facet, classes[key])


def test_event_has_the_openlineage_shape():
    """Required fields, types and facet base fields hold, as a consumer validating it checks."""
    event = event_dict(BATCH)
    assert_openlineage_shape(event)
    assert event["eventType"] == "COMPLETE"
    assert event["eventTime"] == "2026-03-01T12:01:06.250000+00:00"
    assert event["run"]["runId"] == BATCH_RUN_ID
    assert event["job"] == {
        "namespace": "meterpipe",
        "name": "core_ingest.batch.sub-north-0042",
        "facets": {
            "jobType": {
                "_producer": event["producer"],
                "_schemaURL": event["job"]["facets"]["jobType"]["_schemaURL"],
                "processingType": "BATCH",
                "integration": "METERPIPE",
                "emissionPattern": {
                    "eventTrigger": "EVENT_BASED",
                    "eventContentMode": "COMPLETE_SNAPSHOT",
                },
            }
        },
    }


def test_run_id_is_the_same_for_every_emission_of_a_batch():
    """A re-emitted batch keeps its run id; another sequence or agent gets another one."""
    assert str(run_id(BATCH.agent_id, BATCH.sequence)) == BATCH_RUN_ID
    again = dataclasses.replace(BATCH, committed_at=T0 + dt.timedelta(hours=1))
    assert event_dict(again)["run"]["runId"] == BATCH_RUN_ID
    assert run_id("sub-north-0042", 18) != run_id("sub-north-0042", 17)
    assert run_id("sub-north-0042/1", 7) != run_id("sub-north-0042", 17)


def test_run_facets_carry_the_ledger_lineage():
    """Core version, poll window and the batch's lineage fields are on the run."""
    facets = event_dict(BATCH)["run"]["facets"]
    assert (facets["processing_engine"]["name"], facets["processing_engine"]["version"]) == (
        "core-ingest",
        "0.1.0",
    )
    assert facets["nominalTime"]["nominalStartTime"] == "2026-03-01T12:00:00+00:00"
    assert facets["nominalTime"]["nominalEndTime"] == "2026-03-01T12:01:00+00:00"
    lineage = facets["meterpipe_batch"]
    assert lineage["_schemaURL"] == BATCH_FACET_SCHEMA_URL
    assert {key: value for key, value in lineage.items() if not key.startswith("_")} == {
        "agentId": "sub-north-0042",
        "sequence": 17,
        "batchId": 901,
        "substation": "N-S01",
        "region": "North",
        "devices": ["modbus://10.20.0.11:502/1", "modbus://10.20.0.12:502/1"],
        "createdAt": "2026-03-01T12:01:05+00:00",
        "receivedAt": "2026-03-01T12:01:06+00:00",
        "softwareVersion": "0.1.0",
        "registerMapVersion": 1,
        "pseudonymKeyId": "north-2026-11",
        "validationRuleset": "vee-1",
    }


def test_custom_facet_matches_its_published_schema():
    """The facet's fields are exactly the schema's properties, and its required ones are set."""
    schema = json.loads((ROOT / BATCH_FACET_SCHEMA_PATH).read_text())
    assert BATCH_FACET_SCHEMA_URL.startswith(schema["$id"] + "#")
    body = schema["$defs"]["MeterpipeBatchRunFacet"]["allOf"][1]
    lineage = event_dict(BATCH)["run"]["facets"]["meterpipe_batch"]
    fields = {key for key in lineage if not key.startswith("_")}
    assert fields == set(body["properties"])
    unset = dataclasses.replace(BATCH, validation_ruleset=None)
    assert set(body["required"]) == {
        key
        for key in event_dict(unset)["run"]["facets"]["meterpipe_batch"]
        if not key.startswith("_")
    }


def test_inputs_are_the_devices_and_the_batch_with_its_quality_metrics():
    """One input per device; the agent's batch input carries rowCount and per-flag counts."""
    *devices, batch_input = event_dict(BATCH)["inputs"]
    assert [(d["namespace"], d["name"]) for d in devices] == [
        ("modbus://10.20.0.11:502", "1"),
        ("modbus://10.20.0.12:502", "1"),
    ]
    assert (batch_input["namespace"], batch_input["name"]) == (
        "edge-agent://sub-north-0042",
        "batches",
    )
    metrics = batch_input["inputFacets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == 1000
    assert metrics["columnMetrics"] == {
        "quality_flags.ESTIMATED": {"sum": 10, "count": 1000},
        "quality_flags.SPIKE": {"sum": 3, "count": 1000},
    }


def test_outputs_count_the_rows_added():
    """meter_readings counts new rows only; telemetry appears when the batch had some."""
    outputs = event_dict(BATCH, database_namespace="postgres://db.example.net:5432")["outputs"]
    assert [
        (o["namespace"], o["name"], o["outputFacets"]["outputStatistics"]["rowCount"])
        for o in outputs
    ] == [
        ("postgres://db.example.net:5432", "meter_readings", 990),
        ("postgres://db.example.net:5432", "transformer_telemetry", 14),
    ]
    telemetry_only = dataclasses.replace(
        BATCH,
        meter_readings=0,
        readings_stored=0,
        quality_counts={},
        poll_start=None,
        poll_end=None,
    )
    event = event_dict(telemetry_only)
    assert_openlineage_shape(event)
    assert [o["name"] for o in event["outputs"]] == ["transformer_telemetry"]
    assert "nominalTime" not in event["run"]["facets"]


@pytest.mark.parametrize(
    ("device", "dataset"),
    [
        ("modbus://10.0.0.5:502/1", ("modbus://10.0.0.5:502", "1")),
        (
            "mqtt://broker:1883/grid/North/N-S01/T1/telemetry",
            ("mqtt://broker:1883", "grid/North/N-S01/T1/telemetry"),
        ),
        ("modbus://10.0.0.5:502", ("modbus://10.0.0.5:502", "/")),
        ("concentrator-7", ("meterpipe-device", "concentrator-7")),
    ],
)
def test_device_dataset_names(device, dataset):
    """A device URI splits into its server (namespace) and the path within it (name)."""
    assert device_dataset(device) == dataset


def batches(count):
    return [dataclasses.replace(BATCH, sequence=BATCH.sequence + i) for i in range(count)]


def file_emitter(path, **keys):
    config = parse_lineage_config({"transport": "file", "path": str(path), **keys})
    return LineageEmitter(config)


def http_emitter(url, **keys):
    return LineageEmitter(parse_lineage_config({"transport": "http", "url": url, **keys}))


class Consumer(ThreadingHTTPServer):
    """A real OpenLineage HTTP consumer on a free loopback port: records what it is sent.

    ``statuses`` answers the first requests with those codes (then 201); ``gate`` holds every
    request until set.
    """

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ConsumerHandler)
        self.received = []  # (path, content type, parsed body)
        self.statuses = []
        self.gate = threading.Event()
        self.gate.set()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_port}"


class ConsumerHandler(BaseHTTPRequestHandler):
    server: Consumer

    def do_POST(self):
        self.server.gate.wait(timeout=30)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.server.statuses.pop(0) if self.server.statuses else 201
        if status == 201:
            self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        """Quiet: the test asserts on what was received."""


@pytest.fixture
def consumer():
    server = Consumer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.gate.set()
    server.shutdown()
    server.server_close()


def test_file_transport_appends_one_json_line_per_batch(tmp_path):
    """Each committed batch becomes one parseable line with its run id, facets and counts."""
    path = tmp_path / "lineage.jsonl"
    path.write_text("")  # appended to, never replaced
    emitter = file_emitter(path)
    emitter.start()
    for batch in batches(3):
        emitter.emit(batch)
    assert emitter.close(timeout=10)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["run"]["runId"] for e in events] == [
        str(run_id(BATCH.agent_id, sequence)) for sequence in (17, 18, 19)
    ]
    for event in events:
        assert_openlineage_shape(event)
        metrics = event["inputs"][-1]["inputFacets"]["dataQualityMetrics"]
        assert metrics["columnMetrics"]["quality_flags.SPIKE"] == {"sum": 3, "count": 1000}
        assert event["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 990
    assert emitter.statistics() == LineageStatistics(emitted=3, failed=0, dropped=0, queued=0)


def test_http_transport_posts_each_event_to_the_consumer(consumer):
    """A real HTTP consumer receives every event as JSON at the configured endpoint."""
    emitter = http_emitter(consumer.url, endpoint="api/v1/lineage", namespace="grid-north")
    emitter.start()
    for batch in batches(2):
        emitter.emit(batch)
    assert emitter.close(timeout=10)
    assert [(path, kind) for path, kind, _ in consumer.received] == [
        ("/api/v1/lineage", "application/json")
    ] * 2
    for _, _, event in consumer.received:
        assert_openlineage_shape(event)
        assert event["job"]["namespace"] == "grid-north"
    assert (emitter.emitted, emitter.failed, emitter.dropped) == (2, 0, 0)


def test_unreachable_consumer_is_counted_and_logged_once(caplog):
    """Nothing listens: emit() does not raise, each event counts as failed, one WARNING."""
    emitter = http_emitter(f"http://127.0.0.1:{free_loopback_port()}", timeout_seconds=1)
    emitter.start()
    with caplog.at_level(logging.WARNING):
        emitter.emit(BATCH)
        emitter.emit(BATCH)
        assert emitter.close(timeout=20)
    assert (emitter.emitted, emitter.failed, emitter.dropped) == (0, 2, 0)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["core_ingest.lineage.emitter"], caplog.text
    assert "ConnectionError" in warnings[0].getMessage()


def test_refused_events_are_logged_once_per_kind_and_recovery_once(consumer, caplog):
    """Two refusals log one WARNING; the next accepted event logs one INFO."""
    consumer.statuses = [400, 400]
    emitter = http_emitter(consumer.url)
    emitter.start()
    with caplog.at_level(logging.INFO, logger="core_ingest.lineage.emitter"):
        for batch in batches(3):
            emitter.emit(batch)
        assert emitter.close(timeout=10)
    assert (emitter.emitted, emitter.failed) == (1, 2)
    ours = [r for r in caplog.records if r.name == "core_ingest.lineage.emitter"]
    assert [r.levelname for r in ours] == ["WARNING", "INFO"], caplog.text
    assert "HTTPError" in ours[0].getMessage()


def test_full_queue_drops_and_counts(tmp_path, caplog):
    """Past max_queued_events a batch is dropped, counted, and the first drop is logged."""
    emitter = file_emitter(tmp_path / "lineage.jsonl", max_queued_events=2)
    with caplog.at_level(logging.WARNING, logger="core_ingest.lineage.emitter"):
        for batch in batches(5):  # not started: nothing drains the queue
            emitter.emit(batch)
    assert emitter.statistics() == LineageStatistics(emitted=0, failed=0, dropped=3, queued=2)
    assert len(caplog.records) == 1
    assert "queue is full" in caplog.records[0].getMessage()
    emitter.start()
    assert emitter.close(timeout=10)
    assert (emitter.emitted, emitter.dropped) == (2, 3)
    emitter.emit(BATCH)
    assert emitter.dropped == 4  # after close: dropped, not raised


def test_emit_does_not_wait_for_a_stalled_consumer(consumer):
    """The consumer holds the first request; every emit() still returns (queued or dropped)."""
    consumer.gate.clear()
    emitter = http_emitter(consumer.url, max_queued_events=10)
    emitter.start()
    for batch in batches(50):
        emitter.emit(batch)
    statistics = emitter.statistics()
    assert statistics.emitted == 0
    assert statistics.dropped >= 50 - 10 - 1  # one may be in the sending thread's hands
    consumer.gate.set()
    assert emitter.close(timeout=20)
    assert emitter.emitted == 50 - emitter.dropped
