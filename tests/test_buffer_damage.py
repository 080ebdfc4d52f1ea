"""A damaged buffer is found by check-config and at start, and what is intact is salvaged."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

from fix_services import BIN

from edge_agent.agent import EdgeAgent
from edge_agent.config import load_config
from edge_agent.keys import generate_pseudonym_key, generate_signing_key
from edge_agent.sinks.buffer import Buffer
from edge_agent.sinks.salvage import damage, salvage
from edge_agent.transforms.pseudonymize import PseudonymousReading

READINGS = 20_000


def reading(meter: int, interval_end: int) -> PseudonymousReading:
    return PseudonymousReading(meter.to_bytes(32, "big"), interval_end, 10, 20, 0, 0, "d")


def filled_buffer(path: Path) -> None:
    """A buffer of 20,000 pending readings (hundreds of pages), a cursor and two batches."""
    buffer = Buffer(path)
    buffer.put_readings([reading(m, 900) for m in range(2)], device="d", interval_end=900)
    for _ in range(2):
        buffer.seal_batch(lambda r, p, s, x: b"batch", max_readings=1)
    buffer.put_readings([reading(m, 1800) for m in range(READINGS)])
    buffer.close()


def damage_a_page_of_readings(path: Path) -> None:
    """Overwrite one page in the middle of the readings table with garbage, as a bad disk."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    with path.open("r+b") as file:
        file.seek(page_size * (pages // 2))
        file.write(bytes(range(256)) * (page_size // 256))


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edge-agent"), "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_damaged_buffer_is_found_and_its_intact_rows_salvaged(tmp_path):
    """One page lost: every other reading, the cursor and the batches are kept; counts add up."""
    path = tmp_path / "buffer.sqlite"
    filled_buffer(path)
    assert damage(path) == []
    damage_a_page_of_readings(path)
    problems = damage(path)
    assert problems
    report = salvage(path, problems)
    assert report.damaged_file.exists()
    assert report.kept["readings"] + report.lost["readings"] >= READINGS
    assert 0 < report.lost["readings"] < 200  # one page holds about a hundred readings
    assert report.kept["batches"] == 2
    assert damage(path) == []
    buffer = Buffer(path)
    assert buffer.device_cursors() == {"d": 900}
    assert buffer.statistics().next_sequence == 3
    assert buffer.statistics().pending_readings == report.kept["readings"]
    buffer.close()


def readings_leaves(path: Path) -> list[int]:
    """The page numbers of the readings table's leaf pages, in row id order."""
    with sqlite3.connect(path) as db:
        return [
            page
            for (page,) in db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf'"
                " ORDER BY path"
            )
        ]


def overwrite(path: Path, *pages: int) -> None:
    """Overwrite pages (numbered from 1) with garbage."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with path.open("r+b") as file:
        for page in pages:
            file.seek(page_size * (page - 1))
            file.write(bytes(range(256)) * (page_size // 256))


def test_damage_at_the_start_and_twice_in_the_middle_costs_only_those_pages(tmp_path):
    """The first leaf lost, and two leaves with a readable one between: the rest all kept."""
    path = tmp_path / "buffer.sqlite"
    filled_buffer(path)
    leaves = readings_leaves(path)
    middle = len(leaves) // 2
    overwrite(path, leaves[0], leaves[middle], leaves[middle + 2])
    report = salvage(path, damage(path))
    per_leaf = READINGS / len(leaves)
    assert report.kept["readings"] >= READINGS - 4 * per_leaf  # three leaves lost, no more
    assert 0 < report.lost["readings"] <= 4 * per_leaf


def test_a_truncated_buffer_is_found_and_what_remains_salvaged(tmp_path):
    """The file cut short (a copy interrupted, a filesystem repair): found, the rest kept."""
    path = tmp_path / "buffer.sqlite"
    filled_buffer(path)
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    with path.open("r+b") as file:
        file.truncate(page_size * (pages * 3 // 4))
    problems = damage(path)
    assert problems
    report = salvage(path, problems)
    assert report.damaged_file.exists()
    assert READINGS // 4 < report.kept["readings"] < READINGS  # a quarter of the pages gone
    assert report.kept["batches"] == 2
    assert damage(path) == []
    buffer = Buffer(path)
    assert buffer.statistics().pending_readings == report.kept["readings"]
    assert buffer.statistics().next_sequence >= 3  # never a sequence number handed out twice
    buffer.close()


def test_check_config_says_the_buffer_is_damaged_and_the_agent_salvages_it(tmp_path):
    """check-config exits 1 naming the damage; the agent starts on the salvaged buffer."""
    generate_signing_key(tmp_path / "agent.key")
    generate_pseudonym_key(tmp_path / "pseudonym.key")
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        '[agent]\nid = "a"\nsigning_key_file = "agent.key"\n'
        '[pseudonymization]\nkey_file = "pseudonym.key"\nkey_id = "k"\n'
        '[uplink]\ntarget = "127.0.0.1:1"\n'
        '[[sources.modbus]]\nname = "c"\nhost = "127.0.0.1"\n'
    )
    filled_buffer(tmp_path / "buffer.sqlite")
    damage_a_page_of_readings(tmp_path / "buffer.sqlite")
    checked = check_config(config)
    assert checked.returncode == 1, checked.stderr
    assert "is damaged" in checked.stderr
    assert "salvages" in checked.stderr

    async def start() -> int:
        async with EdgeAgent(load_config(config)) as agent:
            return (await agent.statistics()).pending_readings

    pending = asyncio.run(start())
    assert READINGS - 200 < pending < READINGS
    assert list(tmp_path.glob("buffer.sqlite.damaged-*"))
    again = check_config(config)
    assert again.returncode == 0, again.stderr
