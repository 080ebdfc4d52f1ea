"""What ships in deploy/: systemd units, alerting rules, the Grafana dashboard, each checked.

The units by ``systemd-analyze verify`` (with the binaries pointed at this checkout's), the
daemons' side of ``Type=notify`` and ``WatchdogSec=`` over a real notification socket, the
rules by Prometheus's own ``promtool`` (checked, then unit-tested with series), the dashboard's
SQL run against a migrated database as an operator and its PromQL parsed by ``promtool``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fix_db import core_dsn, operator_dsn
from fix_services import BIN, stop_process
from pgcluster import free_loopback_port

from core_ingest.schema import NATIVE, TIMESCALEDB

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted(DEPLOY.rglob("*.service")) + sorted(DEPLOY.rglob("*.timer"))
DASHBOARD = DEPLOY / "grafana" / "meterpipe-operations.json"
RULES = DEPLOY / "prometheus" / "meterpipe-rules.yml"
DAEMON_UNITS = ("edge-agent.service", "core-ingest.service")
HARDENING = (
    "Type=notify",
    "WatchdogSec=",
    "StateDirectory=",
    "LoadCredential=",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=\n",
    "SystemCallFilter=@system-service",
)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: scripts/setup.sh installs it")
    return found


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_each_unit_verifies_without_a_warning(unit, tmp_path):
    """The units pass systemd's own checker silently, their binaries being this checkout's."""
    text = re.sub(r"/(opt/meterpipe|usr/local)/bin/", f"{BIN}/", unit.read_text())
    copy = tmp_path / unit.name
    copy.write_text(text)
    if unit.suffix == ".timer":  # a timer is verified with the service it starts
        service = unit.with_suffix(".service")
        (tmp_path / service.name).write_text(
            re.sub(r"/(opt/meterpipe|usr/local)/bin/", f"{BIN}/", service.read_text())
        )
    result = subprocess.run(
        [_tool("systemd-analyze"), "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


@pytest.mark.parametrize("name", DAEMON_UNITS)
def test_the_daemon_units_are_hardened_notify_services(name):
    """A dedicated user, its state directory, keys as credentials, no privileges, notify."""
    text = (DEPLOY / "systemd" / name).read_text()
    for setting in HARDENING:
        assert setting in text, f"{name} lacks {setting.strip()}"
    user = name.removesuffix(".service")
    assert f"User={user}" in text
    assert f"StateDirectory={user}" in text


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    yield sock
    sock.close()


def _messages(sock: socket.socket, until: str) -> list[str]:
    """Notifications received until one carries ``until``."""
    seen: list[str] = []
    while not any(until in message for message in seen):
        seen.append(sock.recv(4096).decode())
    return seen


def _assert_notifies(process: subprocess.Popen, sock: socket.socket) -> None:
    """READY=1 first, the watchdog fed twice a period, STOPPING=1 on SIGTERM, exit 0."""
    try:
        first = _messages(sock, "READY=1")
        assert "READY=1" in first[0]
        assert "STATUS=" in first[0]
        fed = _messages(sock, "WATCHDOG=1") + _messages(sock, "WATCHDOG=1")
        assert fed.count("WATCHDOG=1") >= 2
        process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _messages(sock, "STOPPING=1")[-1]
    finally:
        stop_process(process)
    assert process.returncode == 0


def _environment(sock: socket.socket) -> dict[str, str]:
    return {**os.environ, "NOTIFY_SOCKET": sock.getsockname(), "WATCHDOG_USEC": "1000000"}


@pytest.mark.integration
@pytest.mark.parametrize("storage", [TIMESCALEDB])
def test_the_core_says_ready_feeds_the_watchdog_and_says_stopping(
    storage_dsn, notify_socket, tmp_path
):
    listen = f"127.0.0.1:{free_loopback_port()}"
    process = subprocess.Popen(
        [str(BIN / "core-ingest"), "serve", "--dsn", core_dsn(storage_dsn), "--listen", listen],
        env=_environment(notify_socket),
        stderr=(tmp_path / "core.log").open("w"),
    )
    _assert_notifies(process, notify_socket)


@pytest.mark.integration
@pytest.mark.parametrize("storage", [TIMESCALEDB])
def test_the_agent_says_ready_feeds_the_watchdog_and_says_stopping(
    simulator, agent_setup, notify_socket
):
    sim = simulator(meters=3)
    agent = agent_setup(core=f"127.0.0.1:{free_loopback_port()}", modbus_port=sim.port)
    process = subprocess.Popen(
        [str(BIN / "edge-agent"), "run", "--config", str(agent.config_path)],
        env=_environment(notify_socket),
        stderr=(agent.folder / "agent.log").open("w"),
    )
    _assert_notifies(process, notify_socket)


def test_the_alerting_rules_check_and_pass_their_unit_tests():
    """promtool: the rules parse, and each tested alert fires when and as it should."""
    promtool = _tool("promtool")
    for command in (
        ["check", "rules", str(RULES)],
        ["test", "rules", str(RULES.with_suffix(".test.yml"))],
    ):
        result = subprocess.run(
            [promtool, *command], capture_output=True, text=True, check=False, cwd=RULES.parent
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_the_dashboards_promql_parses(tmp_path):
    """Every Prometheus query, as a recording rule, passes ``promtool check rules``."""
    exprs = [
        target["expr"]
        for panel in _panels()
        if panel["datasource"]["type"] == "prometheus"
        for target in panel["targets"]
    ]
    assert len(exprs) >= 8
    rules = tmp_path / "dashboard-rules.yml"
    records = [{"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rules.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run(
        [_tool("promtool"), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _grafana_sql(query: str) -> str:
    """The query as Grafana's PostgreSQL data source sends it (its time macro expanded)."""
    return re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"\1 BETWEEN '2026-11-01T00:00:00Z' AND '2026-12-01T00:00:00Z'",
        query,
    )


@pytest.mark.integration
@pytest.mark.parametrize("storage", [TIMESCALEDB, NATIVE])
def test_the_dashboards_sql_runs_as_an_operator(storage_dsn):
    """Each TimescaleDB panel's query runs on the migrated schema with an operator's rights."""
    queries = [
        target["rawSql"]
        for panel in _panels()
        if panel["datasource"]["type"] == "grafana-postgresql-datasource"
        for target in panel["targets"]
    ]
    assert len(queries) >= 6
    with psycopg.connect(operator_dsn(storage_dsn)) as conn:
        for query in queries:
            assert "$__" not in _grafana_sql(query), query
            conn.execute(_grafana_sql(query)).fetchall()


def test_every_metric_the_rules_and_dashboard_name_is_documented():
    """Names only from the daemons' documented metrics (the README's metrics table)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    text = RULES.read_text() + DASHBOARD.read_text()
    names = set(re.findall(r"meterpipe_(?:edge|core)_[a-z_]+", text))
    base = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in names}
    missing = sorted(name for name in base if f"`{name}" not in readme)
    assert missing == [], f"not in the README's metrics table: {missing}"
