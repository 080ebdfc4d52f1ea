"""Configuration: defaults, overrides, and errors that name the key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_ingest.config import load_config as load_core_config
from core_ingest.errors import ConfigError as CoreConfigError
from edge_agent.config import load_config
from edge_agent.errors import ConfigError

MINIMAL = """
[agent]
id = "sub-1"
signing_key_file = "agent.key"
[pseudonymization]
key_file = "p.key"
key_id = "k1"
[uplink]
target = "core:50051"
[[sources.modbus]]
name = "c1"
host = "10.0.0.5"
"""


def write(tmp_path, text):
    path = tmp_path / "edge-agent.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_documented_defaults(tmp_path):
    """Only the required keys; everything else takes the defaults the README lists."""
    config = load_config(write(tmp_path, MINIMAL))
    assert config.buffer.path == tmp_path / "buffer.sqlite"
    assert config.agent.signing_key_file == tmp_path / "agent.key"
    assert config.buffer.synchronous == "full"
    assert config.uplink.batch_max_readings == 5_000
    assert config.uplink.compression == "none"
    assert config.uplink.max_bytes_per_second == 0
    source = config.sources.modbus[0]
    assert (source.port, source.unit_id, source.poll_interval_seconds) == (502, 1, 60.0)
    assert source.device == "modbus://10.0.0.5:502/1"


def test_overrides_win_over_the_file(tmp_path):
    """A later layer (environment, flags) replaces the file's value."""
    config = load_config(write(tmp_path, MINIMAL), {"uplink": {"target": "other:1"}})
    assert config.uplink.target == "other:1"


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda t: t.replace('id = "sub-1"\n', ""), "agent.id"),
        (lambda t: t + "port = 70000\n", "sources.modbus[0].port"),
        (lambda t: t + 'port = "502"\n', "sources.modbus[0].port"),
        (lambda t: t + "unit_id = 0\n", "sources.modbus[0].unit_id"),
        (lambda t: t + '[buffer]\nsynchronous = "off"\n', "buffer.synchronous"),
        (lambda t: t + '[[sources.modbus]]\nname = "c1"\nhost = "x"\n', "sources.modbus"),
        (lambda t: t.split("[[sources.modbus]]")[0], "sources.modbus"),
        (lambda t: t.replace('target = "core:50051"', "target = 5"), "uplink.target"),
        (lambda t: t.replace("[uplink]", '[uplink]\ncompression = "brotli"'), "uplink.compression"),
        (
            lambda t: t.replace("[uplink]", "[uplink]\nmax_bytes_per_second = -1"),
            "uplink.max_bytes_per_second",
        ),
        (lambda t: t + "poll_interval_seconds = true\n", "sources.modbus[0].poll_interval_seconds"),
        (lambda t: t + "[[[", "file"),
        (lambda t: t.replace("[uplink]", "[uplink]\nmax_in_fligth = 4"), "uplink.max_in_fligth"),
        (lambda t: t + "pollinterval_seconds = 5\n", "sources.modbus[0].pollinterval_seconds"),
        (lambda t: t + '[bufer]\npath = "b.sqlite"\n', "bufer"),
        (lambda t: t + "[validation]\nspike_ration = 2\n", "validation.spike_ration"),
        (
            lambda t: (
                t + '[mqtt]\nhost = "h"\n[[mqtt.transformers]]\ntopic = "t"\n'
                'transformer_id = "T1"\nqos = 1\n'
            ),
            "mqtt.transformers[0].qos",
        ),
    ],
)
def test_error_names_the_key(tmp_path, edit, key):
    """Each kind of mistake is reported against its dotted key."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, edit(MINIMAL)))
    assert caught.value.key == key, str(caught.value)
    assert str(caught.value).startswith(key)


def test_core_config_layers_and_errors(tmp_path):
    """The core merges file and flags, and names the bad key."""
    path = tmp_path / "core.toml"
    path.write_text('[database]\ndsn = "postgresql://db/x"\n[server]\nlisten = "0.0.0.0:1"\n')
    config = load_core_config(path, listen="127.0.0.1:2")
    assert (config.database.dsn, config.server.listen, config.database.storage) == (
        "postgresql://db/x",
        "127.0.0.1:2",
        "auto",
    )
    with pytest.raises(CoreConfigError, match=r"server\.listen"):
        load_core_config(path, listen="nonsense")
    with pytest.raises(CoreConfigError, match=r"database\.dsn: is required"):
        load_core_config(None)
    with pytest.raises(CoreConfigError, match=r"database\.storage"):
        load_core_config(path, storage="mongodb")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[database]\npool_size = 0\n", "database.pool_size"),
        ("[server]\nbatches_per_stream = true\n", "server.batches_per_stream"),
        ("[quality]\nalert_threshold = 1.5\n", "quality.alert_threshold"),
        ("[quality]\nalert_window = 60\n", "quality.alert_window"),
        ('[quality]\nalert_check_seconds = "1"\n', "quality.alert_check_seconds"),
        ("[quality]\nalert_min_readings = 2.5\n", "quality.alert_min_readings"),
        ('[metrics]\nlisten = "9464"\n', "metrics.listen"),
        ("[metrics]\nlisten = 9464\n", "metrics.listen"),
        ('[metrics]\nlisten = "[::1]:9464"\n', "metrics.listen"),
        ('[metrics]\nport = "9464"\n', "metrics.port"),
        ('metrics = "127.0.0.1:9464"\n', "metrics"),
    ],
)
def test_core_pool_stream_and_quality_settings_name_the_bad_key(tmp_path, text, key):
    """Out-of-range, mistyped or unknown settings are refused with the key named."""
    path = tmp_path / "core.toml"
    path.write_text(text)
    with pytest.raises(CoreConfigError) as caught:
        load_core_config(path, dsn="postgresql://db/x")
    assert caught.value.key == key, str(caught.value)


def test_core_quality_defaults_are_the_reference_rule(tmp_path):
    """Without [quality]: more than 0.5 % suspect in the last hour, checked every minute."""
    rule = load_core_config(None, dsn="postgresql://db/x").quality.rule
    assert (rule.threshold, rule.window_seconds, rule.check_seconds) == (0.005, 3600, 60)
    path = tmp_path / "core.toml"
    path.write_text("[quality]\nalert_threshold = 0.01\n[database]\npool_size = 3\n")
    config = load_core_config(path, dsn="postgresql://db/x")
    assert (
        config.quality.rule.threshold,
        config.database.pool_size,
        config.server.batches_per_stream,
    ) == (0.01, 3, 4)


TLS = '[uplink.tls]\nca = "pki/ca.crt"\ncert = "pki/agent.crt"\nkey = "pki/agent.key"\n'


def test_uplink_tls_paths_are_relative_to_the_config_and_server_name_optional(tmp_path):
    """[uplink.tls] with its three files; no table at all means a plaintext uplink."""
    assert load_config(write(tmp_path, MINIMAL)).uplink.tls is None
    tls = load_config(write(tmp_path, MINIMAL + TLS)).uplink.tls
    assert (tls.ca, tls.key, tls.server_name) == (
        tmp_path / "pki/ca.crt",
        tmp_path / "pki/agent.key",
        None,
    )
    named = load_config(write(tmp_path, MINIMAL + TLS + 'server_name = "core.example"\n'))
    assert named.uplink.tls.server_name == "core.example"


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda t: t.replace('key = "pki/agent.key"\n', ""), "uplink.tls.key"),
        (lambda t: t.replace('ca = "pki/ca.crt"\n', ""), "uplink.tls.ca"),
        (lambda t: t + 'certificate = "x"\n', "uplink.tls.certificate"),
        (lambda t: t + "server_name = 1\n", "uplink.tls.server_name"),
    ],
)
def test_uplink_tls_is_all_or_nothing_and_names_the_key(tmp_path, edit, key):
    """A half-configured or misspelt [uplink.tls] is refused, never silently plaintext."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL + edit(TLS)))
    assert caught.value.key == key, str(caught.value)


