"""End-to-end demo on an embedded default: simulator → edge agent → core → PostgreSQL.

Starts its own throwaway PostgreSQL (TimescaleDB when installed), creates keys, enrolls the
agent, runs the three processes with their real commands, waits until every served reading is
stored, prints what was stored next to what was served, and cleans up.

Usage: python scripts/demo.py [--meters 1000] [--intervals 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from core_ingest.pgcluster import PostgresCluster, free_loopback_port

BIN = Path(sys.executable).parent
WAIT_SECONDS = 120


def command(*args: str, env: dict[str, str] | None = None) -> dict:
    """Run one of the project's commands and return its JSON output."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(done.stdout)


def write_agent_config(work: Path, *, core_port: int, sim_port: int) -> Path:
    """The agent's TOML configuration for this demo."""
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
name = "concentrator-1"
host = "127.0.0.1"
port = {sim_port}
unit_id = 1
poll_interval_seconds = 0.2
"""
    )
    return path


def main() -> int:
    """Run the demo; exit 0 when the database holds exactly what the simulator served."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--intervals", type=int, default=4)
    options = parser.parse_args()
    cluster = PostgresCluster(port=free_loopback_port())
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="meterpipe-demo-") as tmp:
        work = Path(tmp)
        try:
            cluster.start()
            dsn = cluster.create_database("meters")
            env = {**os.environ, "CORE_INGEST_DSN": dsn}
            print(f"PostgreSQL on {dsn} (TimescaleDB preloaded: {cluster.timescaledb})")
            command("edge-agent", "keygen", "--out", str(work / "agent.key"))
            command("edge-agent", "pseudonym-keygen", "--out", str(work / "pseudonym.key"))
            migrated = command("core-ingest", "migrate", env=env)
            print(f"schema version {migrated['schema_version']}, storage {migrated['storage']}")
            command(
                "core-ingest",
                "agents",
                "add",
                "--agent-id",
                "demo-substation-1",
                "--public-key-file",
                str(work / "agent.key.pub"),
                env=env,
            )
            core_port, sim_port = free_loopback_port(), free_loopback_port()
            config = write_agent_config(work, core_port=core_port, sim_port=sim_port)
            logs = (work / "logs.txt").open("w")
            processes.append(
                subprocess.Popen(
                    [str(BIN / "core-ingest"), "serve", "--listen", f"127.0.0.1:{core_port}"],
                    env=env,
                    stderr=logs,
                )
            )
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "substation-sim"),
                        "run",
                        "--port",
                        str(sim_port),
                        "--meters",
                        str(options.meters),
                        "--intervals",
                        str(options.intervals),
                        "--speed",
                        "900",
                        "--served",
                        str(work / "served.sqlite"),
                    ],
                    stderr=logs,
                )
            )
            processes.append(
                subprocess.Popen(
                    [str(BIN / "edge-agent"), "run", "--config", str(config)], stderr=logs
                )
            )
            expected = options.meters * options.intervals
            stored = wait_for_readings(dsn, expected)
            report(dsn, work / "served.sqlite", expected, stored)
            return 0 if stored == expected else 1
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            cluster.stop()


def wait_for_readings(dsn: str, expected: int) -> int:
    """Poll the database until ``expected`` readings are stored or the wait runs out."""
    deadline = time.monotonic() + WAIT_SECONDS
    stored, shown = 0, -1
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and stored < expected:
            time.sleep(0.5)
            stored = conn.execute("SELECT count(*) FROM meter_readings").fetchone()[0]
            if stored != shown:
                print(f"readings stored: {stored}/{expected}", flush=True)
                shown = stored
    return stored


def report(dsn: str, served_path: Path, expected: int, stored: int) -> None:
    """Print what the database holds against the simulator's own record."""
    import sqlite3  # noqa: PLC0415 - only the report reads the simulator's record

    served = sqlite3.connect(served_path)
    served_wh = served.execute("SELECT count(*), sum(energy_wh) FROM served").fetchone()
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT meter), count(DISTINCT interval_end),"
            " sum(energy_wh)::bigint, (SELECT count(*) FROM batches) FROM meter_readings"
        ).fetchone()
    print(
        json.dumps(
            {
                "served": {"readings": served_wh[0], "energy_wh": served_wh[1]},
                "stored": {
                    "readings": row[0],
                    "meters": row[1],
                    "intervals": row[2],
                    "energy_wh": row[3],
                    "batches": row[4],
                },
                "complete": stored == expected and row[3] == served_wh[1],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
