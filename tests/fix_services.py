"""Fixtures that start real services on free loopback ports: Mosquitto, simulator, core, agent."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from fix_db import core_dsn
from pgcluster import free_loopback_port, free_loopback_ports
from scorecard import score

from core_ingest import agents
from core_ingest.certificates import (
    create_authority,
    issue_agent_certificate,
    issue_server_certificate,
)
from edge_agent.config import UplinkTlsConfig
from edge_agent.keys import (
    ClientTls,
    generate_pseudonym_key,
    generate_signing_key,
    load_client_tls,
    load_pseudonym_key,
)
from proto import pb, pb_grpc
from substation_sim import (
    Field,
    FieldRecord,
    Scenario,
    ServedReading,
    SimulatorRunner,
    parse_scenario,
)

BIN = Path(sys.executable).parent


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> object:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def governance(*args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``governance`` command as a user would, with ``--dsn`` when given."""
    extra = ["--dsn", dsn] if dsn else []
    return subprocess.run(
        [str(BIN / "governance"), *args, *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def stop_process(process: subprocess.Popen) -> None:
    """Terminate (then kill) a started process and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Broker:
    """A Mosquitto broker on a free loopback port that a test can stop and start again.

    With ``persistence`` it saves its sessions and queued messages on the way down (SIGTERM)
    and loads them on start, as a substation's broker should run.
    """

    def __init__(self, folder: Path, *, persistence: bool = False) -> None:
        """Write the configuration in ``folder``; do not start."""
        self.port = free_loopback_port()
        self.config = folder / "mosquitto.conf"
        # As root, mosquitto would switch to its own user, who cannot write in the test's folder.
        stored = f"persistence true\npersistence_location {folder}/\nuser root\n"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            + (stored if persistence else "persistence false\n")
        )
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the broker and wait until it listens."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        process = subprocess.Popen([binary, "-c", str(self.config)], stderr=subprocess.PIPE)
        self._process = process
        wait_until(
            lambda: _accepts(self.port) or process.poll() is not None,
            timeout=10,
            what="mosquitto to listen",
        )
        if process.poll() is not None:
            pytest.fail(
                f"mosquitto exited: {process.stderr.read().decode() if process.stderr else ''}"
            )

    def stop(self) -> None:
        """Stop the broker in order (SIGTERM: it saves what it persists)."""
        if self._process is not None:
            stop_process(self._process)
            self._process = None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Mosquitto broker (no persistence) on a free loopback port; yields the port."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker.port
    finally:
        broker.stop()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def field_scenario(  # noqa: PLR0913 - keyword-only, each a part of the scenario
    *,
    meters: int,
    concentrators: int = 1,
    faults: tuple[dict, ...] = (),
    base_port: int = 5020,
    mqtt_port: int | None = None,
    start: str = "2026-11-02T00:00:00Z",
) -> Scenario:
    """One North substation with ``concentrators`` of ``meters`` each, from ``start``."""
    data = {
        "scenario": {"name": "test", "seed": 7, "start": start},
        "modbus": {"host": "127.0.0.1", "base_port": base_port},
        "regions": [
            {
                "name": "North",
                "substations": 1,
                "meters_per_concentrator": meters,
                "concentrators_per_substation": concentrators,
            }
        ],
        "faults": list(faults),
    }
    if mqtt_port is not None:
        data["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
    return parse_scenario(data)


class RunningSimulator:
    """A simulator serving in a background thread's event loop; step it with ``close_interval``."""

    def __init__(  # noqa: PLR0913 - keyword-only, each a part of the scenario
        self,
        *,
        meters: int,
        record_path: Path,
        concentrators: int = 1,
        faults: tuple[dict, ...] = (),
        mqtt_port: int | None = None,
        start: str = "2026-11-02T00:00:00Z",
    ) -> None:
        self.port = free_loopback_ports(concentrators + 1)
        scenario = field_scenario(
            meters=meters,
            concentrators=concentrators,
            faults=faults,
            base_port=self.port,
            mqtt_port=mqtt_port,
            start=start,
        )
        self.record = FieldRecord(record_path)
        self.field = Field(scenario, record=self.record)
        self.device = self.field.substations[0].concentrators[0].name
        self._loop = asyncio.new_event_loop()
        self._runner = SimulatorRunner(self.field)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._runner.__aenter__())

    def _call(self, coroutine: object, timeout: float = 30) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout)  # type: ignore[arg-type]

    def close_interval(self) -> int:
        """Close one interval on the simulator's loop; return its end."""

        async def step() -> int:
            return self._runner.close_interval()

        return self._call(step())  # type: ignore[return-value]

    def run_clock(self, *, speed: float, intervals: int) -> None:
        """Run the simulator's clock for ``intervals`` at ``speed`` and wait until done."""
        self._call(self._runner.run_clock(speed=speed, intervals=intervals), timeout=300)
        if self._runner.mqtt is not None:
            self._call(self._runner.mqtt.wait_published(), timeout=60)

    def served(self) -> list[ServedReading]:
        """What the first concentrator served so far, from the simulator's own record."""
        return self.record.served(self.device)

    def stop(self) -> None:
        """Stop serving and end the thread."""
        self._call(self._runner.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.record.close()


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., RunningSimulator]]:
    """Factory: ``simulator(meters=N)`` starts a stepped simulator, stopped after the test."""
    started: list[RunningSimulator] = []

    def start(*, meters: int, **options: object) -> RunningSimulator:
        sim = RunningSimulator(
            meters=meters, record_path=tmp_path / f"record-{len(started)}.sqlite", **options
        )  # type: ignore[arg-type]
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def mqtt_section(port: int, *transformers: str) -> str:
    """An agent's ``[mqtt]`` table for the broker on ``port``: each transformer's topic, by id.

    ``transformers`` are ids of the test scenario's North N-S01 substation, e.g. ``N-S01-T1``.
    """
    section = f'\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
    for transformer in transformers:
        section += (
            f'\n[[mqtt.transformers]]\ntopic = "grid/North/N-S01/{transformer}/telemetry"\n'
            f'transformer_id = "{transformer}"\n'
        )
    return section


