"""OpenLineage events per committed batch: configuration, event content, delivery, failure."""

from __future__ import annotations

import tomllib

import pytest

from core_ingest.errors import ConfigError
from core_ingest.lineage_events import (
    DEFAULT_DATABASE_NAMESPACE,
    DEFAULT_MAX_QUEUED_EVENTS,
    LineageConfig,
    parse_lineage_config,
)


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
