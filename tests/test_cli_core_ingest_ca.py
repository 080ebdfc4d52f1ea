"""`core-ingest ca` as operators run it, and `serve` refusing a bad `[server.tls]`."""

from __future__ import annotations

import json
import subprocess

from cryptography import x509
from fix_services import BIN

from proto.tls import common_name


def core_ingest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "core-ingest"), *args], capture_output=True, text=True, check=False
    )


def test_init_then_issue_the_core_and_an_agent(tmp_path):
    """Each command prints what it wrote; the keys are private; the agent's CN is its id."""
    folder = str(tmp_path / "ca")
    init = core_ingest("ca", "init", "--dir", folder)
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["subject"] == "CN=meterpipe uplink CA"
    server = core_ingest(
        "ca", "issue-server", "--dir", folder, "--name", "core.example", "--ip", "127.0.0.1"
    )
    assert server.returncode == 0, server.stderr
    assert json.loads(server.stdout)["certificate"] == f"{folder}/server-core.example.crt"
    agent = core_ingest("ca", "issue-agent", "--dir", folder, "--agent-id", "sub-north-0042")
    assert agent.returncode == 0, agent.stderr
    issued = json.loads(agent.stdout)
    assert set(issued) == {"certificate", "key", "subject", "not_after", "sha256"}
    certificate = x509.load_pem_x509_certificate(
        (tmp_path / "ca/agent-sub-north-0042.crt").read_bytes()
    )
    assert common_name(certificate) == "sub-north-0042"
    for key in ("ca.key", "server-core.example.key", "agent-sub-north-0042.key"):
        assert (tmp_path / "ca" / key).stat().st_mode & 0o777 == 0o600, key


def test_existing_files_are_kept_unless_forced(tmp_path):
    """A second init is an error (exit 1, one line) and changes nothing; --force replaces."""
    folder = str(tmp_path / "ca")
    core_ingest("ca", "init", "--dir", folder)
    before = (tmp_path / "ca/ca.key").read_bytes()
    again = core_ingest("ca", "init", "--dir", folder)
    assert again.returncode == 1
    assert "exists already" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    assert (tmp_path / "ca/ca.key").read_bytes() == before
    forced = core_ingest("ca", "init", "--dir", folder, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "ca/ca.key").read_bytes() != before


def test_issuing_before_init_and_bad_addresses_are_clear_errors(tmp_path):
    """No authority yet: exit 1 naming the command to run. A bad --ip: usage error, exit 2."""
    missing = core_ingest("ca", "issue-agent", "--dir", str(tmp_path), "--agent-id", "a")
    assert missing.returncode == 1
    assert "core-ingest ca init" in missing.stderr, missing.stderr
    core_ingest("ca", "init", "--dir", str(tmp_path))
    bad = core_ingest("ca", "issue-server", "--dir", str(tmp_path), "--name", "c", "--ip", "1.2.3")
    assert bad.returncode == 2
    assert "--ip" in bad.stderr, bad.stderr


def test_serve_refuses_to_start_on_an_unusable_tls_file_naming_the_key(tmp_path):
    """Exit 78 before listening, naming server.tls.key; a half table names the missing key."""
    core_ingest("ca", "init", "--dir", str(tmp_path))
    config = tmp_path / "core.toml"
    config.write_text('[server.tls]\ncert = "ca.crt"\nkey = "nowhere.key"\nclient_ca = "ca.crt"\n')
    bad = core_ingest("serve", "--config", str(config), "--dsn", "postgresql://db/x")
    assert bad.returncode == 78
    assert "server.tls.key: cannot read" in bad.stderr, bad.stderr
    config.write_text('[server.tls]\ncert = "ca.crt"\nkey = "ca.key"\n')
    half = core_ingest("serve", "--config", str(config), "--dsn", "postgresql://db/x")
    assert half.returncode == 78
    assert "server.tls.client_ca: is required" in half.stderr, half.stderr
