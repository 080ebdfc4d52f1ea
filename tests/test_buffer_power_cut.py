"""Power-cut style: the buffer's work killed inside its SQLite commits, many times over.

``tests/buffer_writer.py`` does what the agent does to its buffer (a poll's readings and the
device's cursor in one commit, seals, acknowledgements) and says before and after each commit;
the test kills it (SIGKILL) a few milliseconds into a commit of a kind it picks at random, then
checks the file before the next start: SQLite's integrity check passes, every commit reported
done is there, a poll is there whole or not at all, and no reading is lost or doubled between
the pending table and the batches (the cursor says how many polls there were).
``MP_CHAOS=full``: 300 kills; the test suite: 30.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scorecard import scaled

WRITER = Path(__file__).with_name("buffer_writer.py")
KILLS = scaled(30, 300)
METERS = 2_000
INTERVAL = 900

pytestmark = pytest.mark.chaos


def killed_inside_a_commit(
    path: Path, chance: random.Random, done: dict[str, set[int]]
) -> tuple[str, int]:
    """Start the writer, kill it inside a commit of a random kind; record what it committed.

    Returns the kind of commit killed and its number (a poll's interval end).
    """
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(METERS)], stdout=subprocess.PIPE, text=True
    )
    target = chance.choice(["poll", "seal", "ack"])
    killed = ("", 0)
    assert writer.stdout is not None
    for line in writer.stdout:
        state, kind, number = line.split()
        if state == "committed":
            done[kind].add(int(number))
        elif kind == target and chance.random() < 0.5:
            time.sleep(chance.uniform(0, 0.004))
            writer.send_signal(signal.SIGKILL)
            killed = (kind, int(number))
            break
    for line in writer.stdout:  # what it said before it died
        state, kind, number = line.split()
        if state == "committed":
            done[kind].add(int(number))
    writer.wait()
    return killed


def check(path: Path, done: dict[str, set[int]]) -> None:
    """The buffer as the next start finds it: whole, and holding every reported commit."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        newest = max(done["poll"], default=0)
        polls = cursor(path) // INTERVAL
        assert polls * INTERVAL in {newest, newest + INTERVAL}  # the last poll, maybe unsaid
        pending = dict(
            db.execute("SELECT interval_end, count(*) FROM readings GROUP BY interval_end")
        )
        assert set(pending.values()) <= {METERS}, "a poll half there"
        sealed = dict(db.execute("SELECT sequence, readings FROM batches"))
        assert sum(pending.values()) + sum(sealed.values()) == METERS * polls
        assert done["seal"] - {0} <= sealed.keys()
        acknowledged = {
            sequence
            for (sequence,) in db.execute(
                "SELECT sequence FROM batches WHERE state = 'acknowledged'"
            )
        }
        assert done["ack"] <= acknowledged
        (next_sequence,) = db.execute(
            "SELECT value FROM agent_state WHERE key = 'next_sequence'"
        ).fetchone()
        assert next_sequence > max(sealed, default=0)


def test_killed_inside_commits_the_buffer_stays_whole(tmp_path):
    path = tmp_path / "buffer.sqlite"
    chance = random.Random(15)
    done: dict[str, set[int]] = {"poll": set(), "seal": set(), "ack": set()}
    kinds, polls_cut = set(), 0
    for _ in range(KILLS):
        kind, number = killed_inside_a_commit(path, chance, done)
        check(path, done)
        kinds.add(kind)
        polls_cut += kind == "poll" and number not in done["poll"] and cursor(path) < number
    assert kinds == {"poll", "seal", "ack"}
    assert polls_cut > 0, "no kill landed inside a poll's commit"
    assert len(done["poll"]) > KILLS  # it got on between the kills


def cursor(path: Path) -> int:
    """The device's cursor in the buffer (0 before the first poll)."""
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT last_interval_end FROM device_cursor").fetchone()
    return row[0] if row else 0
