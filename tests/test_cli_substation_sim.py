"""``substation-sim`` commands: describe, run with a broker, truth; bad scenarios exit 78."""

from __future__ import annotations

import json
import subprocess

import pytest
from fix_services import BIN
from pgcluster import free_loopback_ports

pytestmark = pytest.mark.integration


def sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "substation-sim"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def test_describe_lists_devices_ports_and_topics():
    """Describe names every device with its port, and every transformer with its topic."""
    done = sim("describe", "storm")
    assert done.returncode == 0, done.stderr
    field = json.loads(done.stdout)
    assert field["meters"] == 6_000
    ports = [c["modbus"] for s in field["substations"] for c in s["concentrators"]]
    ports += [s["feeder_head"]["modbus"] for s in field["substations"]]
    assert len(set(ports)) == len(ports) == 9
    topics = [t["topic"] for s in field["substations"] for t in s["transformers"]]
    assert "grid/South/S-S02/S-S02-T2/telemetry" in topics


def test_run_serves_and_records_then_truth_summarizes(tmp_path, mosquitto):
    """A short storm run records served readings and its injected faults, summarized by truth."""
    record = tmp_path / "run.sqlite"
    base = free_loopback_ports(9)
    process = subprocess.Popen(
        [
            str(BIN / "substation-sim"),
            "run",
            "storm",
            "--speed",
            "90000",
            "--intervals",
            "96",
            "--base-port",
            str(base),
            "--mqtt-port",
            str(mosquitto),
            "--record",
            str(record),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stderr:
            if "(96/96)" in line:
                break
        assert process.poll() is None, "simulator exited early"
    finally:
        process.terminate()
        process.wait(timeout=30)
    summary = json.loads(sim("truth", "--record", str(record)).stdout)
    kinds = {row["kind"] for row in summary}
    # Exception replies need a client asking; everything else happens on its own.
    assert {
        "storm",
        "spike",
        "zero",
        "missing",
        "stuck",
        "negative",
        "rollover",
        "reset",
        "clock_skew",
        "incipient_fault",
        "duplicate",
        "out_of_order",
        "malformed",
    } <= kinds
    storm = sum(r["instances"] for r in summary if r["kind"] == "storm")
    assert 0.005 * 4_000 * 24 < storm < 0.02 * 4_000 * 24  # ~1 % of South's 6 h of readings


def test_invalid_scenario_exits_78_naming_the_key(tmp_path):
    """A scenario error is one line naming the key, exit code 78."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\n[[regions]]\nname = "Middle"\n')
    done = sim("describe", str(bad))
    assert done.returncode == 78
    assert "regions[0].name" in done.stderr
    assert "Traceback" not in done.stderr
    assert sim("describe", "no-such-scenario").returncode == 78
