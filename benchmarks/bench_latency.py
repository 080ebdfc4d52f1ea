"""Benchmark: end-to-end latency in steady state, measured outside and by the core's histogram.

The ``national-slice`` scenario (20,000 meters on 16 concentrators and 8 feeder heads, four
regions) at speed 900: one 15-minute interval closes every wall-clock second. One agent polls
every device each 0.25 s and seals batches at most 0.25 s old; one core stores them in
TimescaleDB (PostgreSQL with production durability). After a warm-up the benchmark measures,
for every reading of the steady-state intervals:

- end to end: from the moment the simulator closed the interval (its own log line, stamped as
  it arrives) to the commit of the batch that stored the reading (``batches.committed_at``);
- poll to commit: from the agent's read (``meter_readings.poll_time``) to that commit;

and reads the core's ``meterpipe_core_reading_latency_seconds{since="poll"}`` histogram over
the same window (scraped before and after, quantiles interpolated in the buckets as
Prometheus's ``histogram_quantile`` does). The two poll-to-commit figures must agree: the same
quantity, measured from the database and by the core as it commits. At speed 900 the
histogram's ``since="interval_end"`` series measures against the scenario's calendar, which
runs 900 times faster than the wall clock: in real time it is the end-to-end figure.

Usage: .venv/bin/python benchmarks/bench_latency.py [--intervals 60] [--warm-up 15]
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from core_ingest import agents
from edge_agent.keys import generate_pseudonym_key, generate_signing_key
from proto.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fix_db import core_dsn, set_up
from pgcluster import PostgresCluster, free_loopback_port, free_loopback_ports
from test_national_slice import device_sources

BIN = Path(sys.executable).parent
CLOSED = re.compile(r"closed interval ending (\d+)")
log = logging.getLogger("bench_latency")


def scrape_histogram(address: str) -> dict[float, float]:
    """The core's ``since="poll"`` latency buckets: upper bound -> cumulative count."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "meterpipe_core_reading_latency_seconds_bucket"
                and sample.labels.get("since") == "poll"
            ):
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """``histogram_quantile`` over the counts added between two scrapes (linear in a bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, cumulative
    return lower


def follow_closes(process: subprocess.Popen, closes: dict[int, float]) -> None:
    """Stamp each 'closed interval ending N' line of the simulator as it arrives."""
    for line in process.stderr or ():
        found = CLOSED.search(line)
        if found:
            closes[int(found.group(1))] = time.time()


def agent_config(folder: Path, core: str, port: int, dsn: str) -> Path:
    """Keys, enrollment and the agent's configuration for every device of the scenario."""
    public_pem = generate_signing_key(folder / "agent.key")
    generate_pseudonym_key(folder / "pseudonym.key")
    with psycopg.connect(dsn, autocommit=True) as conn:
        agents.enroll(conn, "bench-latency", agents.public_key_from_pem(public_pem))
    sources = [
        body.replace("poll_interval_seconds = 1", "poll_interval_seconds = 0.25")
        for body in device_sources("national-slice", port)
    ]
    config = folder / "edge-agent.toml"
    config.write_text(
        '[agent]\nid = "bench-latency"\nsigning_key_file = "agent.key"\n\n'
        '[pseudonymization]\nkey_file = "pseudonym.key"\nkey_id = "bench-1"\n\n'
        f'[uplink]\ntarget = "{core}"\nbatch_max_age_seconds = 0.25\n'
        "batch_max_readings = 20000\n\n"
        + "".join(f"[[sources.modbus]]\n{body}\n\n" for body in sources)
    )
    return config


