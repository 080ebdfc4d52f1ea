"""What the core keeps: one row per (meter, interval), rollups, lineage, quality records.

Over real gRPC into a real PostgreSQL (TimescaleDB and native partitions).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import random

import psycopg
import pytest
from fix_services import core_processes, serving_core
from signed_batches import AGENT, DEVICE, FIRST_END, KEY, answer, meter, payload, seal, send

from core_ingest import agents
from core_ingest.lineage.events import run_id
from core_ingest.schema import NATIVE, TIMESCALEDB, migrate
from proto import pb, public_key_bytes
from proto.quality import QualityFlag

pytestmark = pytest.mark.integration
one_storage = pytest.mark.parametrize("storage", [TIMESCALEDB])
SUBSTATION, REGION = "north-001", "North"


@pytest.fixture
def enrolled(storage_dsn: str) -> str:
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(
            conn, AGENT, public_key_bytes(KEY.public_key()), substation=SUBSTATION, region=REGION
        )
    return storage_dsn


def send_in_order(core: str, *bodies) -> None:
    """Each body as batch 1, 2, ... on a stream of its own, so they commit in this order."""
    for sequence, body in enumerate(bodies, 1):
        (ack,) = send(core, seal(body, sequence=sequence))
        assert answer(ack) == "ACK_STATUS_ACCEPTED", ack


def query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_reading_stored_before_is_not_stored_again_from_another_batch(core_server, enrolled):
    """A backfill re-read in a new batch adds only new readings.

    A re-read with another value is quarantined; the stored value stays.
    """
    first = seal(payload(meters=range(4)), sequence=1)
    overlapping = seal(payload(meters=range(8)), sequence=2)
    conflicting = seal(payload(meters=[0, 9], energy=[555, 100]), sequence=3)
    acks = [send(core_server, batch)[0] for batch in (first, overlapping, conflicting)]
    assert [answer(a) for a in acks] == ["ACK_STATUS_ACCEPTED"] * 3
    assert query(enrolled, "SELECT count(*), count(DISTINCT meter_id) FROM meter_readings") == [
        (9, 9)
    ]
    assert query(
        enrolled, "SELECT sequence, meter_readings, readings_stored FROM batches ORDER BY 1"
    ) == [(1, 4, 4), (2, 8, 4), (3, 2, 1)]
    stored_value = query(
        enrolled,
        "SELECT r.energy_wh FROM meter_readings r JOIN meters m USING (meter_id)"
        " WHERE m.pseudonym = %s",
        (meter(0),),
    )
    assert stored_value == [(100,)]
    assert query(enrolled, "SELECT energy_wh, reason FROM reading_quarantine") == [
        (555, "conflicts-with-stored")
    ]


@one_storage
def test_a_reading_twice_in_one_batch_is_stored_once_and_the_batch_kept(core_server, enrolled):
    """A meter's interval twice in a batch: one stored, a conflicting copy set apart.

    A real reading wins over an estimate of the same interval; an identical copy is dropped.
    The rest of the batch is stored (the whole batch used to be refused). A pseudonym listed
    twice in the batch's dictionary is a malformed batch.
    """
    estimated = int(QualityFlag.ESTIMATED)
    body = payload(meters=[0, 1, 2, 3], energy=[100, 100, 50, 30], flags=[0, 0, estimated, 0])
    columns = body.meter_readings
    for index, energy in ((0, 999), (2, 70), (3, 30)):  # meter 0, 2 and 3 once more
        columns.meter_index.append(index)
        columns.interval_end.append(columns.interval_end[0])
        columns.energy_wh.append(energy)
        columns.register_wh.append(columns.register_wh[index])
        columns.quality_flags.append(0)
        columns.poll_time_ms.append(columns.poll_time_ms[0])
        columns.device_index.append(0)
    twice_indexed = payload(meters=[5, 5])  # one meter under two dictionary entries
    (ack,) = send(core_server, seal(body, sequence=1))
    (malformed,) = send(core_server, seal(twice_indexed, sequence=2))
    assert (answer(ack), answer(malformed)) == ("ACK_STATUS_ACCEPTED", "REJECT_REASON_MALFORMED")
    assert "1 values refused" in ack.detail
    assert "listed twice" in malformed.detail
    stored = query(
        enrolled,
        "SELECT m.pseudonym, r.energy_wh, r.quality_flags FROM meter_readings r"
        " JOIN meters m USING (meter_id) ORDER BY 1",
    )
    assert [(bytes(p), e, f) for p, e, f in stored] == [
        (meter(0), 100, 0),
        (meter(1), 100, 0),
        (meter(2), 70, 0),
        (meter(3), 30, 0),
    ]
    assert query(enrolled, "SELECT position, reason FROM refused_values") == [
        (4, "another reading of this meter and interval, with other values, is in the batch")
    ]
    assert query(enrolled, "SELECT sum(energy_wh), sum(received) FROM substation_daily") == [
        (300, 4)
    ]


def test_two_cores_given_overlapping_batches_store_each_reading_once(enrolled, tmp_path):
    """Every reading sent by two agents through two cores at once is stored once.

    The batches go in opposite orders, so the cores race on the same (meter, interval) rows;
    each is stored and counted in the rollups once.
    """
    other = "agent-core-test-2"
    with psycopg.connect(enrolled, autocommit=True) as conn:
        agents.enroll(conn, other, public_key_bytes(KEY.public_key()), substation=SUBSTATION)
    bodies = [
        payload(meters=range(40 * (i % 3), 40 * (i % 3) + 100), interval=i) for i in range(12)
    ]
    mine = [seal(b, sequence=s) for s, b in enumerate(bodies, 1)]
    theirs = [seal(b, sequence=s, agent_id=other) for s, b in enumerate(reversed(bodies), 1)]
    with (
        core_processes(enrolled, tmp_path, 2) as targets,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        results = list(pool.map(lambda t, b: send(t, *b), targets, [mine, theirs]))
    assert {answer(a) for acks in results for a in acks} == {"ACK_STATUS_ACCEPTED"}
    assert query(enrolled, "SELECT count(*) FROM meter_readings") == [(12 * 100,)]
    assert query(enrolled, "SELECT sum(readings_stored)::int FROM batches") == [(12 * 100,)]
    assert query(enrolled, "SELECT sum(received)::int FROM substation_daily") == [(12 * 100,)]


DIRECT_HOURLY = """
SELECT m.substation, date_bin('1 hour', r.interval_end - interval '15 minutes',
                              timestamptz '2000-01-01 00:00+00') AS hour,
       sum(r.energy_wh)::bigint, count(*) FILTER (WHERE r.quality_flags & 2 = 0),
       count(*) FILTER (WHERE r.quality_flags & 2 <> 0)
