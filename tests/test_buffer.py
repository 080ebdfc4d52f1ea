"""The edge buffer: one commit per poll, validation state kept with it, nothing lost early."""

from __future__ import annotations

import array
import sqlite3

import pytest

from edge_agent.errors import BufferUnavailable
from edge_agent.sinks.buffer import Buffer
from edge_agent.sinks.buffer.ledger import _PENDING_FROM_END
from edge_agent.sinks.buffer.schema import LAYOUT_VERSION
from edge_agent.sinks.pressure import pressure_level
from edge_agent.transforms.pseudonymize import PseudonymousReading
from edge_agent.transforms.telemetry import TelemetryPoint
from edge_agent.transforms.validate import MeterState, Quarantined
from proto import limits
from proto.quality import QualityFlag


def reading(meter: int, interval_end: int, energy: int = 10) -> PseudonymousReading:
    return PseudonymousReading(
        meter=meter.to_bytes(32, "big"),
        interval_end=interval_end,
        energy_wh=energy,
        register_wh=energy * 2,
        quality_flags=0,
        poll_time_ms=interval_end * 1000,
        device="d",
    )


@pytest.fixture
def buffer(tmp_path):
    buf = Buffer(tmp_path / "buffer.sqlite")
    yield buf
    buf.close()


def seal_as_text(readings, points, sequence, rotations):
    return f"{sequence}:{len(readings)}".encode()


def seal_one_reading_batches(buffer, count):
    """Batches 1..count, one reading each, all pending."""
    buffer.put_readings([reading(m, 900) for m in range(count)])
    for _ in range(count):
        buffer.seal_batch(seal_as_text, max_readings=1)


def test_poll_commits_readings_states_quarantine_and_cursor_together(tmp_path):
    """Everything one poll decided is there after a reopen, or nothing is."""
    buf = Buffer(tmp_path / "b.sqlite")
    profile = array.array("f", [1.5] + [float("nan")] * 95).tobytes()
    state = MeterState(
        interval_end=900, register_wh=20, last_energy_wh=10, last_valid_wh=10, repeats=1, zeros=0
    )
    meter = reading(1, 900).meter
    buf.put_readings(
        [reading(1, 900)],
        states={meter: state},
        profiles=[(meter, profile)],
        quarantined=[Quarantined(reading(2, 900, energy=-5), "too big")],
        device="dev",
        interval_end=900,
    )
    buf.close()
    buf = Buffer(tmp_path / "b.sqlite")
    memory = buf.meter_memory()
    assert memory.states == {meter: state}
    assert memory.saved_profile(meter) == profile
    assert buf.device_cursors() == {"dev": 900}
    (item,) = buf.quarantined()
    assert (item["reason"], item["source"]) == ("too big", "modbus")
    assert b'"energy_wh": -5' in item["payload"]
    assert buf.statistics().pending_readings == 1
    buf.close()


def test_batches_take_at_most_max_readings_oldest_first(buffer):
    """Sealing splits the backlog into batches of the configured size with rising sequences."""
    buffer.put_readings([reading(m, 900) for m in range(5)])
    first = buffer.seal_batch(seal_as_text, max_readings=3)
    second = buffer.seal_batch(seal_as_text, max_readings=3)
    assert (first.sequence, first.readings, second.sequence, second.readings) == (1, 3, 2, 2)
    assert buffer.seal_batch(seal_as_text, max_readings=3) is None


def test_failed_seal_leaves_readings_pending_and_the_sequence_unused(buffer):
    """If signing fails mid-transaction, nothing moves and the next batch reuses the number."""
    buffer.put_readings([reading(1, 900)])

    def broken(readings, points, sequence, rotations):
        raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        buffer.seal_batch(broken, max_readings=10)
    assert buffer.statistics().pending_readings == 1
    assert buffer.seal_batch(seal_as_text, max_readings=10).sequence == 1


def test_only_acknowledged_batches_leave_the_pending_set(buffer):
    """Delivered batches stop being pending; refused ones stay on disk, marked rejected."""
    seal_one_reading_batches(buffer, 3)
    buffer.acknowledge(1, outcome="accepted", detail="", refused=False)
    buffer.acknowledge(2, outcome="rejected:BAD_SIGNATURE", detail="x", refused=True)
    assert buffer.next_pending(newest=False).sequence == 3
    assert buffer.next_pending(newest=False, skip={3}) is None
    stats = buffer.statistics()
    assert (stats.acknowledged_batches, stats.rejected_batches, stats.pending_batches) == (1, 1, 1)
    assert [b.sequence for b in buffer.retained_batches(from_sequence=1)] == [1, 2, 3]


