"""Benchmark: signed batches streamed to one core process, against raw binary COPY.

A load generator pre-builds and pre-serializes signed batches (one 15-minute interval of each
agent's meters per batch), then streams them over gRPC on loopback to one ``core-ingest serve``
process, each stream keeping up to 8 batches in flight like the agent. The figure is
end-to-end readings/s from the first batch sent to the last acknowledgement: received,
signature and hash verified, committed with ledger row, meters dimension, lineage columns,
quality counts and rollups.

Baseline, same run, same cluster: raw binary COPY of the same rows into the same table (a fresh
database with the same schema and indexes), one COPY and commit per batch, over 1 and over 2
connections. PostgreSQL runs with production durability (fsync and synchronous_commit on).

Scenarios: 1 agent streaming 10,000 meters x 24 intervals; 50 agents at once, 2,000 meters x
24 intervals each (2.4 million readings). Each in two phases, timed apart: first contact (every
agent's first interval: each meter is new to the meters dimension) and steady state (the other
23 intervals: meters known, as on every day after the first). Also prints the core process's
peak resident memory.

Usage: .venv/bin/python benchmarks/bench_core_ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core_ingest import agents
from core_ingest.store.reading_rows import COPY_COLUMNS, ReadingColumns, copy_buffer
from proto import pb, public_key_bytes, seal_batch
from proto.progress import Progress

# The throwaway PostgreSQL clusters of the tests (test infrastructure, not a product module).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fix_db import core_dsn, set_up
from pgcluster import PostgresCluster, free_loopback_port

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
T0 = 1_793_577_600  # 2026-11-03 00:00 UTC
WINDOW = 8  # batches in flight per stream, the agent's default uplink.max_in_flight
METHOD = "/meterpipe.v1.Ingest/StreamBatches"


@dataclass(frozen=True, slots=True)
class Fleet:
    """Pre-built batches of each agent, serialized, and the same rows as raw COPY buffers."""

    agent_ids: list[str]
    streams: list[list[bytes]]  # per agent, per interval
    copies: list[list[bytes]]  # per agent, per interval
    meters: int  # per agent

    def phase(self, *, first: bool) -> tuple[list[list[bytes]], list[bytes], int]:
        """The first interval of every agent, or all the later ones: streams, copies, readings.

        The first interval brings every meter to the core for the first time (the meters
        dimension grows); the later ones are the steady state of every day after.
        """
        cut = slice(0, 1) if first else slice(1, None)
        streams = [batches[cut] for batches in self.streams]
        copies = [rows for agent in self.copies for rows in agent[cut]]
        return streams, copies, len(copies) * self.meters


def build_fleet(agent_count: int, meters: int, intervals: int, key: Ed25519PrivateKey) -> Fleet:
    """Batches of one interval of ``meters`` meters, per agent, signed and serialized."""
    rng = np.random.default_rng(1)
    agent_ids = [f"bench-{agent_count}-{a:03d}" for a in range(agent_count)]
    streams, copies = [], []
    batch_id = 0
    for a, agent_id in enumerate(agent_ids):
        pseudonyms = [(a * 1_000_000 + m).to_bytes(32, "big") for m in range(meters)]
        registers = rng.integers(10**6, 10**8, size=meters)
        batches, rows = [], []
        for i in range(intervals):
            energy = rng.integers(20, 400, size=meters)
            registers = registers + energy
            body = pb.BatchPayload(devices=[f"modbus://10.{a // 250}.{a % 250}.1:502/1"])
            columns = body.meter_readings
            columns.meters.extend(pseudonyms)
            columns.meter_index.extend(range(meters))
            columns.interval_end.extend([T0 + 900 * (i + 1)] * meters)
            columns.energy_wh.extend(energy.tolist())
            columns.register_wh.extend(registers.tolist())
            columns.quality_flags.extend([0] * meters)
            columns.poll_time_ms.extend([(T0 + 900 * (i + 1) + 7) * 1000] * meters)
            columns.device_index.extend([0] * meters)
            sealed = seal_batch(
                body,
                agent_id=agent_id,
                sequence=i + 1,
                created_ms=(T0 + 900 * (i + 1) + 9) * 1000,
                pseudonym_key_id="bench",
                software_version="bench",
                register_map_version=1,
                private_key=key,
                validation_ruleset="vee-1",
            )
            batches.append(sealed.SerializeToString())
            ids = np.arange(a * meters + 1, (a + 1) * meters + 1, dtype=np.int32)
            batch_id += 1
            rows.append(
                copy_buffer(ReadingColumns.of(columns), ids, batch_id=batch_id, region_id=1)
            )
        streams.append(batches)
        copies.append(rows)
    return Fleet(agent_ids, streams, copies, meters)


def fresh_database(cluster: PostgresCluster, name: str) -> str:
    """A new database set up as in production: migrated by its owner, grants made.

    Returns the superuser's DSN; the core connects as a member of ``ingest`` (``core_dsn``).
    """
    return set_up(cluster.create_database(name), "timescaledb")


def raw_copy(dsn: str, copies: list[bytes], connections: int) -> float:
    """Seconds to COPY every buffer into meter_readings, one commit each, over N connections."""

    def load(part: list[bytes]) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for rows in part:
                with conn.cursor().copy(
                    f"COPY meter_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(rows)

    parts = [copies[i::connections] for i in range(connections)]
    start = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(load, parts))
    return time.perf_counter() - start


def stream(target: str, batches: list[bytes]) -> None:
    """Send pre-serialized batches on one stream, at most WINDOW unacknowledged."""
    slots = threading.Semaphore(WINDOW)

    def requests():  # noqa: ANN202 - a generator of serialized SignedBatch messages
        for batch in batches:
            slots.acquire()
            yield batch

    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(METHOD, response_deserializer=pb.Ack.FromString)
        for ack in call(requests(), timeout=600):
            if ack.status != pb.ACK_STATUS_ACCEPTED:
                raise RuntimeError(f"batch {ack.agent_id}#{ack.sequence}: {ack}")
            slots.release()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def through_core(
    cluster: PostgresCluster, fleet: Fleet, name: str, key: Ed25519PrivateKey, settings: str
) -> tuple[float, float, float]:
    """Stream the fleet through one core process, first intervals then the rest.

    Returns the seconds of each phase and the core's peak RSS in MB.
    """
    dsn = fresh_database(cluster, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n, agent_id in enumerate(fleet.agent_ids):
            agents.enroll(
                conn, agent_id, public_key_bytes(key.public_key()), region=f"region-{n % 5}"
            )
    target = f"127.0.0.1:{free_loopback_port()}"
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "core.toml"
        config.write_text(settings, encoding="utf-8")
        command = [str(BIN / "core-ingest"), "serve", "--config", str(config)]
        core = subprocess.Popen(
            [*command, "--dsn", core_dsn(dsn), "--listen", target],
            stderr=(Path(folder) / "core.log").open("w"),
        )
        try:
            _wait_for(target)
            first, steady = (
                _stream_all(target, fleet.phase(first=first)[0]) for first in (True, False)
            )
            memory = peak_rss_mb(core.pid)
        finally:
            core.terminate()
            core.wait(10)
    _check_stored(dsn, len(fleet.streams) * len(fleet.streams[0]) * fleet.meters)
    return first, steady, memory


def _stream_all(target: str, streams: list[list[bytes]]) -> float:
    """Seconds to stream every agent's batches at once, one stream per agent."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(streams)) as pool:
        list(pool.map(stream, [target] * len(streams), streams))
    return time.perf_counter() - start


