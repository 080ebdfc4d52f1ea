"""Soak: many agents streaming to one core for a simulated week; memory and latency over time.

One simulator process serves AGENTS substations (a concentrator of METERS meters and a
feeder-head meter each, in four regions); one ``edge-agent run`` per substation polls its two
devices and streams to one ``core-ingest serve``, which stores in TimescaleDB (PostgreSQL with
production durability). The simulator's clock runs DAYS simulated days at SPEED.

While it runs, every SAMPLE seconds: the resident memory (RSS) of the core and of one agent
(the first), the readings the core has stored (its metrics), the simulated time. At the end:

- nothing lost: per agent, the readings stored as read against meters x intervals the
  concentrator and the feeder head served (each is served once an interval); none estimated,
  none twice (the database's key);
- memory: the curves (``memory.csv`` as sampled, ``memory.png``), and the growth of each
  from the end of the first simulated day to the end (flat: a few per cent);
- latency from poll to commit (``meter_readings.poll_time`` to ``batches.committed_at``), p50,
  p95, p99 per simulated day.

Usage: .venv/bin/python benchmarks/soak.py [--agents 50] [--meters 2000] [--days 7]
           [--speed 270] [--out soak-results]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from core_ingest import agents
from edge_agent.keys import generate_pseudonym_key, generate_signing_key
from proto.quality import QualityFlag

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fix_db import core_dsn, set_up
from pgcluster import PostgresCluster, free_loopback_port, free_loopback_ports

BIN = Path(sys.executable).parent
REGIONS = ("North", "South", "East", "West")
START = 1_793_577_600  # 2026-11-02T00:00:00Z, the scenario's start
DRAIN_LIMIT_SECONDS = 600  # after the last interval, for the store to become complete
log = logging.getLogger("soak")


@dataclass
class Samples:
    """What the sampler saw, one row per sample."""

    rows: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    # (seconds since start, simulated interval end, core RSS kB, agent RSS kB, readings stored)


def rss_kb(pid: int) -> int:
    """Resident memory of a process, kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def listening(port: int) -> bool:
    """Whether something accepts connections on loopback ``port``."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stored_readings(metrics: str) -> int:
    """The core's count of readings stored, from its metrics endpoint."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "meterpipe_core_readings_stored_total":
                return int(sample.value)
    return 0