def test_prune_removes_only_old_acknowledged_batches(buffer):
    """Retention deletes delivered batches past their time, never pending or refused ones."""
    seal_one_reading_batches(buffer, 3)
    buffer.acknowledge(1, outcome="accepted", detail="", refused=False)
    buffer.acknowledge(2, outcome="rejected:UNKNOWN_AGENT", detail="", refused=True)
    assert buffer.prune(retain_seconds=3600) == 0
    far_future = 10**13
    assert buffer.prune(retain_seconds=3600, now_ms=far_future) == 1
    assert [b.sequence for b in buffer.retained_batches(from_sequence=1)] == [2, 3]


def test_sequence_keeps_rising_after_everything_was_pruned(tmp_path):
    """Sequence numbers are never reused, even when every old batch is gone."""
    buf = Buffer(tmp_path / "b.sqlite")
    buf.put_readings([reading(1, 900)])
    buf.seal_batch(seal_as_text, max_readings=10)
    buf.acknowledge(1, outcome="accepted", detail="", refused=False)
    buf.prune(retain_seconds=0, now_ms=10**13)
    buf.close()
    buf = Buffer(tmp_path / "b.sqlite")
    buf.put_readings([reading(1, 1800)])
    assert buf.seal_batch(seal_as_text, max_readings=10).sequence == 2
    buf.close()


def test_full_disk_fails_cleanly_and_loses_nothing_committed(buffer):
    """A full disk raises BufferUnavailable, leaves no partial poll, and works again after."""
    buffer.put_readings([reading(1, 900)])
    page_count = buffer._db.execute("PRAGMA page_count").fetchone()[0]
    buffer._db.execute(f"PRAGMA max_page_count = {page_count}")  # SQLite's own "disk full"
    big_poll = [reading(m, 1800, energy=m) for m in range(2_000)]
    with pytest.raises(BufferUnavailable, match="full"):
        buffer.put_readings(big_poll, device="dev", interval_end=1800)
    assert buffer.statistics().pending_readings == 1
    assert buffer.device_cursors() == {}
    buffer._db.execute("PRAGMA max_page_count = 1073741823")
    assert buffer.put_readings(big_poll) == 2_000
    assert buffer.statistics().pending_readings == 2_001


def test_opening_something_that_is_not_a_buffer_is_a_clear_error(tmp_path):
    """A file that is not a buffer (or a missing folder) is BufferUnavailable naming it."""
    not_a_buffer = tmp_path / "notes.txt"
    not_a_buffer.write_text("hello")
    with pytest.raises(BufferUnavailable, match=r"notes\.txt"):
        Buffer(not_a_buffer)
    with pytest.raises(BufferUnavailable, match="missing"):
        Buffer(tmp_path / "missing" / "b.sqlite")


@pytest.mark.parametrize(
    ("current", "fill", "expected"),
    [
        ("normal", 0.59, "normal"),
        ("normal", 0.60, "shedding"),
        ("normal", 0.85, "paused"),
        ("shedding", 0.55, "shedding"),
        ("shedding", 0.45, "normal"),
        ("paused", 0.75, "paused"),
        ("paused", 0.65, "shedding"),
        ("paused", 0.2, "normal"),
    ],
)
def test_pressure_levels_have_hysteresis(current, fill, expected):
    """Thresholds 60 / 80 % going up, 50 / 70 % coming down, so levels do not flap."""
    assert pressure_level(current, fill) == expected


def test_thinning_telemetry_keeps_one_minute_in_five_and_no_meter_reading(buffer):
    """Shedding deletes unsealed telemetry off the 5-minute grid; meter readings stay."""
    buffer.put_readings([reading(1, 900)])
    points = [TelemetryPoint("T1", minute * 60_000, "top_oil_c", 40.0, 0) for minute in range(10)]
    buffer.put_telemetry(points)
    assert buffer.shed_telemetry(keep_every_minutes=5) == 8
    stats = buffer.statistics()
    assert (stats.pending_telemetry, stats.pending_readings) == (2, 1)


def test_the_cap_is_recorded_so_status_sees_the_same_fill(tmp_path):
    """A read-only view of the file reports the fill against the agent's cap."""
    writer = Buffer(tmp_path / "b.sqlite", max_bytes=1 << 20)
    writer.put_readings([reading(m, 900) for m in range(2_000)])
    reader = Buffer(tmp_path / "b.sqlite", read_only=True)
    assert reader.fill() == pytest.approx(writer.fill())
    assert writer.fill() > 0.1
    reader.close()
    writer.close()