def stored_readings(dsn: str) -> int:
    """Meter readings in the core's database."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM meter_readings").fetchone()[0]


def stored_and_sent(dsn: str) -> tuple[int, int]:
    """Readings stored, and readings sent in accepted batches: equal when none was sent twice."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*), (SELECT coalesce(sum(meter_readings), 0) FROM batches)::bigint"
            " FROM meter_readings"
        ).fetchone()


def assert_stored_as_served(agent: AgentSetup, served_by: list[ServedReading], dsn: str) -> None:
    """The database holds what the devices served, each read (never ESTIMATED), as served.

    An estimate is allowed only where nothing was served (a meter that missed the interval);
    nothing is stored as read that was not served. Interval ends are compared as the devices
    sent them (the grid point plus the offset). Nothing waits in the agent's quarantine.
    """
    card = score("stored as served", served=served_by, pseudonym_key=agent.pseudonym_key, dsn=dsn)
    assert card.problems() == [], "; ".join(card.problems())
    status = json.loads(agent.command("status").stdout)
    assert status["quarantined"] == 0


def core_healthy(target: str, *, tls: ClientTls | None = None) -> bool:
    """Whether a core answers Health with serving=True (over mutual TLS with ``tls``)."""
    channel = (
        grpc.secure_channel(
            target,
            grpc.ssl_channel_credentials(tls.authority, tls.private_key, tls.certificate),
        )
        if tls
        else grpc.insecure_channel(target)
    )
    try:
        with channel:
            reply = pb_grpc.IngestStub(channel).Health(pb.HealthRequest(), timeout=1)
    except grpc.RpcError:
        return False
    return reply.serving


def start_core(
    dsn: str, target: str, log_path: Path, *options: str, tls: ClientTls | None = None
) -> subprocess.Popen:
    """Start ``core-ingest serve`` on ``target`` as the core's login; return once it serves."""
    process = subprocess.Popen(
        [str(BIN / "core-ingest"), "serve", "--dsn", core_dsn(dsn), "--listen", target, *options],
        stderr=log_path.open("a"),
    )
    wait_until(lambda: core_healthy(target, tls=tls), timeout=30, what=f"core at {target}")
    return process


def serving_core(
    dsn: str, log_path: Path, *options: str, tls: ClientTls | None = None
) -> Iterator[str]:
    """``core-ingest serve`` as a process on ``dsn`` until closed; yields its ``host:port``.

    It connects as the core's login (``core_dsn``), a member of ``ingest`` only.
    """
    target = f"127.0.0.1:{free_loopback_port()}"
    process = start_core(dsn, target, log_path, *options, tls=tls)
    try:
        yield target
    finally:
        stop_process(process)
    # SIGTERM stops it in order (grace period, lineage flushed): exit 0, not killed by the signal
    assert process.returncode == 0, f"core exited with {process.returncode}, see {log_path}"


@contextlib.contextmanager
def core_processes(dsn: str, folder: Path, count: int) -> Iterator[list[str]]:
    """``count`` ``core-ingest serve`` processes on one database; yields their targets."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                contextlib.contextmanager(serving_core)(dsn, folder / f"core{i}.log")
            )
            for i in range(count)
        ]


@pytest.fixture
def core_server(storage_dsn: str, tmp_path: Path) -> Iterator[str]:
    """``core-ingest serve`` as a process on the test's database; yields its ``host:port``."""
    yield from serving_core(storage_dsn, tmp_path / "core.log")