FROM meter_readings r JOIN meters m USING (meter_id) GROUP BY 1, 2 ORDER BY 1, 2
"""
DIRECT_REGION_DAILY = """
SELECT m.region, date_bin('1 day', r.interval_end - interval '15 minutes',
                          timestamptz '2000-01-01 00:00+00') AS day,
       sum(r.energy_wh)::bigint, count(*)
FROM meter_readings r JOIN meters m USING (meter_id) GROUP BY 1, 2 ORDER BY 1, 2
"""


def test_rollups_equal_a_direct_aggregate_after_late_and_resent_data(core_server, enrolled):
    """Rollups equal a direct aggregate of the stored readings, whatever the arrival.

    Two days of intervals arrive shuffled (late data), some batches twice (resends), some
    readings again in another batch (backfill).
    """
    rng = random.Random(5)
    bodies = []
    for interval in range(0, 200, 3):  # 200 intervals: more than two days, across midnight
        meters = range(20)
        energy = [rng.randrange(0, 900) for _ in meters]
        flags = [int(QualityFlag.ESTIMATED) if rng.random() < 0.1 else 0 for _ in meters]
        bodies.append(payload(meters=meters, interval=interval, energy=energy, flags=flags))
    batches = [seal(b, sequence=s) for s, b in enumerate(bodies, 1)]
    rng.shuffle(batches)
    backfill = seal(bodies[5], sequence=len(bodies) + 1)  # same readings, new batch
    acks = send(core_server, *batches, *batches[:10], backfill)
    assert [answer(a) for a in acks].count("ACK_STATUS_DUPLICATE") == 10
    hourly = query(
        enrolled,
        "SELECT substation, hour, energy_wh, received, estimated FROM substation_hourly"
        " ORDER BY 1, 2",
    )
    assert hourly == query(enrolled, DIRECT_HOURLY)
    assert len(hourly) > 48
    daily = query(
        enrolled,
        "SELECT region, day, energy_wh, received + estimated FROM region_daily ORDER BY 1, 2",
    )
    assert daily == query(enrolled, DIRECT_REGION_DAILY)
    assert len(daily) == 3


def test_a_real_reading_replaces_the_stored_estimate_and_the_correction_is_recorded(
    core_server, enrolled
):
    """Estimated first, read later: the real value is stored, the rollups follow.

    The estimate is kept in reading_corrections; a late estimate of a read interval changes
    nothing and is not a conflict.
    """
    estimated = int(QualityFlag.ESTIMATED)
    first = payload(meters=[1, 2, 3], energy=[100, 40, 50], flags=[0, estimated, estimated])
    real = payload(meters=[2], energy=[70])
    late_estimate = payload(meters=[1], energy=[999], flags=[estimated])
    send_in_order(core_server, first, real, late_estimate)
    stored = query(
        enrolled,
        "SELECT m.pseudonym, r.energy_wh, r.quality_flags, b.sequence FROM meter_readings r"
        " JOIN meters m USING (meter_id) JOIN batches b USING (batch_id) ORDER BY 1",
    )
    assert [(bytes(p), e, f, seq) for p, e, f, seq in stored] == [
        (meter(1), 100, 0, 1),
        (meter(2), 70, 0, 2),
        (meter(3), 50, estimated, 1),
    ]
    corrections = query(
        enrolled,
        "SELECT m.pseudonym, c.estimated_energy_wh, c.energy_wh, e.sequence, b.sequence"
        " FROM reading_corrections c JOIN meters m USING (meter_id)"
        " JOIN batches e ON e.batch_id = c.estimated_batch_id"
        " JOIN batches b ON b.batch_id = c.batch_id",
    )
    assert [(bytes(p), *rest) for p, *rest in corrections] == [(meter(2), 40, 70, 1, 2)]
    assert query(enrolled, "SELECT count(*) FROM reading_quarantine") == [(0,)]
    assert query(enrolled, "SELECT sequence, readings_stored FROM batches ORDER BY 1") == [
        (1, 2),
        (2, 1),
        (3, 0),
    ]
    hourly = query(
        enrolled,
        "SELECT substation, hour, energy_wh, received, estimated FROM substation_hourly"
        " ORDER BY 1, 2",
    )
    assert hourly == query(enrolled, DIRECT_HOURLY)
    assert [row[2:] for row in hourly] == [(220, 2, 1)]


def test_an_interval_is_one_reading_whatever_the_device_clock_said(core_server, enrolled):
    """11:30:00 and 11:30:02 are one interval: stored once, rolled up once, offset kept.

    A buggy or compromised agent sending a meter's interval twice a few seconds apart used to
    get two readings stored and both summed into the rollups.
    """
    on_grid = payload(meters=[1, 2], energy=[100, 200])
    skewed = payload(meters=[1, 3], energy=[100, 300])
    skewed.meter_readings.interval_end[:] = [FIRST_END + 2, FIRST_END + 42]
    conflicting = payload(meters=[1], energy=[555])
    conflicting.meter_readings.interval_end[:] = [FIRST_END - 3]
    send_in_order(core_server, on_grid, skewed, conflicting)
    stored = query(
        enrolled,
        "SELECT m.pseudonym, extract(epoch FROM interval_end)::bigint, energy_wh, clock_offset_s"
        " FROM meter_readings JOIN meters m USING (meter_id) ORDER BY 1",
    )
    assert [(bytes(p), *rest) for p, *rest in stored] == [
        (meter(1), FIRST_END, 100, 0),
        (meter(2), FIRST_END, 200, 0),
        (meter(3), FIRST_END, 300, 42),
    ]
    assert query(enrolled, "SELECT energy_wh, clock_offset_s, reason FROM reading_quarantine") == [
        (555, -3, "conflicts-with-stored")
    ]
    assert query(enrolled, "SELECT sum(energy_wh), sum(received) FROM substation_daily") == [
        (600, 3)
    ]


@one_storage
def test_one_query_returns_the_whole_lineage_of_a_reading(core_server, enrolled):
    """From a stored reading: acquire, validate, pseudonymize, sign, transmit, ingest."""
    flags = [0, int(QualityFlag.SPIKE), 0, 0]
    (ack,) = send(core_server, seal(payload(flags=flags, energy=[1, 2, 3, 4]), sequence=7))
    assert answer(ack) == "ACK_STATUS_ACCEPTED"
    steps = query(
        enrolled,
        "SELECT step, actor, detail FROM reading_lineage"
        " WHERE meter = %s AND interval_end = to_timestamp(%s) ORDER BY step_no",
        (meter(1), FIRST_END),
    )
    assert [s[0] for s in steps] == [
        "acquire",
        "validate",
        "pseudonymize",
        "sign",
        "transmit",
        "ingest",
    ]
    acquire, validate, pseudonymize, sign, _transmit, ingest = steps
    assert acquire[1] == DEVICE
    assert (acquire[2]["energy_wh"], acquire[2]["register_map_version"]) == (2, 1)
    assert validate[2] == {"ruleset": "vee-1", "quality_flags": int(QualityFlag.SPIKE)}
    assert pseudonymize[2] == {"key_id": "k1"}
    assert (sign[1], sign[2]["sequence"]) == (f"edge-agent {AGENT}", 7)
    assert (ingest[2]["substation"], ingest[2]["region"]) == (SUBSTATION, REGION)
    window = query(
        enrolled, "SELECT poll_start = poll_end, received_at <= committed_at FROM batches"
    )
    assert window == [(True, True)]


@one_storage
def test_quality_records_per_batch_meter_day_and_region_day(core_server, enrolled):
    """Counts by flag per batch; received, expected, estimated, flagged per meter and region-day."""
    estimated, spike = int(QualityFlag.ESTIMATED), int(QualityFlag.SPIKE)
    first = payload(meters=range(3), flags=[0, spike, estimated])
    second = payload(meters=range(3), interval=1, flags=[spike | int(QualityFlag.SUM_CHECK), 0, 0])
    acks = send(core_server, seal(first, sequence=1), seal(second, sequence=2))
    assert [answer(a) for a in acks] == ["ACK_STATUS_ACCEPTED"] * 2
    assert query(
        enrolled, "SELECT quality_counts, suspect_readings FROM batches ORDER BY sequence"
    ) == [
        ({"ESTIMATED": 1, "SPIKE": 1}, 1),
        ({"SPIKE": 1, "SUM_CHECK": 1}, 1),
    ]
    per_meter = query(
        enrolled,
        "SELECT m.pseudonym, q.received, q.expected, q.estimated, q.flagged"
        " FROM meter_day_quality q JOIN meters m USING (meter_id) ORDER BY 1",
    )
    assert per_meter == [
        (meter(0), 2, 96, 0, 1),
        (meter(1), 2, 96, 0, 1),
        (meter(2), 1, 96, 1, 0),
    ]
    assert query(
        enrolled, "SELECT region, received, expected, estimated, flagged FROM region_day_quality"
    ) == [(REGION, 5, 3 * 96, 1, 2)]


V4_READING = (
    "INSERT INTO meter_readings (meter, interval_end, energy_wh, register_wh, quality_flags,"
    " poll_time, device, agent_id, batch_sequence)"
    " VALUES (%s, to_timestamp(%s), %s, 1000, 0, to_timestamp(%s), %s, %s, %s)"
)


def test_upgrade_from_schema_4_keeps_every_reading_and_quarantines_duplicates(empty_dsn, storage):
    """Readings stored by release 0.4 get meter ids and batch ids; duplicates are kept aside.

    The rollups start with what was stored before the upgrade.
    """
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        migrate(conn, storage=storage, stop_before=5)
        conn.execute(
            "INSERT INTO agents (agent_id, public_key) VALUES (%s, %s)",
            (AGENT, public_key_bytes(KEY.public_key())),
        )
        for sequence in (1, 2):
            conn.execute(
                "INSERT INTO batches (agent_id, sequence, payload_sha256, schema_version,"
                " pseudonym_key_id, software_version, register_map_version, devices, created_at,"
                " received_at, meter_readings, telemetry_points, core_version)"
                " VALUES (%s, %s, '\\x00', 1, 'k1', '0.4', 1, %s, now(), now(), 2, 0, '0.4')",
                (AGENT, sequence, ["modbus://a:502/1", DEVICE]),
            )
        if storage == NATIVE:
            day_before, day_after = FIRST_END - 86_400, FIRST_END + 86_400
            conn.execute(
                "CREATE TABLE meter_readings_p1 PARTITION OF meter_readings FOR VALUES"
                f" FROM (to_timestamp({day_before})) TO (to_timestamp({day_after}))"
            )
        conn.execute(V4_READING, (meter(1), FIRST_END, 10, FIRST_END, DEVICE, AGENT, 1))
        conn.execute(V4_READING, (meter(2), FIRST_END, 20, FIRST_END, DEVICE, AGENT, 1))
        conn.execute(V4_READING, (meter(1), FIRST_END, 11, FIRST_END, DEVICE, AGENT, 2))
        conn.execute(V4_READING, (meter(1), FIRST_END, 12, FIRST_END, DEVICE, AGENT, 2))
        conn.execute(V4_READING, (meter(2), FIRST_END + 900, 21, FIRST_END, DEVICE, AGENT, 2))
        migrate(conn)
    assert query(
        empty_dsn,
        "SELECT m.pseudonym, r.energy_wh, b.sequence, b.devices[r.device_no]"
        " FROM meter_readings r JOIN meters m USING (meter_id) JOIN batches b USING (batch_id)"
        " ORDER BY 1, r.interval_end",
    ) == [
        (meter(1), 10, 1, DEVICE),
        (meter(2), 20, 1, DEVICE),
        (meter(2), 21, 2, DEVICE),
    ]
    assert query(
        empty_dsn, "SELECT energy_wh, reason FROM reading_quarantine ORDER BY energy_wh"
    ) == [(11, "duplicate-before-schema-5"), (12, "duplicate-before-schema-5")]
    assert query(empty_dsn, "SELECT sequence, readings_stored FROM batches ORDER BY 1") == [
        (1, 2),
        (2, 1),
    ]
    rollups = "SELECT substation, hour, energy_wh, received, estimated FROM substation_hourly"
    assert query(empty_dsn, rollups + " ORDER BY 1, 2") == query(empty_dsn, DIRECT_HOURLY)
    assert query(empty_dsn, "SELECT sum(energy_wh)::int FROM substation_daily") == [(51,)]
    assert query(empty_dsn, "SELECT substation, region FROM agents") == [(AGENT, "unassigned")]


@one_storage
def test_each_committed_batch_emits_one_openlineage_event(enrolled, tmp_path):
    """One OpenLineage COMPLETE event per committed batch, with its quality counts.

    The core writes them to a file ([openlineage] transport = "file"); a resend (DUPLICATE)
    emits nothing.
    """
    events = tmp_path / "lineage.jsonl"
    config = tmp_path / "core.toml"
    config.write_text(f'[openlineage]\ntransport = "file"\npath = "{events}"\n')
    batch = seal(payload(flags=[0, int(QualityFlag.SPIKE), 0, 0]), sequence=3)
    with contextlib.contextmanager(serving_core)(
        enrolled, tmp_path / "core.log", "--config", str(config)
    ) as target:
        acks = send(target, batch, batch)
    assert [answer(a) for a in acks] in (
        ["ACK_STATUS_ACCEPTED", "ACK_STATUS_DUPLICATE"],
        ["ACK_STATUS_DUPLICATE", "ACK_STATUS_ACCEPTED"],
    )
    lines = events.read_text().splitlines()  # the core flushes its queue when it stops
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["eventType"], event["run"]["runId"]) == ("COMPLETE", str(run_id(AGENT, 3)))
    (quality,) = [
        d["inputFacets"]["dataQualityMetrics"] for d in event["inputs"] if d["name"] == "batches"
    ]
    assert quality["rowCount"] == 4
    assert quality["columnMetrics"]["quality_flags.SPIKE"]["sum"] == 1


def test_a_meters_role_is_the_one_first_seen_and_decides_its_rollups(core_server, enrolled):
    """The dimension's role decides, for every batch: a later role in a batch changes nothing.

    A feeder head first sent by an agent without roles stays a customer until an operator
    changes it; its readings are summed alike before and after (never half one, half other).
    """
    first = payload(meters=[9], energy=[100])
    later = payload(meters=[9, 10], energy=[200, 400], interval=1)
    later.device_roles.append(pb.METER_ROLE_FEEDER_HEAD)
    send_in_order(core_server, first, later)
    roles = query(enrolled, "SELECT m.pseudonym, role FROM meters m ORDER BY 1")
    assert [(bytes(p), r) for p, r in roles] == [(meter(9), "customer"), (meter(10), "feeder_head")]
    assert query(enrolled, "SELECT sum(energy_wh) FROM substation_daily") == [(300,)]
