"""Benchmark: one simulator process serving 20,000 meters at speed 900, and the CPU it needs.

Starts ``substation-sim run national-slice`` (20,000 meters in 16 concentrators, one interval
per wall second) and a Mosquitto broker for its telemetry, then polls every concentrator the way
the edge agent does (header every 0.2 s; on a new interval, the whole table in 125-register
reads) from a separate process. Prints readings served per wall second and the simulator's CPU
use. Baseline, measured in the same run: static pymodbus servers holding tables of the same
size, polled the same way, so the figure shows what the simulation itself costs on top of
pymodbus. Usage: .venv/bin/python benchmarks/bench_simulator.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from substation_sim import load_scenario
from substation_sim.topology import build_topology

# The throwaway PostgreSQL clusters of the tests (test infrastructure, not a product module).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import free_loopback_port

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def poll_device(port: int, meters: int, until: float, counts: list[int]) -> None:
    """Poll one concentrator like the agent: header often, table on a new interval."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    await client.connect()
    last = None
    try:
        while time.monotonic() < until:
            header = await client.read_holding_registers(0, count=8, device_id=1)
            if not header.isError() and header.registers[2:4] != last:
                last = header.registers[2:4]
                for address in range(100, 100 + meters * 16, 125):
                    count = min(125, 100 + meters * 16 - address)
                    await client.read_holding_registers(address, count=count, device_id=1)
                counts[0] += meters
            await asyncio.sleep(0.2)
    finally:
        client.close()


def poll_all(ports: list[int], meters: int, seconds: float) -> int:
    """Poll every device for ``seconds``; return the readings read (first full read excluded)."""
    counts = [0]

    async def main() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(poll_device(p, meters, until, counts) for p in ports))

    asyncio.run(main())
    return counts[0] - len(ports) * meters


def static_servers(base_port: int, devices: int, meters: int) -> None:
    """Baseline: plain pymodbus servers with fixed tables; the header changes once a second."""

    async def main() -> None:
        size = 100 + meters * 16
        registers = [1, meters, 0, 0, 900, 96, 0, 0] + [7] * (size - 8)

        async def action(fc, start, address, count, current, values):  # noqa: ANN001, ANN202, ARG001, PLR0913, PLR0917
            offset = address - start
            current[offset : offset + count] = registers[address : address + count]

        for i in range(devices):
            device = SimDevice(
                id=1,
                simdata=[SimData(address=0, count=size, values=0, datatype=DataType.REGISTERS)],
                action=action,
            )
            await ModbusTcpServer(device, address=("127.0.0.1", base_port + i)).serve_forever(
                background=True
            )
        while True:
            await asyncio.sleep(1)
            registers[3] = (registers[3] + 900) % 65_536

    asyncio.run(main())


def measure(pid: int, ports: list[int], meters: int, seconds: float) -> tuple[float, float]:
    """Readings per second and the server's CPU share of one core while polled."""
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    readings = poll_all(ports, meters, seconds)
    cpu = cpu_seconds(pid) - cpu_before
    wall = time.monotonic() - wall_before
    return readings / wall, cpu / wall


def main() -> int:
    """Run both measurements and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    options = parser.parse_args()
    scenario = load_scenario("national-slice")
    substations = build_topology(scenario)
    meters = substations[0].concentrators[0].meters.serials.size
    devices = sum(len(s.concentrators) + 1 for s in substations)
    broker_port, base_port = free_loopback_port(), 31_000
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mosquitto.conf"
        config.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(config)],
            stderr=subprocess.DEVNULL,
        )
        sim = subprocess.Popen(
            [
                str(BIN / "substation-sim"),
                "run",
                "national-slice",
                "--base-port",
                str(base_port),
                "--mqtt-port",
                str(broker_port),
                "--record",
                str(Path(tmp) / "record.sqlite"),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)
            offset = base_port - scenario.base_port
            ports = [c.port + offset for s in substations for c in s.concentrators]
            sim_rate, sim_cpu = measure(sim.pid, ports, meters, options.seconds)
        finally:
            sim.terminate()
            broker.terminate()
            sim.wait()
            broker.wait()
    baseline = multiprocessing.Process(target=static_servers, args=(base_port, len(ports), meters))
    baseline.start()
    try:
        time.sleep(2)
        ports = [base_port + i for i in range(len(ports))]
        base_rate, base_cpu = measure(baseline.pid, ports, meters, options.seconds)
    finally:
        baseline.terminate()
        baseline.join()
    print(
        f"field: {scenario.meters:,} meters in {len(ports)} concentrators ({devices} Modbus "
        f"devices with feeder heads), speed {scenario.speed:g}, target "
        f"{scenario.meters * scenario.speed / 900:,.0f} readings/s"
    )
    print(
        f"simulator: {sim_rate:10,.0f} readings/s served, CPU {sim_cpu:6.1%} of one core "
        "(clock, profiles, thermal model, MQTT, record, Modbus)"
    )
    print(
        f"baseline:  {base_rate:10,.0f} readings/s served, CPU {base_cpu:6.1%} of one core "
        "(static pymodbus servers, same reads)"
    )
    print(f"spare: {2 - sim_cpu:.2f} of this machine's 2 cores while the simulator runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
