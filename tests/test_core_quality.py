"""The storm day through the VEE ruleset into a real core: quality records and the 0.5 % alert.

The simulator's ``storm`` scenario runs in-process; every interval's readings are validated as
the agent validates them, sealed per substation as its agent would, and streamed over gRPC to
a ``core-ingest serve`` process with a short alert window, so "the last hour" of the rule
covers one phase of the test at a time.
"""

from __future__ import annotations

import collections
import contextlib
import time

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fix_services import serving_core, wait_until
from signed_batches import answer, send
from vee_scoring import validated_intervals

from core_ingest import agents
from core_ingest.migrations import TIMESCALEDB
from edge_agent.transforms.batch import batch_payload
from edge_agent.transforms.pseudonymize import PseudonymousReading
from proto import pb, public_key_bytes, seal_batch
from proto.quality import SUSPECT, QualityFlag
from substation_sim import Field, FieldRecord, load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage", [TIMESCALEDB])]
KEY = Ed25519PrivateKey.generate()
REGIONS = {"N": "North", "S": "South"}
CALM_INTERVALS, STORM_INTERVALS = 48, 8  # 00:00-12:00, then the storm's first two hours
WINDOW_SECONDS = 4.0


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
    config = tmp_path / "core.toml"
    config.write_text(
        f"[quality]\nalert_window_seconds = {WINDOW_SECONDS}\nalert_check_seconds = 0.2\n"
    )
    sequences: collections.Counter[str] = collections.Counter()
    with contextlib.contextmanager(serving_core)(
        storage_dsn, tmp_path / "core.log", "--config", str(config)
    ) as target:
        acks = send(target, *sealed_batches(calm, sequences))
        assert {answer(a) for a in acks} == {pb.AckStatus.Name(pb.ACK_STATUS_ACCEPTED)}
        time.sleep(WINDOW_SECONDS + 1)  # the calm morning leaves the window, unalerted
        assert alerts(storage_dsn) == []
        acks = send(target, *sealed_batches(storm, sequences))
        assert {answer(a) for a in acks} == {pb.AckStatus.Name(pb.ACK_STATUS_ACCEPTED)}
        raised = wait_until(lambda: alerts(storage_dsn), timeout=30, what="the quality alert")
    storm_received = sum(len(readings) for readings in storm)
    (kind, received, flagged, threshold) = raised[0]
    assert len(raised) == 1
    assert (kind, threshold) == ("suspect-share", 0.005)
    assert 0 < received <= storm_received  # raised as the storm's batches came in
    assert flagged / received > 0.005
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
