"""The README's configuration reference is the models' own, and its examples are valid files."""

import runpy
import tomllib
from pathlib import Path

from core_ingest.config import load_config as load_core_config
from edge_agent.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "config_reference.py"))


def readme_block(name: str) -> str:
    readme = (ROOT / "README.md").read_text()
    block = readme.split(f"<!-- config-reference: {name} -->\n```toml\n")[1]
    return block.split("```\n<!-- /config-reference -->")[0]


def test_the_readme_reference_is_generated_from_the_models():
    readme = (ROOT / "README.md").read_text()
    assert SCRIPT["regenerated"](readme) == readme, (
        "README.md's configuration reference is stale: run .venv/bin/python"
        " scripts/config_reference.py"
    )
    assert set(SCRIPT["MODELS"]) == {"edge-agent.toml", "core.toml"}


def test_every_model_key_appears_in_the_reference():
    block = readme_block("edge-agent.toml")
    for key in ("poll_interval_seconds = ", "max_in_flight = ", "spike_ratio = ", "# server_name"):
        assert key in block, key


def test_the_edge_example_is_a_valid_configuration(tmp_path):
    config = parse_config(tomllib.loads(readme_block("edge-agent.toml")), base=tmp_path)
    assert config.agent.id == "sub-north-0042"
    assert config.mqtt is not None
    assert config.mqtt.client_id == "edge-agent-sub-north-0042"
    assert config.uplink.tls is not None
    assert config.uplink.tls.ca == tmp_path / "tls/ca.crt"


def test_the_core_example_is_a_valid_configuration(tmp_path):
    path = tmp_path / "core.toml"
    path.write_text(readme_block("core.toml"))
    config = load_core_config(path)
    assert config.openlineage is not None
    assert config.openlineage.transport == "http"
    assert config.metrics.listen == "127.0.0.1:9464"
    assert config.server.tls is not None
    assert config.server.tls.client_ca == tmp_path / "tls/ca.crt"