@dataclass
class Pki:
    """A certificate authority in a folder, with the core's certificate for 127.0.0.1/localhost."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def agent(self, agent_id: str) -> tuple[Path, Path]:
        """Issue ``agent_id`` a client certificate; return its certificate and key files."""
        issued = issue_agent_certificate(self.folder, agent_id=agent_id)
        return issued.certificate, issued.key

    def client_tls(self, agent_id: str) -> ClientTls:
        """A new certificate for ``agent_id``, loaded as the agent loads its [uplink.tls]."""
        cert, key = self.agent(agent_id)
        files = UplinkTlsConfig(ca=self.ca, cert=cert, key=key, server_name=None)
        return load_client_tls(files, agent_id=agent_id)


def make_pki(folder: Path) -> Pki:
    """A new authority in ``folder`` and the core's certificate from it."""
    create_authority(folder)
    issue_server_certificate(
        folder, name="localhost", ip_addresses=[ipaddress.ip_address("127.0.0.1")]
    )
    return Pki(folder)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """An authority for the test, as `core-ingest ca init` and `ca issue-server` make it."""
    return make_pki(tmp_path / "ca")


@pytest.fixture
def tls_core_server(storage_dsn: str, tmp_path: Path, pki: Pki) -> Iterator[str]:
    """``core-ingest serve`` with ``[server.tls]`` from ``pki``: mutual TLS only."""
    config = tmp_path / "core.toml"
    config.write_text(
        f'[server.tls]\ncert = "{pki.folder}/server-localhost.crt"\n'
        f'key = "{pki.folder}/server-localhost.key"\nclient_ca = "{pki.ca}"\n'
    )
    probe = pki.client_tls("health-probe")
    yield from serving_core(storage_dsn, tmp_path / "core.log", "--config", str(config), tls=probe)


@dataclass
class AgentSetup:
    """An agent's keys and configuration in a folder, enrolled at the core's database."""

    folder: Path
    agent_id: str
    config_path: Path
    pseudonym_key: bytes

    def run(self, *, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``edge-agent run`` with this configuration (``env``: its environment)."""
        log = (self.folder / "agent.log").open("a")
        return subprocess.Popen(
            [str(BIN / "edge-agent"), "run", "--config", str(self.config_path)],
            stderr=log,
            env=env,
        )

    def wait_subscribed(self) -> None:
        """Wait until the running agent has subscribed to its MQTT topics."""
        wait_until(
            lambda: "subscribed" in (self.folder / "agent.log").read_text(),
            timeout=30,
            what="the agent's subscription",
        )

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another ``edge-agent`` command with this configuration."""
        return subprocess.run(
            [str(BIN / "edge-agent"), *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture(scope="session")
def agent_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an agent's ``agent.key`` and ``pseudonym.key``, for agents run in-process."""
    folder = tmp_path_factory.mktemp("agent-keys")
    generate_signing_key(folder / "agent.key")
    generate_pseudonym_key(folder / "pseudonym.key")
    return folder


@pytest.fixture
def agent_setup(tmp_path: Path, storage_dsn: str) -> Callable[..., AgentSetup]:
    """Factory: ``agent_setup(core=..., modbus_port=...)`` writes keys and config, enrolls."""

    def make(  # noqa: PLR0913 - keyword-only, each a part of the config
        *,
        core: str,
        modbus_port: int,
        agent_id: str = "substation-test-1",
        extra_sources: tuple[str, ...] = (),
        extra: str = "",
        uplink: str = "",
    ) -> AgentSetup:
        """Keys, enrollment and a config that reads ``modbus_port``.

        ``extra_sources`` are more ``[[sources.modbus]]`` bodies; ``extra`` is TOML appended as is;
        ``uplink`` is more lines for the ``[uplink]`` table.
        """
        folder = tmp_path / agent_id
        folder.mkdir()
        public_pem = generate_signing_key(folder / "agent.key")
        generate_pseudonym_key(folder / "pseudonym.key")
        with psycopg.connect(storage_dsn, autocommit=True) as conn:
            agents.enroll(conn, agent_id, agents.public_key_from_pem(public_pem))
        config = folder / "edge-agent.toml"
        config.write_text(
            f'[agent]\nid = "{agent_id}"\nsigning_key_file = "agent.key"\n\n'
            '[pseudonymization]\nkey_file = "pseudonym.key"\nkey_id = "test-key-1"\n\n'
            f'[uplink]\ntarget = "{core}"\nbatch_max_age_seconds = 0.05\n{uplink}\n'
            f'[[sources.modbus]]\nname = "conc-1"\nhost = "127.0.0.1"\nport = {modbus_port}\n'
            "unit_id = 1\npoll_interval_seconds = 0.1\n"
            + "".join(f"\n[[sources.modbus]]\n{body}\n" for body in extra_sources)
            + extra
        )
        return AgentSetup(
            folder=folder,
            agent_id=agent_id,
            config_path=config,
            pseudonym_key=load_pseudonym_key(folder / "pseudonym.key"),
        )

    return make
