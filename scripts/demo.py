"""End-to-end demo on an embedded default: simulator → edge agent → core → PostgreSQL.

Starts its own throwaway PostgreSQL (TimescaleDB when installed) and Mosquitto broker, creates
keys, sets the database up with least privilege (the schema's owner migrates, `governance
access init` makes the roles, an operator enrolls the agent, the core connects as `ingest`),
runs the simulator's ``small`` scenario (1,000 meters in two concentrators, one transformer
publishing over MQTT), the agent and the core with their real commands, waits until every
served meter reading is stored, prints what was stored next to what was served, and cleans up.

With ``--report DIR`` (best with ``--intervals 96``, a whole day), the analytics run over the
stored day as an operator would, and the daily report is written into DIR: the transformer
registry loaded (``substation-sim assets``) and its health computed, five weeks of history
before the day seeded as the core's rollups would hold them (the simulator's own load model,
``tests/load_history.py``: five weeks through the pipeline would take an hour), the forecast
model chosen and the day forecast, then ``analytics report daily``.

Usage: python scripts/demo.py [--intervals 4] [--report DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import psycopg

# The throwaway PostgreSQL clusters of the tests (test infrastructure, not a product module).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from load_history import hourly_load
from pgcluster import (
    CORE_LOGIN,
    OPERATOR_LOGIN,
    OWNER_LOGIN,
    PostgresCluster,
    as_login,
    free_loopback_port,
    free_loopback_ports,
)

from substation_sim.scenario import load_scenario

BIN = Path(sys.executable).parent
WAIT_SECONDS = 120  # and one more per interval run
SMALL_METERS = 1_000  # the small scenario: two concentrators of 500 meters
DAY = "2026-11-02"  # the small scenario's first day
HISTORY_DAYS = 35  # seeded before it for the forecast: three weeks to learn, one to choose


def command(*args: str, env: dict[str, str] | None = None) -> dict:
    """Run one of the project's commands and return its JSON output."""
    return json.loads(run(*args, env=env))


def run(*args: str, env: dict[str, str] | None = None) -> str:
    """Run one of the project's commands and return what it printed."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]], check=True, capture_output=True, text=True, env=env
    )
    return done.stdout


def set_up_database(dsn: str) -> dict[str, str]:
    """Migrate as the owner, grant the roles as the administrator; the core's environment.

    As a deployment does it: the schema's owner (no superuser) runs the migrations, the
    administrator makes the group roles and the logins' memberships, an operator enrolls the
    agent and the core connects as a member of ``ingest`` only.
    """
    migrated = command(
        "core-ingest", "migrate", env={**os.environ, "CORE_INGEST_DSN": as_login(dsn, OWNER_LOGIN)}
    )
    print(f"schema version {migrated['schema_version']}, storage {migrated['storage']}")
    admin = {**os.environ, "GOVERNANCE_DSN": dsn}
    run("governance", "access", "init", "--json", env=admin)
    for login, role in ((CORE_LOGIN, "ingest"), (OPERATOR_LOGIN, "operations")):
        print(
            run(
                "governance", "access", "grant", "--login", login, "--role", role, env=admin
            ).strip()
        )
    return {**os.environ, "CORE_INGEST_DSN": as_login(dsn, CORE_LOGIN)}


def spawn(*args: str, log: IO[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start one of the project's commands in the background, its log going to ``log``."""
    return subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, stderr=log)


def write_agent_config(work: Path, *, core_port: int, sim_port: int, mqtt_port: int) -> Path:
    """The agent's TOML configuration: ``small``'s two concentrators, feeder head, transformer."""
    path = work / "edge-agent.toml"
    path.write_text(
        f"""
[agent]
id = "demo-substation-1"
signing_key_file = "agent.key"

[pseudonymization]
key_file = "pseudonym.key"
key_id = "demo-2026-11"

[buffer]
path = "buffer.sqlite"

[uplink]
target = "127.0.0.1:{core_port}"
batch_max_age_seconds = 0.2

[[sources.modbus]]
name = "N-S01-C1"
host = "127.0.0.1"
port = {sim_port}
poll_interval_seconds = 0.2

[[sources.modbus]]
name = "N-S01-C2"
host = "127.0.0.1"
port = {sim_port + 1}
poll_interval_seconds = 0.2

[[sources.modbus]]
name = "N-S01-FH"
host = "127.0.0.1"
port = {sim_port + 2}
poll_interval_seconds = 0.2
role = "feeder_head"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[[mqtt.transformers]]
topic = "grid/North/N-S01/N-S01-T1/telemetry"
transformer_id = "N-S01-T1"
"""
    )
    return path


