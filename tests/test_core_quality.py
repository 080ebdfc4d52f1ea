"""The storm day through the VEE ruleset into a real core: quality records and the 0.5 % alert.

The simulator's ``storm`` scenario runs in-process; every interval's readings are validated as
the agent validates them, sealed per substation as its agent would, and streamed over gRPC to
a ``core-ingest serve`` process. ``core-ingest quality-check`` then checks the rule over a
window that covers one phase of the test at a time. The core's own background check is tested
on hand-made batches.
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import time

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_services import BIN, serving_core, wait_until
from signed_batches import AGENT, answer, payload, seal, send
from signed_batches import KEY as SIGNED_KEY
from vee_scoring import validated_intervals

from core_ingest import agents
from core_ingest.schema import TIMESCALEDB
from edge_agent.transforms.batch import batch_payload
from edge_agent.transforms.pseudonymize import PseudonymousReading
from proto import pb, public_key_bytes, seal_batch
from proto.quality import SUSPECT, QualityFlag
from substation_sim import Field, FieldRecord, load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
KEY = Ed25519PrivateKey.generate()
REGIONS = {"N": "North", "S": "South"}
CALM_INTERVALS, STORM_INTERVALS = 48, 8  # 00:00-12:00, then the storm's first two hours


def substation(device: str) -> str:
    """``S-S02`` for the concentrator ``S-S02-C1``."""
    return device.rsplit("-", 1)[0]


def sealed_batches(intervals: list[list[PseudonymousReading]], sequences: collections.Counter):
    """One signed batch per substation and interval, from that substation's agent."""
    batches = []
    for readings in intervals:
        by_substation: dict[str, list[PseudonymousReading]] = collections.defaultdict(list)
        for reading in readings:
            by_substation[substation(reading.device)].append(reading)
        for name, mine in sorted(by_substation.items()):
            sequences[name] += 1
            batches.append(
                seal_batch(
                    batch_payload(mine),
                    agent_id=name,
                    sequence=sequences[name],
                    created_ms=mine[-1].poll_time_ms,
                    pseudonym_key_id="storm",
                    software_version="test",
                    register_map_version=1,
                    private_key=KEY,
                    validation_ruleset="vee-1",
                )
            )
    return batches


def quality_check(dsn: str, *options: str) -> dict | None:
    """``core-ingest quality-check``: the alert it raised, or None."""
    done = subprocess.run(
        [str(BIN / "core-ingest"), "quality-check", "--dsn", dsn, *options],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def alerts(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT kind, received, flagged, threshold FROM quality_alerts ORDER BY alert_id"
        ).fetchall()


def test_storm_raises_the_suspect_share_alert_and_fills_the_quality_records(storage_dsn, tmp_path):
    """A calm morning raises nothing, the storm's first hours raise one alert.

    The region-day records count what the VEE flagged and estimated.
    """
    record = FieldRecord(tmp_path / "record.sqlite")
    intervals = list(
        validated_intervals(
            Field(load_scenario("storm"), record=record), record, CALM_INTERVALS + STORM_INTERVALS
        )
    )
    record.close()
    calm, storm = intervals[:CALM_INTERVALS], intervals[CALM_INTERVALS:]
    names = {substation(r.device) for r in intervals[0]}
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        for name in names:
            public = public_key_bytes(KEY.public_key())
            agents.enroll(conn, name, public, substation=name, region=REGIONS[name[0]])
    sequences: collections.Counter[str] = collections.Counter()
    with contextlib.contextmanager(serving_core)(storage_dsn, tmp_path / "core.log") as target:
        acks = send(target, *sealed_batches(calm, sequences))
        assert {answer(a) for a in acks} == {pb.AckStatus.Name(pb.ACK_STATUS_ACCEPTED)}
        assert quality_check(storage_dsn) is None  # the whole calm morning is in the window
        with psycopg.connect(storage_dsn, autocommit=True) as conn:  # the morning, hours ago
            conn.execute("UPDATE batches SET received_at = received_at - interval '3 hours'")
        storm_started = time.monotonic()
        acks = send(target, *sealed_batches(storm, sequences))
        assert {answer(a) for a in acks} == {pb.AckStatus.Name(pb.ACK_STATUS_ACCEPTED)}
        # The storm's batches and none of the morning's, however long the command takes to start.
        window = time.monotonic() - storm_started + 600
        raised = quality_check(storage_dsn, "--window-seconds", f"{window:.1f}")
        again = quality_check(storage_dsn, "--window-seconds", f"{window:.1f}")
    assert again is None  # one alert per breached window
    assert alerts(storage_dsn) == [("suspect-share", raised["received"], raised["flagged"], 0.005)]
    storm_received = sum(len(readings) for readings in storm)
    assert raised["received"] == storm_received
    assert raised["share"] > 0.005
    with psycopg.connect(storage_dsn) as conn:
        quality = {
            region: numbers
            for region, *numbers in conn.execute(
                "SELECT region, received, estimated, flagged, expected FROM region_day_quality"
            )
        }
    sent = collections.Counter()
    for readings in intervals:
        for reading in readings:
            region, flags = REGIONS[reading.device[0]], reading.quality_flags
            sent[region, "estimated" if flags & QualityFlag.ESTIMATED else "received"] += 1
            sent[region, "flagged"] += bool(flags & SUSPECT)
    for region, meters in (("South", 4000), ("North", 2000)):
        expected = [sent[region, kind] for kind in ("received", "estimated", "flagged")]
        assert quality[region] == [*expected, 96 * meters]
    south, north = quality["South"], quality["North"]
    assert south[2] / south[0] > north[2] / north[0]  # the storm hit the South


def test_the_core_raises_the_alert_itself_once_per_breached_window(storage_dsn, tmp_path):
    """A serving core checks in the background: 1 % suspect raises one alert, not one per check.

    Below [quality] alert_min_readings nothing is raised whatever the share: the minimum is
    every reading sent, so the alert cannot fire while some batches are still on their way
    (whatever the machine's load, it sees all 5,100 readings).
    """
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        agents.enroll(conn, AGENT, public_key_bytes(SIGNED_KEY.public_key()))
    spike = int(QualityFlag.SPIKE)
    few = payload(meters=range(100), flags=[spike] * 50 + [0] * 50)
    many = [
        payload(meters=range(1000), interval=i, flags=[spike] * 10 + [0] * 990) for i in range(1, 6)
    ]
    config = tmp_path / "core.toml"
    config.write_text("[quality]\nalert_check_seconds = 0.2\nalert_min_readings = 5100\n")
    with contextlib.contextmanager(serving_core)(
        storage_dsn, tmp_path / "core.log", "--config", str(config)
    ) as core:
        send(core, seal(few, sequence=1))
        time.sleep(1)  # five checks: 50 % of 100 readings is below the minimum volume
        assert alerts(storage_dsn) == []
        send(core, *[seal(body, sequence=s) for s, body in enumerate(many, 2)])
        wait_until(lambda: alerts(storage_dsn), timeout=30, what="the core's own alert")
        time.sleep(1)  # five more checks of the same window
    assert alerts(storage_dsn) == [("suspect-share", 5100, 100, 0.005)]
