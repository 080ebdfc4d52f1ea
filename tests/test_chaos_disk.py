"""Chaos: the edge's disk full under load, then freed.

The agent's buffer lies on a small tmpfs (mounted by the test: root only) while the simulator's
clock runs with MQTT telemetry flowing. The disk is filled to the last byte: the agent cannot
commit a poll, a seal or a message, and must neither lose nor estimate anything (the
concentrator keeps the intervals, the broker the unacknowledged messages). Space is freed:
delivery resumes within a poll interval (60 s by default; 0.1 s here, so the figure is the
agent's own reaction time) and every reading arrives as served.
``MP_CHAOS=full``: the disk stays full for 4 simulated hours; the test suite: 1 hour.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from chaos_runs import CHAOS, SPEED, run_and_drain
from fix_services import mqtt_section, stored_readings, wait_until
from scorecard import assert_clean, scaled

pytestmark = CHAOS
METERS = 200
FULL_INTERVALS = scaled(4, 16)
DISK_BYTES = 24 << 20
FULL_ERROR = "database or disk is full"  # SQLite's words, in the agent's log


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES mounted at ``folder``; skips the test where mounting is refused."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs for the full disk (needs root): {mounted.stderr}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses another byte; return it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    file.write(bytes(chunk))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def test_the_edge_disk_full_then_freed(  # noqa: PLR0913, PLR0917 - fixtures
    simulator, mosquitto, agent_setup, core_server, storage_dsn, tmp_path
):
    with small_disk(tmp_path / "disk") as disk:
        sim = simulator(meters=METERS, mqtt_port=mosquitto)
        agent = agent_setup(
            core=core_server,
            modbus_port=sim.port,
            extra=f'\n[buffer]\npath = "{disk}/buffer.sqlite"\n'
            + mqtt_section(mosquitto, "N-S01-T1"),
        )
        resumed_s = 0.0

        def disk_full() -> str:
            nonlocal resumed_s
            wait_until(lambda: stored_readings(storage_dsn) >= METERS, timeout=60, what="a poll")
            filler = fill(disk)
            log = agent.folder / "agent.log"
            wait_until(lambda: FULL_ERROR in log.read_text(), timeout=60, what="a full disk")
            time.sleep(FULL_INTERVALS * 900 / SPEED)  # intervals close, telemetry is published
            before = stored_readings(storage_dsn)
            filler.unlink()
            freed = time.monotonic()
            wait_until(lambda: stored_readings(storage_dsn) > before, timeout=60, what="delivery")
            resumed_s = time.monotonic() - freed
            return (
                f"the edge disk full for {FULL_INTERVALS / 4:g} simulated hours, then freed:"
                f" delivery resumed {resumed_s:.1f} s later"
            )

        card = run_and_drain(
            sim,
            agent,
            storage_dsn,
            intervals=FULL_INTERVALS + 10,
            chaos=disk_full,
            telemetry=True,
        )
    assert_clean(card)
    log = (agent.folder / "agent.log").read_text()
    assert FULL_ERROR in log  # the disk was full for the agent
    assert "breaker open" not in log  # no fault of the device's
    assert "failed unexpectedly" not in log  # nothing restarted: the MQTT message waited
    with psycopg.connect(storage_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM meter_readings").fetchone()[0] == card.served