def start_broker(work: Path) -> tuple[subprocess.Popen, int]:
    """A Mosquitto broker on a free loopback port, for the transformer telemetry.

    With persistence, as in the field: the agent's session and the messages queued for it
    survive a broker restart (docs/mqtt-topics.md, "Delivery").
    """
    port = free_loopback_port()
    config = work / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence true\npersistence_location {work}/\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL), port


def main() -> int:
    """Run the demo; exit 0 when the database holds exactly what the simulator served."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=4)
    parser.add_argument("--report", type=Path, help="write the day's analytics report here")
    options = parser.parse_args()
    cluster = PostgresCluster(port=free_loopback_port())
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="meterpipe-demo-") as tmp:
        work = Path(tmp)
        try:
            cluster.start()
            dsn = cluster.create_database("meters")
            print(f"PostgreSQL on {dsn} (TimescaleDB preloaded: {cluster.timescaledb})")
            command("edge-agent", "keygen", "--out", str(work / "agent.key"))
            command("edge-agent", "pseudonym-keygen", "--out", str(work / "pseudonym.key"))
            env = set_up_database(dsn)
            command(
                "core-ingest",
                "agents",
                "add",
                "--agent-id",
                "demo-substation-1",
                "--public-key-file",
                str(work / "agent.key.pub"),
                "--substation",
                "N-S01",
                "--region",
                "North",
                env={**os.environ, "CORE_INGEST_DSN": as_login(dsn, OPERATOR_LOGIN)},
            )
            broker, mqtt_port = start_broker(work)
            processes.append(broker)
            core_port, sim_port = free_loopback_port(), free_loopback_ports(3)
            config = write_agent_config(
                work, core_port=core_port, sim_port=sim_port, mqtt_port=mqtt_port
            )
            logs = (work / "logs.txt").open("w")
            processes.append(
                spawn(
                    "core-ingest", "serve", "--listen", f"127.0.0.1:{core_port}", env=env, log=logs
                )
            )
            processes.append(
                spawn(
                    "substation-sim",
                    "run",
                    "small",
                    "--base-port",
                    str(sim_port),
                    "--mqtt-port",
                    str(mqtt_port),
                    "--intervals",
                    str(options.intervals),
                    "--record",
                    str(work / "record.sqlite"),
                    log=logs,
                )
            )
            processes.append(spawn("edge-agent", "run", "--config", str(config), log=logs))
            expected = (SMALL_METERS + 1) * options.intervals  # customers and the feeder head
            stored = wait_for_readings(dsn, expected, WAIT_SECONDS + options.intervals)
            report(dsn, work / "record.sqlite", expected, stored)
            if options.report:
                analyse(dsn, work, options.report.resolve())
            return 0 if stored == expected else 1
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            cluster.stop()


def wait_for_readings(dsn: str, expected: int, seconds: float) -> int:
    """Poll the database until ``expected`` readings are stored or ``seconds`` run out."""
    deadline = time.monotonic() + seconds
    stored, shown = 0, -1
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and stored < expected:
            time.sleep(0.5)
            stored = conn.execute("SELECT count(*) FROM meter_readings").fetchone()[0]
            if stored != shown:
                print(f"readings stored: {stored}/{expected}", flush=True)
                shown = stored
    return stored


def report(dsn: str, record_path: Path, expected: int, stored: int) -> None:
    """Print what the database holds against the simulator's own record."""
    record = sqlite3.connect(record_path)
    served_wh = record.execute(
        "SELECT count(*), sum(energy_wh) FROM served WHERE device NOT LIKE '%-FH'"
    ).fetchone()
    telemetry = record.execute("SELECT count(*) FROM telemetry").fetchone()[0]
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT meter_id), count(DISTINCT interval_end),"
            " sum(energy_wh)::bigint, (SELECT count(*) FROM batches),"
            " (SELECT count(*) FROM transformer_telemetry)"
            " FROM meter_readings JOIN meters USING (meter_id) WHERE role = 'customer'"
        ).fetchone()
        losses = conn.execute(
            "SELECT feeder_head_wh, losses_wh, round(losses_share::numeric, 4)::float8"
            " FROM substation_day_losses"
        ).fetchone()
        rolled_up = conn.execute("SELECT sum(energy_wh)::bigint FROM region_daily").fetchone()[0]
        lineage = conn.execute(
            "SELECT step, actor FROM reading_lineage WHERE (meter, interval_end) ="
            " (SELECT m.pseudonym, r.interval_end FROM meter_readings r JOIN meters m"
            " USING (meter_id) WHERE r.quality_flags & 2 = 0 LIMIT 1) ORDER BY step_no"
        ).fetchall()
    print(
        json.dumps(
            {
                "served": {
                    "readings": served_wh[0],
                    "energy_wh": served_wh[1],
                    "transformer_messages_published": telemetry,
                },
                "stored": {
                    "readings": row[0],
                    "meters": row[1],
                    "intervals": row[2],
                    "energy_wh": row[3],
                    "batches": row[4],
                    "transformer_telemetry_points": row[5],
                    "energy_wh_in_daily_rollups": rolled_up,
                },
                "losses": {
                    "feeder_head_wh": losses[0] if losses else None,
                    "losses_wh": losses[1] if losses else None,
                    "losses_share": losses[2] if losses else None,
                    "configured_share": 0.07,  # the small scenario's losses_share
                },
                "lineage_of_one_reading": [f"{step}: {actor}" for step, actor in lineage],
                "complete": stored == expected and row[3] == served_wh[1] and losses is not None,
            },
            indent=2,
        )
    )