def test_core_server_tls_is_all_or_nothing_and_names_the_key(tmp_path):
    """[server.tls] needs cert, key and client_ca, relative to the file; nothing else."""
    path = tmp_path / "core.toml"
    base = '[database]\ndsn = "postgresql://db/x"\n'
    path.write_text(base)
    assert load_core_config(path).server.tls is None
    tls = '[server.tls]\ncert = "c.crt"\nkey = "c.key"\nclient_ca = "/etc/ca.crt"\n'
    path.write_text(base + tls)
    files = load_core_config(path).server.tls
    assert (files.cert, files.client_ca) == (tmp_path / "c.crt", Path("/etc/ca.crt"))
    for text, key in [
        (tls.replace('key = "c.key"\n', ""), "server.tls.key"),
        (tls + 'crl = "x"\n', "server.tls.crl"),
        (tls.replace('"c.crt"', "3"), "server.tls.cert"),
        ("[server]\ntls = 3\n", "server.tls"),
    ]:
        path.write_text(base + text)
        with pytest.raises(CoreConfigError) as caught:
            load_core_config(path)
        assert caught.value.key == key, str(caught.value)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda t: t.replace("[uplink]", "[uplink]\nmax_in_fligth = 4"), "'max_in_flight'"),
        (lambda t: t + "pollinterval_seconds = 5\n", "'poll_interval_seconds'"),
        (lambda t: t + '[bufer]\npath = "b.sqlite"\n', "'buffer'"),
    ],
)
def test_a_misspelt_key_is_refused_with_a_did_you_mean(tmp_path, edit, says):
    """A typo never passes with the default in its place: the likely key is named."""
    with pytest.raises(ConfigError, match=f"is not a known setting; did you mean {says}"):
        load_config(write(tmp_path, edit(MINIMAL)))


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ("[database]\npool_sise = 3\n", "database.pool_sise", "'pool_size'"),
        ("[databse]\npool_size = 3\n", "databse", "'database'"),
        ('[server]\nlisten_on = "x"\n', "server.listen_on", "'listen'"),
    ],
)
def test_core_misspelt_key_is_refused_with_a_did_you_mean(tmp_path, text, key, says):
    path = tmp_path / "core.toml"
    path.write_text(text)
    with pytest.raises(CoreConfigError, match=f"did you mean {says}") as caught:
        load_core_config(path, dsn="postgresql://db/x")
    assert caught.value.key == key


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    """Not a traceback: both loaders name the file."""
    path = tmp_path / "edge-agent.toml"
    path.write_bytes(MINIMAL.encode() + b"# \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text") as caught:
        load_config(path)
    assert caught.value.key == "file"
    with pytest.raises(CoreConfigError, match="is not UTF-8 text"):
        load_core_config(path)