def test_next_pending_takes_either_end_and_passes_over_what_is_in_flight(buffer):
    """The uplink's fair drain asks for the oldest or the newest batch it has not sent yet."""
    seal_one_reading_batches(buffer, 5)
    buffer.acknowledge(1, outcome="accepted", detail="", refused=False)
    buffer.acknowledge(5, outcome="rejected:INTERNAL", detail="", refused=True)
    assert buffer.next_pending(newest=False).sequence == 2
    assert buffer.next_pending(newest=True).sequence == 4
    assert buffer.next_pending(newest=True, skip={4, 9}).sequence == 3
    assert buffer.next_pending(newest=False, skip={2, 3}).signed == b"4:1"
    assert buffer.next_pending(newest=True, skip={2, 3, 4}) is None


def test_picking_the_newest_pending_batch_uses_the_partial_index(buffer):
    """Retained acknowledged batches above the pending ones are never walked through."""
    plan = buffer._db.execute(f"EXPLAIN QUERY PLAN {_PENDING_FROM_END[True]}", (1,)).fetchall()
    assert "USING INDEX pending_batches" in str(plan), plan


def test_a_late_real_reading_replaces_its_pending_estimate(buffer):
    """The estimate of (meter, interval) is deleted when the real reading comes; others stay.

    Intervals match on the 15-minute grid: the estimate at 1802 and the reading at 1800 are
    the same interval of a meter whose clock moved.
    """
    estimate = reading(1, 1802)._replace(quality_flags=int(QualityFlag.ESTIMATED))
    buffer.put_readings([estimate, reading(2, 1800), reading(1, 2700)])
    real = reading(1, 1800, energy=17)
    assert buffer.put_readings([], late=[real]) == 1
    rows = buffer._db.execute(
        "SELECT meter, interval_end, energy_wh, quality_flags FROM readings ORDER BY id"
    ).fetchall()
    assert [(int.from_bytes(m, "big"), end, wh, flags) for m, end, wh, flags in rows] == [
        (2, 1800, 10, 0),
        (1, 2700, 10, 0),
        (1, 1800, 17, 0),
    ]


def test_a_batch_over_the_message_limit_is_sealed_again_with_fewer_values(buffer):
    """No sealed batch exceeds gRPC's message limit, whatever batch_max_readings says."""
    buffer.put_readings([reading(m, 900) for m in range(10_000)])

    def one_kilobyte_each(readings, points, sequence, rotations):
        return b"x" * (1_000 * len(readings))

    sizes = []
    while batch := buffer.seal_batch(one_kilobyte_each, max_readings=10_000):
        sizes.append((batch.readings, len(batch.signed)))
    assert sum(n for n, _ in sizes) == 10_000
    assert all(size <= limits.MAX_BATCH_BYTES for _, size in sizes)
    assert sizes[0][0] == 2_500  # 10,000 and 5,000 readings did not fit in 4 MiB


def test_the_buffer_and_its_wal_are_readable_by_the_owner_only(tmp_path):
    """Pseudonymized readings and state: 0600 for the file and the WAL, even for an old file."""
    old = tmp_path / "old.sqlite"
    old.touch(mode=0o644)
    for path in (tmp_path / "new.sqlite", old):
        buffer = Buffer(path)
        buffer.put_readings([reading(1, 900)])
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob(f"{path.name}*")}
        buffer.close()
        assert f"{path.name}-wal" in modes
        assert set(modes.values()) == {0o600}, modes


def test_a_new_buffer_records_its_layout_version(tmp_path):
    Buffer(tmp_path / "b.sqlite").close()
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LAYOUT_VERSION


def test_a_buffer_from_before_layout_versions_opens_and_keeps_its_data(tmp_path):
    """Gateways in the field hold unversioned buffers: they are layout 1, nothing is lost."""
    buf = Buffer(tmp_path / "b.sqlite")
    buf.put_readings([reading(1, 900)])
    buf.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        db.execute("PRAGMA user_version = 0")
    again = Buffer(tmp_path / "b.sqlite")
    assert again.statistics().pending_readings == 1
    again.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LAYOUT_VERSION


@pytest.mark.parametrize("read_only", [False, True])
def test_a_buffer_written_by_a_newer_agent_is_refused_naming_both_versions(tmp_path, read_only):
    Buffer(tmp_path / "b.sqlite").close()
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        db.execute(f"PRAGMA user_version = {LAYOUT_VERSION + 1}")
    with pytest.raises(BufferUnavailable, match=f"layout version {LAYOUT_VERSION + 1}, newer"):
        Buffer(tmp_path / "b.sqlite", read_only=read_only)