def seed_history(dsn: str) -> None:
    """Five weeks before the day, as the core's rollups and the transformer's ambient hold them."""
    scenario = load_scenario("small")
    before = dataclasses.replace(scenario, start=scenario.start - HISTORY_DAYS * 86_400)
    load, ambient = hourly_load(before, HISTORY_DAYS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        region_id = conn.execute("SELECT region_id FROM regions WHERE name = 'North'").fetchone()
        with conn.cursor().copy(
            "COPY substation_hourly (substation, region, hour, energy_wh, received, estimated,"
            " suspect) FROM STDIN"
        ) as copy:
            for hour, kwh in load["N-S01"].items():
                copy.write_row(("N-S01", "North", hour, round(kwh * 1000), 4 * SMALL_METERS, 0, 0))
        with conn.cursor().copy(
            "COPY transformer_telemetry (transformer_id, time, metric, value, quality_flags,"
            " agent_id, batch_sequence, region_id) FROM STDIN"
        ) as copy:
            for hour, value in ambient.items():
                copy.write_row(
                    ("N-S01-T1", hour, "ambient_c", value, 0, "demo-substation-1", 0, region_id[0])
                )


def analyse(dsn: str, work: Path, out: Path) -> None:
    """Transformer health, the forecast and the daily report of the day, as an operator would."""
    assets = work / "assets.csv"
    assets.write_text(run("substation-sim", "assets", "small"))
    seed_history(dsn)
    operator = {**os.environ, "ANALYTICS_DSN": as_login(dsn, OPERATOR_LOGIN)}
    steps = (
        ("assets", "load", str(assets)),
        ("health", "run", "--day", DAY),
        ("forecast", "train", "--from", "2026-10-26", "--days", "7"),
        ("forecast", "predict", "--day", DAY),
        ("report", "daily", "--date", DAY, "--out", str(out)),
    )
    for step in steps:
        print(f"analytics {' '.join(step[:2])}:", run("analytics", *step, env=operator).strip())


if __name__ == "__main__":
    sys.exit(main())