def _wait_for(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)


def _check_stored(dsn: str, readings: int) -> None:
    with psycopg.connect(dsn) as conn:
        stored, rolled = conn.execute(
            "SELECT (SELECT count(*) FROM meter_readings),"
            " (SELECT sum(received)::bigint FROM substation_hourly)"
        ).fetchone()
    if stored != readings or rolled != readings:
        raise RuntimeError(f"stored {stored}, rolled up {rolled}, sent {readings}")


def report(label: str, readings: int, seconds: float, baselines: dict[int, float]) -> None:
    """One line: pipeline readings/s, raw COPY readings/s over 1 and 2 connections, ratios."""
    rate = readings / seconds
    copies = ", ".join(
        f"{n} conn {readings / s:,.0f}/s (ratio {rate * s / readings:.2f})"
        for n, s in baselines.items()
    )
    print(
        f"{label}: {readings:,} readings in {seconds:.2f} s = {rate:,.0f} readings/s;"
        f" raw binary COPY {copies}",
        flush=True,
    )


def main() -> None:
    """Run both scenarios with their baselines and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data (smoke run)")
    parser.add_argument("--pool-size", type=int, default=8, help="core database.pool_size")
    parser.add_argument(
        "--batches-per-stream", type=int, default=4, help="core server.batches_per_stream"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scale = 10 if args.quick else 1
    settings = (
        f"[database]\npool_size = {args.pool_size}\n"
        f"[server]\nbatches_per_stream = {args.batches_per_stream}\n"
    )
    key = Ed25519PrivateKey.generate()
    cluster = PostgresCluster(port=free_loopback_port(), durable=True)
    cluster.start()
    try:
        print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, PostgreSQL durable", flush=True)
        for label, agent_count, meters in (
            ("1 agent", 1, 10_000 // scale),
            ("50 agents", 50, 2_000 // scale),
        ):
            steps = Progress(label, 6, unit="steps", log=log)  # build, 4 baselines, the core
            fleet = build_fleet(agent_count, meters, 24, key)
            steps.advance()
            slug = label.replace(" ", "_")
            baselines: dict[bool, dict[int, float]] = {True: {}, False: {}}
            for connections in (1, 2):
                dsn = fresh_database(cluster, f"copy_{slug}_{connections}")
                for first in (True, False):
                    rows = fleet.phase(first=first)[1]
                    baselines[first][connections] = raw_copy(dsn, rows, connections)
                    steps.advance()
            first, steady, memory = through_core(cluster, fleet, f"core_{slug}", key, settings)
            steps.advance()
            steps.close()
            readings = {phase: fleet.phase(first=phase)[2] for phase in (True, False)}
            report(f"{label}, steady state", readings[False], steady, baselines[False])
            report(f"{label}, first contact", readings[True], first, baselines[True])
            print(f"{label}: core peak RSS {memory:.0f} MB", flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
