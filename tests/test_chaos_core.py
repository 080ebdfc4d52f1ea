"""Chaos: cores SIGKILLed mid-stream, alone or one of two behind one address: nothing lost.

The simulator's clock runs (an interval a second) while the agent streams to its core. The core
is SIGKILLed at random moments and started again on the same address; or two cores serve
behind one address (a TCP proxy standing for the load balancer) and one is SIGKILLed for good.
Afterwards every reading served is in the database exactly once, as served, read.
``MP_CHAOS=full`` kills the lone core 12 times; the test suite 2.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from chaos_runs import CHAOS, run_and_drain
from fix_services import start_core, stop_process, wait_until
from pgcluster import free_loopback_port
from scorecard import assert_clean, scaled
from tcp_proxy import tcp_proxy

pytestmark = CHAOS
METERS = 300


def test_the_core_sigkilled_and_restarted_mid_stream(simulator, agent_setup, storage_dsn, tmp_path):
    kills = scaled(2, 12)
    target = f"127.0.0.1:{free_loopback_port()}"
    log = tmp_path / "core.log"
    cores = [start_core(storage_dsn, target, log)]
    sim = simulator(meters=METERS)
    agent = agent_setup(core=target, modbus_port=sim.port)
    chance = random.Random(20)

    def kill_and_restart() -> str:
        for _ in range(kills):
            time.sleep(chance.uniform(0.5, 3.0))
            cores[-1].send_signal(signal.SIGKILL)
            cores[-1].wait()
            time.sleep(chance.choice([0.0, 1.0, 3.0]))
            cores.append(start_core(storage_dsn, target, log))
        return f"core SIGKILLed and restarted {kills} times mid-stream"

    try:
        card = run_and_drain(sim, agent, storage_dsn, intervals=kills * 4, chaos=kill_and_restart)
    finally:
        stop_process(cores[-1])
    assert_clean(card)


def test_one_of_two_cores_behind_one_address_sigkilled(
    simulator, agent_setup, storage_dsn, tmp_path: Path
):
    targets = [f"127.0.0.1:{port}" for port in (free_loopback_port(), free_loopback_port())]
    cores = [start_core(storage_dsn, t, tmp_path / f"core{i}.log") for i, t in enumerate(targets)]
    sim = simulator(meters=METERS)
    try:
        with tcp_proxy(targets) as proxy:
            agent = agent_setup(core=proxy.address, modbus_port=sim.port)

            def kill_one() -> str:
                wait_until(lambda: proxy.connections >= 1, timeout=30, what="a stream")
                time.sleep(3)
                cores[0].send_signal(signal.SIGKILL)
                cores[0].wait()
                return "one of two cores behind one address SIGKILLed mid-stream"

            card = run_and_drain(sim, agent, storage_dsn, intervals=12, chaos=kill_one)
    finally:
        for core in cores:
            stop_process(core)
    assert_clean(card)