def measured(
    dsn: str, closes: dict[int, float], window: tuple[float, float]
) -> dict[str, np.ndarray]:
    """Per reading committed in ``window`` (Unix seconds): end to end and poll to commit."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM r.interval_end)::bigint, extract(epoch FROM b.committed_at),"
            " extract(epoch FROM r.poll_time) FROM meter_readings r JOIN batches b USING (batch_id)"
            " WHERE b.committed_at > to_timestamp(%s) AND b.committed_at <= to_timestamp(%s)",
            window,
        ).fetchall()
    ends = np.array([r[0] for r in rows], dtype=np.int64)
    committed = np.array([float(r[1]) for r in rows])
    polled = np.array([float(r[2]) for r in rows])
    closed = np.array([closes[int(e)] for e in ends])
    return {"end_to_end": committed - closed, "poll_to_commit": committed - polled}


def main() -> None:
    """Run the scenario through an agent and a core; print the latencies and the agreement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=int, default=60, help="Intervals the simulator runs.")
    parser.add_argument("--warm-up", type=int, default=15, help="Intervals left out at first.")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cluster = PostgresCluster(port=free_loopback_port(), timescaledb=True, durable=True)
    cluster.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
            dsn = cluster.create_database("bench")
            set_up(dsn, "timescaledb")
            run(options, Path(tmp), dsn)
    finally:
        cluster.stop()


def run(options: argparse.Namespace, folder: Path, dsn: str) -> None:
    """Start core, agent and simulator; measure; stop them."""
    core, metrics = f"127.0.0.1:{free_loopback_port()}", f"127.0.0.1:{free_loopback_port()}"
    (folder / "core.toml").write_text(f'[metrics]\nlisten = "{metrics}"\n')
    port = free_loopback_ports(32)
    config = agent_config(folder, core, port, dsn)
    closes: dict[int, float] = {}
    processes = [
        subprocess.Popen(
            [str(BIN / "core-ingest"), "serve", "--dsn", core_dsn(dsn), "--listen", core,
             "--config", str(folder / "core.toml")],
            stderr=(folder / "core.log").open("w"),
        ),
        subprocess.Popen(
            [str(BIN / "edge-agent"), "run", "--config", str(config)],
            stderr=(folder / "agent.log").open("w"),
        ),
    ]  # fmt: skip
    time.sleep(3)
    simulator = subprocess.Popen(
        [str(BIN / "substation-sim"), "run", "national-slice", "--base-port", str(port),
         "--mqtt-port", str(free_loopback_port()), "--intervals", str(options.intervals),
         "--record", str(folder / "record.sqlite")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    processes.append(simulator)
    threading.Thread(target=follow_closes, args=(simulator, closes), daemon=True).start()
    try:
        figures = steady_state(options, dsn, metrics, closes)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
    report(figures)


def steady_state(
    options: argparse.Namespace, dsn: str, metrics: str, closes: dict[int, float]
) -> tuple[dict[str, np.ndarray], float]:
    """Wait out the warm-up; measure what commits until the last interval closed.

    The window is the time between two scrapes of the core's histogram: the database side
    takes exactly the readings committed in it.
    """
    with Progress("intervals closed", options.intervals, unit="intervals", log=log) as bar:
        while len(closes) < options.warm_up:
            bar.set_done(len(closes))
            time.sleep(0.2)
        started, before = time.time(), scrape_histogram(metrics)
        while len(closes) < options.intervals:
            bar.set_done(len(closes))
            time.sleep(0.2)
        bar.set_done(len(closes))
    ended, after = time.time(), scrape_histogram(metrics)
    return measured(dsn, closes, (started, ended)), histogram_quantile(0.95, before, after)


def report(figures: tuple[dict[str, np.ndarray], float]) -> None:
    """Percentiles of both measures, and the histogram's p95 beside the database's."""
    latencies, histogram_p95 = figures
    count = len(latencies["end_to_end"])
    print(f"readings measured: {count:,} (steady state, national-slice at speed 900)")
    for name, values in latencies.items():
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        print(f"{name:>15}: p50 {p50:.3f} s  p95 {p95:.3f} s  p99 {p99:.3f} s")
    measured_p95 = float(np.percentile(latencies["poll_to_commit"], 95))
    print(
        f"core histogram since=poll p95: {histogram_p95:.3f} s"
        f" (database {measured_p95:.3f} s, ratio {histogram_p95 / measured_p95:.2f})"
    )


if __name__ == "__main__":
    main()
