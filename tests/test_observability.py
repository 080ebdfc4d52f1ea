"""Both daemons' metrics move under load, and their JSON log lines share one set of fields."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from pathlib import Path

import pytest
from fix_services import serving_core, stop_process, stored_readings, wait_until
from pgcluster import free_loopback_port

from proto.observability import FIELDS

pytestmark = pytest.mark.integration

METERS = 500

EDGE_HISTOGRAMS = (
    'meterpipe_edge_poll_seconds_count{device="conc-1"}',
    'meterpipe_edge_buffer_commit_seconds_count{operation="put_readings"}',
    'meterpipe_edge_buffer_commit_seconds_count{operation="seal_batch"}',
    "meterpipe_edge_batch_round_trip_seconds_count",
)
CORE_HISTOGRAM = 'meterpipe_core_commit_seconds_count{outcome="accepted"}'


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[0] != "#")
    }


def test_latency_histograms_move_under_load_and_logs_are_json_lines(
    simulator, agent_setup, storage_dsn, tmp_path, monkeypatch
):
    """Each interval the simulator closes moves every histogram of both daemons.

    Both run with JSON logs (set by environment): every line they log is one object with the
    same field names.
    """
    monkeypatch.setenv("EDGE_AGENT_LOG_FORMAT", "json")
    monkeypatch.setenv("CORE_INGEST_LOG_FORMAT", "json")
    edge_address = f"127.0.0.1:{free_loopback_port()}"
    core_address = f"127.0.0.1:{free_loopback_port()}"
    core_config = tmp_path / "core.toml"
    core_config.write_text(f'[metrics]\nlisten = "{core_address}"\n')
    sim = simulator(meters=METERS)
    with contextlib.contextmanager(serving_core)(
        storage_dsn, tmp_path / "core.log", "--config", str(core_config)
    ) as core:
        agent = agent_setup(
            core=core, modbus_port=sim.port, extra=f'\n[metrics]\nlisten = "{edge_address}"\n'
        )
        process = agent.run()
        try:
            figures = []
            for interval in (1, 2):
                sim.close_interval()
                wait_until(
                    lambda n=interval: stored_readings(storage_dsn) >= n * METERS,
                    timeout=60,
                    what=f"interval {interval} stored",
                )
                wait_until(
                    lambda: scrape(edge_address).get(EDGE_HISTOGRAMS[-1], 0) > 0,
                    timeout=30,
                    what="the first round trip observed",
                )
                figures.append((scrape(edge_address), scrape(core_address)))
        finally:
            stop_process(process)
    (edge_1, core_1), (edge_2, core_2) = figures
    for name in EDGE_HISTOGRAMS:
        assert 0 < edge_1[name] < edge_2[name], name
    assert 0 < core_1[CORE_HISTOGRAM] < core_2[CORE_HISTOGRAM]
    assert edge_2['meterpipe_edge_readings_validated_total{outcome="read"}'] >= 2 * METERS
    assert edge_2['meterpipe_edge_buffer_pressure{level="normal"}'] == 1
    assert edge_2["meterpipe_edge_uplink_bytes_total"] > 0
    assert core_2["meterpipe_core_readings_stored_total"] >= 2 * METERS
    assert_device_health(edge_1, edge_2)
    assert_reading_latency(core_1, core_2)
    assert_json_lines(tmp_path / "core.log", "core-ingest")
    assert_json_lines(agent.folder / "agent.log", "edge-agent")


def assert_device_health(edge_1: dict[str, float], edge_2: dict[str, float]) -> None:
    """The device answers, its last good poll moves on, its clock agrees with the gateway's."""
    device = '{device="conc-1"}'
    assert edge_2[f"meterpipe_edge_device_up{device}"] == 1
    last_good = f"meterpipe_edge_device_last_good_poll_timestamp_seconds{device}"
    assert 0 < edge_1[last_good] < edge_2[last_good]
    assert abs(edge_2[f"meterpipe_edge_device_clock_offset_seconds{device}"]) < 2
    assert "meterpipe_edge_buffer_oldest_pending_age_seconds" in edge_2


def assert_reading_latency(core_1: dict[str, float], core_2: dict[str, float]) -> None:
    """Every stored reading observed once since its interval end and once since its poll.

    The simulator's intervals end on 2026-11-02 (its scenario's calendar), so their age at
    commit lies past the last bucket; polls were seconds before the commit.
    """
    for since in ("interval_end", "poll"):
        count = f'meterpipe_core_reading_latency_seconds_count{{since="{since}"}}'
        assert METERS <= core_1[count] < core_2[count]
        assert core_2[count] == core_2["meterpipe_core_readings_stored_total"]
    poll_count = core_2['meterpipe_core_reading_latency_seconds_count{since="poll"}']
    assert core_2['meterpipe_core_reading_latency_seconds_bucket{le="60",since="poll"}'] == (
        poll_count
    )
    assert (
        core_2['meterpipe_core_reading_latency_seconds_bucket{le="259200",since="interval_end"}']
        == 0
    )


def assert_json_lines(log: Path, process: str) -> None:
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) >= 2, log  # at least the start and the metrics endpoint
    for line in lines:
        assert set(line) <= set(FIELDS), line
        assert {"time", "level", "process", "logger", "message"} <= set(line), line
        assert line["process"] == process
