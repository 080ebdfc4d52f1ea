"""The buffer file's layout, versioned with ``PRAGMA user_version``.

A fleet of gateways upgrades one at a time, so a buffer written by one release must open in the
next: each layout change is a numbered step in ``LAYOUTS``, applied in order in one
transaction, and the file records the version it reached. A buffer newer than the agent is
refused with a clear error, never opened and misread. Buffers written before the layout had a
version (``user_version`` 0) hold layout 1: its statements only create what is missing.
"""

from __future__ import annotations

import sqlite3

from edge_agent.errors import BufferUnavailable

LAYOUT_1 = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    meter BLOB NOT NULL,
    interval_end INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    register_wh INTEGER NOT NULL,
    quality_flags INTEGER NOT NULL,
    poll_time_ms INTEGER NOT NULL,
    device TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY,
    transformer TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    quality_flags INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS device_state (
    device TEXT PRIMARY KEY,
    states BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meter_profile (
    meter BLOB PRIMARY KEY,
    profile BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rotations (
    id INTEGER PRIMARY KEY,
    old_key_id TEXT NOT NULL,
    new_key_id TEXT NOT NULL,
    old_meters BLOB NOT NULL,
    new_meters BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    device TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS device_cursor (
    device TEXT PRIMARY KEY,
    last_interval_end INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    sequence INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    signed BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'acknowledged', 'rejected')),
    outcome TEXT,
    detail TEXT,
    acknowledged_ms INTEGER
);
-- The uplink picks the oldest and the newest pending batch in turn (fair drain): without this
-- index the newest end means walking every retained, acknowledged batch above it.
CREATE INDEX IF NOT EXISTS pending_batches ON batches (sequence) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS agent_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO agent_state VALUES ('next_sequence', 1);
"""

LAYOUTS = {1: LAYOUT_1}  # version -> the statements that reach it from the one before
LAYOUT_VERSION = max(LAYOUTS)

# Every table, those that say where the agent stands first (the order a salvage copies them).
TABLES = (
    "agent_state",
    "device_cursor",
    "device_state",
    "meter_profile",
    "rotations",
    "batches",
    "readings",
    "telemetry",
    "quarantine",
)


def layout_version(db: sqlite3.Connection) -> int:
    """The layout version the file records (0: written before versions existed, or new)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def check_layout(db: sqlite3.Connection, path: object) -> int:
    """The file's layout version; refuse a file written by a newer agent.

    Raises:
        BufferUnavailable: naming both versions.

    """
    version = layout_version(db)
    if version > LAYOUT_VERSION:
        raise BufferUnavailable(
            f"the buffer {path} has layout version {version}, newer than this agent's"
            f" {LAYOUT_VERSION}: run the agent release that wrote it (or a newer one)"
        )
    return version


def upgrade(db: sqlite3.Connection, path: object) -> None:
    """Bring the file to ``LAYOUT_VERSION``, one step per transaction."""
    for version in range(check_layout(db, path) + 1, LAYOUT_VERSION + 1):
        db.executescript(
            f"BEGIN IMMEDIATE;\n{LAYOUTS[version]}\nPRAGMA user_version = {version};\nCOMMIT;"
        )