def scenario(folder: Path, options: argparse.Namespace, port: int) -> Path:
    """The soak's field: AGENTS substations spread over four regions, one concentrator each."""
    per_region = [options.agents // 4 + (i < options.agents % 4) for i in range(4)]
    text = (
        f'[scenario]\nname = "soak"\nseed = 15\nstart = "2026-11-02T00:00:00Z"\n'
        f'speed = {options.speed}\n\n[modbus]\nhost = "127.0.0.1"\nbase_port = {port}\n'
    )
    for name, substations in zip(REGIONS, per_region, strict=True):
        if substations:
            text += (
                f'\n[[regions]]\nname = "{name}"\nsubstations = {substations}\n'
                f"concentrators_per_substation = 1\nmeters_per_concentrator = {options.meters}\n"
            )
    path = folder / "soak.toml"
    path.write_text(text)
    return path


def substations(options: argparse.Namespace) -> list[tuple[str, str]]:
    """(region, substation name) of each agent, in the simulator's device order."""
    per_region = [options.agents // 4 + (i < options.agents % 4) for i in range(4)]
    return [
        (region, f"{region[0]}-S{index + 1:02d}")
        for region, count in zip(REGIONS, per_region, strict=True)
        for index in range(count)
    ]


def agent_config(  # noqa: PLR0913 - where the agent runs, and what it reads
    folder: Path, number: int, place: tuple[str, str], *, core: str, port: int, dsn: str
) -> Path:
    """Keys, enrollment and configuration of agent ``number`` (its two devices from ``port``)."""
    region, substation = place
    agent_id = f"soak-{number + 1:03d}"
    home = folder / agent_id
    home.mkdir()
    public_pem = generate_signing_key(home / "agent.key")
    generate_pseudonym_key(home / "pseudonym.key")
    with psycopg.connect(dsn, autocommit=True) as conn:
        agents.enroll(
            conn,
            agent_id,
            agents.public_key_from_pem(public_pem),
            substation=substation,
            region=region,
        )
    devices = "".join(
        f'\n[[sources.modbus]]\nname = "{role}"\nhost = "127.0.0.1"\n'
        f'port = {port + 2 * number + i}\npoll_interval_seconds = 2\nrole = "{role}"\n'
        for i, role in enumerate(("customer", "feeder_head"))
    )
    config = home / "edge-agent.toml"
    config.write_text(
        f'[agent]\nid = "{agent_id}"\nsigning_key_file = "agent.key"\n\n'
        '[pseudonymization]\nkey_file = "pseudonym.key"\nkey_id = "soak-1"\n\n'
        f'[uplink]\ntarget = "{core}"\nbatch_max_age_seconds = 1\n' + devices
    )
    return config


def sample(  # noqa: PLR0913 - what to watch, where to write, how often, until when
    processes: dict[str, subprocess.Popen], metrics: str, closes: list[int], *, into: Samples,
    every: float, stop: threading.Event,
) -> None:  # fmt: skip
    """Every ``every`` seconds until ``stop``: RSS of the core and the first agent, stored.

    Each sample is appended to ``memory.csv`` at once: an interrupted soak keeps its curve.
    """
    started = time.monotonic()
    with (OPTIONS.out / "memory.csv").open("w", newline="", buffering=1) as out:
        writer = csv.writer(out)
        writer.writerow(["seconds", "simulated_end", "core_rss_kb", "agent_rss_kb", "stored"])
        while not stop.wait(every):
            try:
                stored = stored_readings(metrics)
            except OSError:
                stored = into.rows[-1][4] if into.rows else 0
            into.rows.append((
                time.monotonic() - started, closes[-1] if closes else START,
                rss_kb(processes["core"].pid), rss_kb(processes["agent"].pid), stored,
            ))  # fmt: skip
            writer.writerow(into.rows[-1])


def follow_closes(simulator: subprocess.Popen, closes: list[int], log_file: Path) -> None:
    """Note each interval the simulator closes (its log), and keep its log."""
    with log_file.open("w") as kept:
        for line in simulator.stderr or ():
            kept.write(line)
            if "closed interval ending" in line:
                closes.append(int(line.split("closed interval ending")[1].split()[0]))


OPTIONS = argparse.Namespace()  # the command line, read once


def main() -> None:
    """Run the soak; print and write its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--meters", type=int, default=2_000, help="Per agent's concentrator.")
    parser.add_argument("--days", type=float, default=7.0, help="Simulated days.")
    parser.add_argument("--speed", type=float, default=270.0, help="Simulated s per second.")
    parser.add_argument("--sample", type=float, default=10.0, help="Seconds between samples.")
    parser.add_argument("--out", type=Path, default=Path("soak-results"))
    parser.parse_args(namespace=OPTIONS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    OPTIONS.out.mkdir(parents=True, exist_ok=True)
    cluster = PostgresCluster(port=free_loopback_port(), timescaledb=True, durable=True)
    cluster.start()
    try:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            dsn = cluster.create_database("soak")
            set_up(dsn, "timescaledb")
            samples = run(Path(tmp), dsn)
            report(dsn, samples)
    finally:
        cluster.stop()


def run(folder: Path, dsn: str) -> Samples:
    """Start the core, the simulator and the agents; sample until the store is complete.

    The agents start once the devices listen (a device not there yet would open its breaker
    for a while); the simulator's clock is running by then, and they begin with a backfill.
    """
    intervals = math.ceil(OPTIONS.days * 96)
    core, metrics = f"127.0.0.1:{free_loopback_port()}", f"127.0.0.1:{free_loopback_port()}"
    (folder / "core.toml").write_text(f'[metrics]\nlisten = "{metrics}"\n')
    port = free_loopback_ports(2 * OPTIONS.agents)
    processes = {
        "core": subprocess.Popen(
            [str(BIN / "core-ingest"), "serve", "--dsn", core_dsn(dsn), "--listen", core,
             "--config", str(folder / "core.toml")],
            stderr=(OPTIONS.out / "core.log").open("w"),
        ),
    }  # fmt: skip
    simulator = subprocess.Popen(
        [str(BIN / "substation-sim"), "run", str(scenario(folder, OPTIONS, port)),
         "--intervals", str(intervals), "--record", str(folder / "record.sqlite")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not listening(port + 2 * OPTIONS.agents - 1) and time.monotonic() < deadline:
        time.sleep(0.5)
    places = substations(OPTIONS)
    configs = [
        agent_config(folder, n, places[n], core=core, port=port, dsn=dsn)
        for n in range(OPTIONS.agents)
    ]
    for number, config in enumerate(configs):
        processes["agent" if number == 0 else f"agent-{number}"] = subprocess.Popen(
            [str(BIN / "edge-agent"), "run", "--config", str(config)],
            stderr=(OPTIONS.out / "agent.log" if number == 0 else folder / f"{number}.log").open(
                "w"
            ),
        )
    closes: list[int] = []
    threading.Thread(
        target=follow_closes, args=(simulator, closes, OPTIONS.out / "simulator.log"), daemon=True
    ).start()
    samples, stop = Samples(), threading.Event()
    sampler = threading.Thread(
        target=sample,
        args=(processes, metrics, closes),
        kwargs={"into": samples, "every": OPTIONS.sample, "stop": stop},
    )
    sampler.start()
    expected = OPTIONS.agents * (OPTIONS.meters + 1) * intervals
    drain_started: float | None = None
    try:
        while (stored := samples.rows[-1][4] if samples.rows else 0) < expected:
            if len(closes) >= intervals:  # the clock is done: the rest must drain
                drain_started = drain_started or time.monotonic()
                if time.monotonic() - drain_started > DRAIN_LIMIT_SECONDS:
                    log.warning("the store did not complete %d s after the last interval",
                                DRAIN_LIMIT_SECONDS)  # fmt: skip
                    break
            time.sleep(5)
            log.info("simulated day %.2f of %g, %s readings stored",
                     len(closes) / 96, OPTIONS.days, f"{stored:,}")  # fmt: skip
    finally:
        stop.set()
        sampler.join()
        simulator.terminate()
        simulator.wait(timeout=60)
        for process in processes.values():
            process.terminate()
            process.wait(timeout=60)
    return samples


def report(dsn: str, samples: Samples) -> None:
    """Completeness, memory and latency, printed and written to OPTIONS.out."""
    intervals = math.ceil(OPTIONS.days * 96)
    with psycopg.connect(dsn) as conn:
        per_agent = conn.execute(
            "SELECT a.agent_id, count(r.*) FILTER (WHERE r.quality_flags & %(estimated)s = 0),"
            " count(r.*) FILTER (WHERE r.quality_flags & %(estimated)s <> 0)"
            " FROM agents a LEFT JOIN batches b USING (agent_id)"
            " LEFT JOIN meter_readings r USING (batch_id) GROUP BY 1 ORDER BY 1",
            {"estimated": int(QualityFlag.ESTIMATED)},
        ).fetchall()
        latency = conn.execute(  # day 1 holds the intervals ending after 00:00 up to 24:00
            "SELECT (extract(epoch FROM r.interval_end)::bigint - 900 - %s) / 86400 AS day,"
            " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM b.committed_at - r.poll_time))"
            " FROM meter_readings r JOIN batches b USING (batch_id) GROUP BY 1 ORDER BY 1",
            (START,),
        ).fetchall()
    each = (OPTIONS.meters + 1) * intervals
    read = sum(r for _, r, _ in per_agent)
    estimated = sum(e for *_, e in per_agent)
    short = [(a, r) for a, r, _ in per_agent if r != each]
    print(f"soak: {OPTIONS.agents} agents x {OPTIONS.meters:,} meters (+1 feeder head),"
          f" {intervals} intervals ({OPTIONS.days:g} simulated days)"
          f" at speed {OPTIONS.speed:g}")  # fmt: skip
    print(f"stored as read: {read:,} of {OPTIONS.agents * each:,} served;"
          f" estimated: {estimated:,}; agents short: {short or 'none'}")  # fmt: skip
    print("latency poll -> commit by simulated day (p50 / p95 / p99, s):")
    for day, (p50, p95, p99) in latency:
        print(f"  day {int(day) + 1}: {p50:.2f} / {p95:.2f} / {p99:.2f}")
    memory(samples)


def memory(samples: Samples) -> None:
    """The RSS curves as PNG (the CSV is written as sampled); growth from day 1 to the end."""
    days = [(end - START) / 86_400 for _, end, *_ in samples.rows]
    figure, axis = plt.subplots(figsize=(9, 4))
    for column, name in ((2, "core-ingest"), (3, "edge-agent (soak-001)")):
        axis.plot(days, [row[column] / 1024 for row in samples.rows], label=name)
    axis.set_xlabel("simulated day")
    axis.set_ylabel("resident memory, MB")
    axis.set_ylim(bottom=0)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(OPTIONS.out / "memory.png", dpi=100)
    after_day_one = [
        row for row, day in zip(samples.rows, days, strict=True) if day >= 1 and all(row[2:4])
    ]  # a process gone (RSS 0) is no figure
    if after_day_one:
        for column, name in ((2, "core"), (3, "agent")):
            first, last = after_day_one[0][column], after_day_one[-1][column]
            print(f"{name} RSS: {first / 1024:.0f} MB after day 1, {last / 1024:.0f} MB at the"
                  f" end ({(last - first) / first:+.1%}); peak"
                  f" {max(r[column] for r in samples.rows) / 1024:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
