"""``edge-agent`` commands: check-config exit codes and messages, status of an empty buffer."""

from __future__ import annotations

import json
import subprocess

import pytest
from fix_services import BIN

from edge_agent.sinks.buffer import Buffer


def edge_agent(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edge-agent"), *args], capture_output=True, text=True, check=False, cwd=cwd
    )


@pytest.fixture
def gateway(tmp_path):
    """A folder with keys made by the CLI and a valid configuration."""
    assert edge_agent("keygen", "--out", "agent.key", cwd=tmp_path).returncode == 0
    assert edge_agent("pseudonym-keygen", "--out", "p.key", cwd=tmp_path).returncode == 0
    (tmp_path / "edge-agent.toml").write_text(
        '[agent]\nid = "sub-1"\nsigning_key_file = "agent.key"\n'
        '[pseudonymization]\nkey_file = "p.key"\nkey_id = "k1"\n'
        '[uplink]\ntarget = "127.0.0.1:1"\n'
        '[[sources.modbus]]\nname = "c1"\nhost = "127.0.0.1"\n'
    )
    return tmp_path


def test_check_config_accepts_a_valid_gateway(gateway):
    """Valid configuration and keys: exit 0 and a JSON summary."""
    done = edge_agent("check-config", cwd=gateway)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"valid": True, "agent_id": "sub-1", "sources": 1}


def test_check_config_names_the_bad_key_and_exits_78(gateway):
    """A bad value exits 78 with the dotted key in a one-line message."""
    config = gateway / "edge-agent.toml"
    config.write_text(config.read_text() + "port = 0\n")
    done = edge_agent("check-config", cwd=gateway)
    assert done.returncode == 78
    assert "sources.modbus[0].port: must be 1..65535" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_refuses_a_key_others_can_read(gateway):
    """A world-readable pseudonym key fails the check, naming the file and the fix."""
    (gateway / "p.key").chmod(0o644)
    done = edge_agent("check-config", cwd=gateway)
    assert done.returncode == 78
    assert "p.key: mode 0644" in done.stderr


def test_keygen_refuses_to_overwrite(gateway):
    """A second keygen onto the same file fails without touching the key."""
    before = (gateway / "agent.key").read_bytes()
    done = edge_agent("keygen", "--out", "agent.key", cwd=gateway)
    assert done.returncode == 1
    assert "refusing to overwrite" in done.stderr
    assert (gateway / "agent.key").read_bytes() == before


def test_status_before_the_first_run_says_so_and_creates_nothing(gateway):
    """Status only reports: on a gateway that never ran it explains, and writes no file."""
    done = edge_agent("status", cwd=gateway)
    assert done.returncode == 1
    assert "has the agent run yet?" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (gateway / "buffer.sqlite").exists()


def test_status_of_a_fresh_buffer(gateway):
    """A buffer with nothing in it reports zeros and sequence 1 next."""
    Buffer(gateway / "buffer.sqlite").close()
    done = edge_agent("status", cwd=gateway)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    counts = (status["pending_readings"], status["pending_batches"], status["next_sequence"])
    assert counts == (0, 0, 1)


def test_check_config_refuses_a_buffer_in_a_missing_folder(gateway):
    """A buffer path whose folder does not exist is caught before the agent runs."""
    config = gateway / "edge-agent.toml"
    config.write_text(
        config.read_text().replace("[uplink]", '[buffer]\npath = "missing/buffer.sqlite"\n[uplink]')
    )
    done = edge_agent("check-config", cwd=gateway)
    assert done.returncode == 78
    assert "buffer.path: folder" in done.stderr


def test_quarantine_lists_what_was_kept_out_with_the_reason(gateway):
    """Quarantined items come back newest first, payload readable, reason given."""
    buffer = Buffer(gateway / "buffer.sqlite")
    buffer.put_quarantine(source="mqtt", device="grid/x", reason="not JSON", payload=b"\xffTEMP")
    buffer.put_quarantine(source="mqtt", device="grid/x", reason="seq must be", payload=b"{}")
    buffer.close()
    done = edge_agent("quarantine", "--limit", "1", cwd=gateway)
    assert done.returncode == 0, done.stderr
    (item,) = json.loads(done.stdout)
    assert (item["reason"], item["payload"], item["source"]) == ("seq must be", "{}", "mqtt")
