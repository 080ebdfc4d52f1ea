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
