"""OpenLineage events per committed batch: configuration, event content, delivery, failure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tomllib
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from openlineage.client.serde import Serde

from core_ingest.errors import ConfigError
from core_ingest.lineage_events import (
    BATCH_FACET_SCHEMA_PATH,
    BATCH_FACET_SCHEMA_URL,
    DEFAULT_DATABASE_NAMESPACE,
    DEFAULT_MAX_QUEUED_EVENTS,
    CommittedBatch,
    LineageConfig,
    build_event,
    device_dataset,
    parse_lineage_config,
    run_id,
)

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
