"""Benchmark: validate + pseudonymize + buffer on one core, and a 24-hour backlog read back.

1. Throughput: 5,000 meters x 24 intervals of decoded records go through pseudonymization,
   VEE validation and the buffer commit (one commit per poll of a 1,000- and of a 2,500-meter
   concentrator, synchronous=full), as the agent does them, with the agent's ``gc.freeze()``.
   Baseline in the same run: the bare SQLite insert of the same rows into the same table, one
   commit per poll.
2. Backlog: a simulated concentrator of 5,000 meters closes 96 intervals (24 hours) with no
   agent; then an agent-equivalent poll reads all of it back over Modbus TCP from the history
   and buffers it. Prints the wall time and readings/s.
3. Memory: peak resident set size of a real ``edge-agent run`` polling the 20,000 meters of
   ``national-slice`` (16 concentrators, speed 900) for 30 intervals, read from /proc.

Usage: .venv/bin/python benchmarks/bench_edge_pipeline.py
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_agent.config import ModbusSourceConfig
from edge_agent.poll_step import PollStep
from edge_agent.sinks.buffer import Buffer
from edge_agent.sources.modbus import ModbusConcentrator
from edge_agent.sources.register_map import MeterRecord
from edge_agent.transforms.pseudonymize import Pseudonymizer
from edge_agent.transforms.validate import MeterMemory, Validator
from substation_sim import Field, FieldRecord, SimulatorRunner, load_scenario, parse_scenario
from substation_sim.topology import build_topology

# The throwaway PostgreSQL clusters of the tests (test infrastructure, not a product module).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import free_loopback_ports

KEY = bytes(range(32))
BIN = Path(sys.executable).parent
T0 = 1_793_577_600


def records(meters: int, intervals: int) -> list[list[MeterRecord]]:
    """Decoded polls: per interval, one record per meter, registers consistent."""
    rng = random.Random(1)  # noqa: S311 - test data, not secrets
    registers = [rng.randrange(10**8) for _ in range(meters)]
    polls = []
    for i in range(1, intervals + 1):
        poll = []
        for m in range(meters):
            energy = rng.randrange(20, 400)
            registers[m] += energy
            poll.append(MeterRecord(4_000_000_000 + m, T0 + 900 * i, energy, registers[m], 0))
        polls.append(poll)
    return polls


def polled_ms(interval_end: int) -> int:
    """When the agent reads an interval: a few seconds after it closed.

    The readings' bounds are judged by it: a poll time of 0 would quarantine every reading.
    """
    return (interval_end + 5) * 1000


def poll_step(buffer: Buffer) -> PollStep:
    """The agent's own per-poll step over ``buffer``, with the benchmark's key."""
    return PollStep(buffer, Pseudonymizer(key=KEY, key_id="k"), Validator(), MeterMemory())


def pipeline(polls: list[list[MeterRecord]], folder: Path, poll_size: int = 1_000) -> float:
    """Readings per second through pseudonymize + validate + buffer."""
    steps = poll_step(Buffer(folder / f"pipeline-{poll_size}.sqlite"))
    count = 0
    started = time.perf_counter()
    for poll in polls:
        for chunk in range(0, len(poll), poll_size):
            device = f"d{chunk}"  # one concentrator per poll_size meters
            checked = steps.check(
                poll[chunk : chunk + poll_size],
                device=device,
                interval_end=poll[0].interval_end,
                poll_time_ms=polled_ms(poll[0].interval_end),
            )
            checked.commit()
            steps.adopt(checked)
            count += len(checked.validation.readings)
    elapsed = time.perf_counter() - started
    steps.buffer.close()
    return count / elapsed


def agent_pipeline(polls: list[list[MeterRecord]], folder: Path, poll_size: int = 1_000) -> float:
    """Readings per second the way the agent runs it, pinned to one CPU core.

    As in ``EdgeAgent``: one task per concentrator pseudonymizes and validates in the event
    loop, one I/O thread commits to the buffer, at most two polls between the two; while one
    device's commit waits for the disk, another device's readings are validated.
    ``os.sched_setaffinity`` keeps it all on one core.
    """
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    steps = poll_step(Buffer(folder / f"agent-{poll_size}.sqlite"))
    io = ThreadPoolExecutor(1)
    buffering = asyncio.Semaphore(2)  # as EdgeAgent._buffering
    count = 0

    async def device(index: int) -> None:
        nonlocal count
        loop = asyncio.get_running_loop()
        for poll in polls:
            async with buffering:
                chunk = poll[index * poll_size : (index + 1) * poll_size]
                end = chunk[0].interval_end
                checked = steps.check(
                    chunk, device=f"d{index}", interval_end=end, poll_time_ms=polled_ms(end)
                )
                await loop.run_in_executor(io, checked.commit)
                steps.adopt(checked)
            count += len(checked.validation.readings)

    async def run() -> None:
        devices = -(-len(polls[0]) // poll_size)
        await asyncio.gather(*(device(i) for i in range(devices)))

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    steps.buffer.close()
    os.sched_setaffinity(0, os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
    return count / elapsed


def bare_insert(polls: list[list[MeterRecord]], folder: Path, poll_size: int = 1_000) -> float:
    """Readings per second for the bare insert of the same rows, same table, same sync."""
    Buffer(folder / f"bare-{poll_size}.sqlite").close()
    db = sqlite3.connect(folder / f"bare-{poll_size}.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    count = 0
    started = time.perf_counter()
    for poll in polls:
        for chunk in range(0, len(poll), poll_size):
            rows = [
                (
                    r.serial.to_bytes(32, "big"),
                    r.interval_end,
                    r.energy_wh,
                    r.register_wh,
                    0,
                    0,
                    "d",
                )
                for r in poll[chunk : chunk + poll_size]
            ]
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO readings (meter, interval_end, energy_wh, register_wh,"
                " quality_flags, poll_time_ms, device) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
            count += len(rows)
    elapsed = time.perf_counter() - started
    db.close()
    return count / elapsed


def backlog(folder: Path, meters: int = 5_000, intervals: int = 96) -> tuple[float, int]:
    """Seconds to read back and buffer a day of one 5,000-meter concentrator's history."""
    split = [meters // 2, meters - meters // 2]  # one unit id holds at most 4,089 meters
    port = free_loopback_ports(len(split) + 1)
    scenario = parse_scenario(
        {
            "scenario": {"name": "bench", "seed": 5},
            "modbus": {"base_port": port},
            "regions": [
                {
                    "name": "North",
                    "meters_per_concentrator": split[0],
                    "concentrators_per_substation": len(split),
                }
            ],
        }
    )
    record = FieldRecord(folder / "record.sqlite")
    field = Field(scenario, record=record)
    loop = asyncio.new_event_loop()
    runner = SimulatorRunner(field)
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(runner.__aenter__(), loop).result()
    for _ in range(intervals):
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result()
        loop.call_soon_threadsafe(runner.close_interval)
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result()

    io = ThreadPoolExecutor(1)  # like the agent: one thread owns the buffer

    async def read_back() -> int:
        steps = poll_step(Buffer(folder / "backlog.sqlite"))
        total = 0

        async def one(index: int) -> None:
            nonlocal total
            config = ModbusSourceConfig(
                name=f"c{index}",
                host="127.0.0.1",
                port=port + index,
                unit_id=1,
                poll_interval_seconds=1,
                timeout_seconds=5,
                retries=0,
                word_order="high_first",
                byte_order="big",
                backfill=True,
                failure_threshold=3,
                breaker_reset_seconds=1,
            )
            source = ModbusConcentrator(config)
            async for poll in source.poll():
                checked = steps.check(
                    poll.records,
                    device=source.device,
                    interval_end=poll.interval_end,
                    poll_time_ms=poll.poll_time_ms,
                )
                await asyncio.get_running_loop().run_in_executor(io, checked.commit)
                steps.adopt(checked)
                source.delivered(poll)
                total += len(checked.validation.readings)
            source.close()

        await asyncio.gather(*(one(i) for i in range(len(split))))
        steps.buffer.close()
        return total

    started = time.perf_counter()
    total = asyncio.run(read_back())
    elapsed = time.perf_counter() - started
    asyncio.run_coroutine_threadsafe(runner.__aexit__(None, None, None), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    record.close()
    return elapsed, total


def agent_memory(folder: Path, intervals: int = 30) -> tuple[float, int]:
    """Peak RSS (MB) of ``edge-agent run`` polling national-slice, and readings it buffered."""
    scenario = load_scenario("national-slice")
    base = free_loopback_ports(32)
    for command, name in (("keygen", "a.key"), ("pseudonym-keygen", "p.key")):
        subprocess.run(
            [str(BIN / "edge-agent"), command, "--out", str(folder / name)],
            check=True,
            capture_output=True,
        )
    sources = "".join(
        f'[[sources.modbus]]\nname = "{c.name}"\nhost = "127.0.0.1"\n'
        f"port = {c.port - scenario.base_port + base}\npoll_interval_seconds = 0.2\n\n"
        for s in build_topology(scenario)
        for c in s.concentrators
    )
    config = folder / "agent.toml"
    config.write_text(
        '[agent]\nid = "bench"\nsigning_key_file = "a.key"\n[pseudonymization]\n'
        'key_file = "p.key"\nkey_id = "k"\n[buffer]\npath = "agent-buffer.sqlite"\n'
        f'[uplink]\ntarget = "127.0.0.1:{free_loopback_ports(1)}"\n\n{sources}'
    )
    sim = subprocess.Popen(
        [
            str(BIN / "substation-sim"),
            "run",
            "national-slice",
            "--base-port",
            str(base),
            "--intervals",
            str(intervals),
            "--record",
            str(folder / "slice.sqlite"),
        ],
        stderr=subprocess.DEVNULL,
    )
    agent = subprocess.Popen(
        [str(BIN / "edge-agent"), "run", "--config", str(config)], stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(intervals * 900 / scenario.speed + 5)
        status = Path(f"/proc/{agent.pid}/status").read_text()
        peak_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
    finally:
        agent.terminate()
        sim.terminate()
        agent.wait()
        sim.wait()
    buffered = sqlite3.connect(folder / "agent-buffer.sqlite")
    readings = buffered.execute(
        "SELECT (SELECT count(*) FROM readings) + (SELECT coalesce(sum(readings), 0) FROM batches)"
    ).fetchone()[0]
    buffered.close()
    return peak_kb / 1024, readings


def main() -> None:
    """Run the three measurements and print them."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        polls = records(5_000, 24)
        # As ``edge-agent run`` does once started: what exists now is frozen out of the
        # cyclic collector (here also the pre-decoded inputs, which the agent never holds).
        gc.collect()
        gc.freeze()
        for poll_size in (1_000, 2_500):
            rate = pipeline(polls, folder, poll_size)
            agent_rate = agent_pipeline(polls, folder, poll_size)
            base = bare_insert(polls, folder, poll_size)
            print(
                f"validate + pseudonymize + buffer, {poll_size:,}-meter polls: "
                f"{agent_rate:9,.0f} readings/s as the agent runs it on one core, "
                f"{rate:9,.0f} one step after the other "
                f"(bare SQLite insert of the same rows: {base:9,.0f})"
            )
        elapsed, total = backlog(folder)
        print(
            f"24-hour backlog: {total:,} readings of 5,000 meters read back over Modbus and "
            f"buffered in {elapsed:.1f} s ({total / elapsed:,.0f} readings/s)"
        )
        peak_mb, readings = agent_memory(folder)
        print(
            f"edge-agent run polling 20,000 meters (national-slice, speed 900): peak resident "
            f"memory {peak_mb:.0f} MB after buffering {readings:,} readings"
        )


if __name__ == "__main__":
    main()
