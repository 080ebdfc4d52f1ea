"""A gateway installs only what the agent imports: `pip install .[edge]` in a fresh venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_ONLY = ("numpy", "pandas", "psycopg", "openlineage", "transformer_thermal_model")


@pytest.mark.integration
def test_an_edge_only_install_runs_the_agent_without_the_cores_libraries(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[edge]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    helped = subprocess.run(
        [str(venv / "bin" / "edge-agent"), "--help"], capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0, helped.stderr
    assert "check-config" in helped.stdout
    for module in CORE_ONLY:
        found = subprocess.run(
            [str(python), "-c", f"import {module}"], capture_output=True, text=True, check=False
        )
        assert found.returncode != 0, f"{module} is installed on an edge-only gateway"
    imported = subprocess.run(
        [str(python), "-c", "import edge_agent.agent, edge_agent.cli"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr


def test_optional_features_load_their_libraries_only_when_configured(tmp_path):
    """An agent without [metrics] and [mqtt] never loads prometheus-client or aiomqtt.

    A gateway keeps in memory what it uses: together they are 4 to 5 MB of its resident
    memory. With both tables configured, both are loaded.
    """
    bin_dir = Path(sys.executable).parent
    for command, name in (("keygen", "a.key"), ("pseudonym-keygen", "p.key")):
        subprocess.run(
            [str(bin_dir / "edge-agent"), command, "--out", str(tmp_path / name)],
            check=True,
            capture_output=True,
        )
    plain = (
        '[agent]\nid = "sub-1"\nsigning_key_file = "a.key"\n'
        '[pseudonymization]\nkey_file = "p.key"\nkey_id = "k"\n'
        '[uplink]\ntarget = "127.0.0.1:1"\n'
        '[[sources.modbus]]\nname = "c1"\nhost = "127.0.0.1"\n'
    )
    full = plain + (
        '[metrics]\nlisten = "127.0.0.1:1"\n'
        '[mqtt]\nhost = "127.0.0.1"\n[[mqtt.transformers]]\ntopic = "t"\ntransformer_id = "T1"\n'
    )
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from edge_agent.agent import EdgeAgent\nfrom edge_agent.config import load_config\n"
        "EdgeAgent(load_config(Path(sys.argv[1])))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prometheus_client', 'aiomqtt'}))"
    )
    loaded = {}
    for name, text in (("plain", plain), ("full", full)):
        config = tmp_path / f"{name}.toml"
        config.write_text(text)
        run = subprocess.run(
            [sys.executable, "-c", script, str(config)],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
        loaded[name] = run.stdout.strip()
    assert loaded == {"plain": "[]", "full": "['aiomqtt', 'prometheus_client']"}
