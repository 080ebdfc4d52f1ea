"""Lineage traces: from a stored value back to the device read, and on to what includes it.

A reading's chain is in the database already: ``reading_lineage`` gives its six steps
(acquire, validate or estimate, pseudonymize, sign, transmit, ingest) with the rule and
software versions; the batch's ledger row gives its digests and the agent whose key signed
it; the audit trail holds the batch's ingest entry; ``reading_corrections`` an estimate it
replaced; the rollups the sums it went into. These functions gather it per reading, batch,
meter-day and rollup, and ``run_events`` rebuilds the core's OpenLineage run events of the
batches committed in a period from the ledger (the same run ids the core emitted).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import psycopg
from openlineage.client.event_v2 import RunEvent

from core_ingest.lineage.events import build_event
from core_ingest.lineage.record import CommittedBatch
from proto.quality import SUSPECT, QualityFlag

INTERVAL = dt.timedelta(minutes=15)
ESTIMATED = int(QualityFlag.ESTIMATED)
SUSPECT_MASK = int(SUSPECT)
# Every pseudonym a meter has had, from any one of them: the current one is where the
# rotations point, the older ones point to it (pseudonym_map is kept flat by the core).
SUBJECT = """
WITH current AS (
    SELECT coalesce((SELECT new_meter FROM pseudonym_map WHERE old_meter = %(p)s), %(p)s) AS p
)
SELECT m.meter_id, m.pseudonym, m.role, m.substation, m.region
FROM meters m, current c
WHERE m.pseudonym = c.p
   OR m.pseudonym IN (SELECT old_meter FROM pseudonym_map WHERE new_meter = c.p)
ORDER BY m.meter_id
"""
BATCH = """
SELECT b.batch_id, b.agent_id, b.sequence, b.substation, b.region, b.devices, b.poll_start,
       b.poll_end, b.created_at, b.received_at, b.committed_at, b.software_version,
       b.register_map_version, b.validation_ruleset, b.pseudonym_key_id, b.core_version,
       b.meter_readings, b.readings_stored, b.telemetry_points, b.quality_counts,
       encode(b.header_sha256, 'hex'), encode(b.payload_sha256, 'hex'),
       encode(sha256(a.public_key), 'hex')
FROM batches b JOIN agents a USING (agent_id)
"""
VERSIONS_AT = """
SELECT (SELECT max(version) FROM schema_migrations WHERE applied_at <= %(t)s),
       (SELECT digest FROM dictionary_versions WHERE recorded_at <= %(t)s
        ORDER BY recorded_at DESC LIMIT 1)
"""


class LineageError(Exception):
    """What was asked for is not stored; the message says what was looked for."""


@dataclass(frozen=True, slots=True)
class Meter:
    """One meter as the central database knows it, under each pseudonym it had."""

    pseudonyms: list[str]  # hex, oldest first
    meter_ids: list[int]
    role: str
    substation: str
    region: str


@dataclass(frozen=True, slots=True)
class BatchTrace:
    """A batch's ledger row, signature facts, audit entry, and what it stored or set apart."""

    batch: CommittedBatch
    header_sha256: str  # the digest the agent's Ed25519 signature covers
    payload_sha256: str
    agent_key_sha256: str  # fingerprint of the enrolled public key that verified it
    audit_entry: int | None
    audit_hash: str | None
    schema_version: int | None  # the schema and dictionary in force at its commit
    dictionary_version: str | None
    refused_values: int
    quarantined: int
    estimates_replaced: int


@dataclass(frozen=True, slots=True)
class ReadingTrace:
    """One stored reading, from the device read to the rollups that include it."""

    meter: Meter
    interval_end: dt.datetime
    energy_wh: int
    register_wh: int
    quality_flags: list[str]
    provenance: str  # read or estimated
    steps: list[dict[str, Any]]  # reading_lineage's steps
    batch: BatchTrace
    correction: dict[str, Any] | None  # the estimate this reading replaced, if any
    rollups: list[dict[str, Any]] = field(default_factory=list)


def meter(conn: psycopg.Connection, pseudonym: str) -> Meter:
    """The meter behind ``pseudonym`` (hex, any of its pseudonyms).

    Raises:
        LineageError: not hexadecimal, or no stored meter has it.

    """
    try:
        wanted = bytes.fromhex(pseudonym)
    except ValueError:
        raise LineageError(f"pseudonym {pseudonym!r} is not hexadecimal") from None
    rows = conn.execute(SUBJECT, {"p": wanted}).fetchall()
    if not rows:
        raise LineageError(f"no stored meter has the pseudonym {pseudonym}")
    return Meter(
        pseudonyms=[bytes(r[1]).hex() for r in rows],
        meter_ids=[r[0] for r in rows],
        role=rows[-1][2],
        substation=rows[-1][3],
        region=rows[-1][4],
    )


def reading(conn: psycopg.Connection, pseudonym: str, interval_end: dt.datetime) -> ReadingTrace:
    """The whole chain of one stored reading.

    Raises:
        LineageError: no such meter, or no reading of it for that interval.

    """
    subject = meter(conn, pseudonym)
    row = conn.execute(
        "SELECT r.energy_wh, r.register_wh, r.quality_flags, r.batch_id, m.pseudonym"
        " FROM meter_readings r JOIN meters m USING (meter_id)"
        " WHERE r.meter_id = ANY(%s) AND r.interval_end = %s",
        (subject.meter_ids, interval_end),
    ).fetchone()
    if row is None:
        raise LineageError(
            f"no stored reading of {pseudonym} for the interval ending {interval_end}"
        )
    energy, register, flags, batch_id, stored_as = row
    steps = [
        {"step_no": s[0], "step": s[1], "at": s[2], "actor": s[3], "detail": s[4]}
        for s in conn.execute(
            "SELECT step_no, step, at, actor, detail FROM reading_lineage"
            " WHERE meter = %s AND interval_end = %s ORDER BY step_no",
            (stored_as, interval_end),
        ).fetchall()
    ]
    return ReadingTrace(
        meter=subject,
        interval_end=interval_end,
        energy_wh=energy,
        register_wh=register,
        quality_flags=flag_names(flags),
        provenance=_provenance(flags),
        steps=steps,
        batch=batch_trace(conn, batch_id=batch_id),
        correction=_correction(conn, subject.meter_ids, interval_end),
        rollups=_rollups(conn, subject, interval_end, batch_id),
    )


def flag_names(flags: int) -> list[str]:
    """The quality flags set in ``flags``, by name."""
    return [f.name or str(int(f)) for f in QualityFlag if f and flags & f]


def batch_trace(
    conn: psycopg.Connection,
    *,
    batch_id: int | None = None,
    agent_id: str | None = None,
    sequence: int | None = None,
) -> BatchTrace:
    """A batch by its ledger key or by (agent, sequence).

    Raises:
        LineageError: no such batch in the ledger.

    """
    if batch_id is not None:
        row = conn.execute(BATCH + " WHERE b.batch_id = %s", (batch_id,)).fetchone()
    else:
        row = conn.execute(
            BATCH + " WHERE b.agent_id = %s AND b.sequence = %s", (agent_id, sequence)
        ).fetchone()
    if row is None:
        raise LineageError(f"no batch {batch_id or f'{agent_id}/{sequence}'} in the ledger")
    batch = committed_batch(row[:20])
    audited = conn.execute(
        "SELECT entry_id, encode(hash, 'hex') FROM audit_log"
        " WHERE action = 'batch.ingest' AND object = %s ORDER BY entry_id LIMIT 1",
        (f"{batch.agent_id}/{batch.sequence}",),
    ).fetchone()
    schema_version, dictionary_version = conn.execute(
        VERSIONS_AT, {"t": batch.committed_at}
    ).fetchone() or (None, None)
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM refused_values WHERE batch_id = %(b)s),"
        " (SELECT count(*) FROM reading_quarantine WHERE batch_id = %(b)s),"
        " (SELECT count(*) FROM reading_corrections WHERE batch_id = %(b)s)",
        {"b": batch.batch_id},
    ).fetchone() or (0, 0, 0)
    return BatchTrace(
        batch=batch,
        header_sha256=row[20],
        payload_sha256=row[21],
        agent_key_sha256=row[22],
        audit_entry=audited[0] if audited else None,
        audit_hash=audited[1] if audited else None,
        schema_version=schema_version,
        dictionary_version=dictionary_version,
        refused_values=counts[0],
        quarantined=counts[1],
        estimates_replaced=counts[2],
    )


def committed_batch(row: tuple[Any, ...]) -> CommittedBatch:
    """The core's lineage record of a batch, rebuilt from its ledger row (``BATCH`` order)."""
    return CommittedBatch(
        batch_id=row[0],
        agent_id=row[1],
        sequence=row[2],
        substation=row[3],
        region=row[4],
        devices=tuple(row[5]),
        poll_start=row[6],
        poll_end=row[7],
        created_at=row[8],
        received_at=row[9],
        committed_at=row[10],
        software_version=row[11],
        register_map_version=row[12],
        validation_ruleset=row[13],
        pseudonym_key_id=row[14],
        core_version=row[15],
        meter_readings=row[16],
        readings_stored=row[17] if row[17] is not None else row[16],
        telemetry_points=row[18],
        quality_counts=dict(row[19] or {}),
    )


def _correction(
    conn: psycopg.Connection, meter_ids: list[int], interval_end: dt.datetime
) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT estimated_energy_wh, estimated_quality_flags, estimated_batch_id, corrected_at"
        " FROM reading_corrections WHERE meter_id = ANY(%s) AND interval_end = %s",
        (meter_ids, interval_end),
    ).fetchone()
    if row is None:
        return None
    return {
        "estimated_energy_wh": row[0],
        "estimated_flags": flag_names(row[1]),
        "estimated_batch_id": row[2],
        "corrected_at": row[3],
    }


def _rollups(
    conn: psycopg.Connection, subject: Meter, interval_end: dt.datetime, batch_id: int
) -> list[dict[str, Any]]:
    """The hourly and daily sums this reading is counted in (customer meters only)."""
    if subject.role != "customer":
        return []
    start = interval_end - INTERVAL
    found = []
    for table, column, unit in (
        ("substation_hourly", "hour", "hour"),
        ("substation_daily", "day", "day"),
    ):
        row = conn.execute(
            f"SELECT {column}, energy_wh, received, estimated, suspect FROM {table}"  # noqa: S608 - constants
            f" WHERE substation = (SELECT substation FROM batches WHERE batch_id = %s)"
            f" AND {column} = date_trunc('{unit}', %s::timestamptz, 'UTC')",
            (batch_id, start),
        ).fetchone()
        if row is not None:
            found.append(
                {"table": table, "period": row[0], "energy_wh": row[1], "received": row[2],
                 "estimated": row[3], "suspect": row[4]}
            )  # fmt: skip
    return found


@dataclass(frozen=True, slots=True)
class MeterDay:
    """A meter's 96 intervals of one UTC day: each read, estimated or missing, and its batch."""

    meter: Meter
    day: dt.date
    intervals: list[dict[str, Any]]  # stored ones, in order
    read: int
    estimated: int
    missing: int
    batches: list[str]  # agent/sequence of the batches that stored them


def meter_day(conn: psycopg.Connection, pseudonym: str, day: dt.date) -> MeterDay:
    """Where each of a meter's readings of ``day`` came from (intervals starting that day)."""
    subject = meter(conn, pseudonym)
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    rows = conn.execute(
        "SELECT r.interval_end, r.energy_wh, r.quality_flags, b.agent_id, b.sequence"
        " FROM meter_readings r JOIN batches b USING (batch_id)"
        " WHERE r.meter_id = ANY(%s) AND r.interval_end > %s AND r.interval_end <= %s"
        " ORDER BY r.interval_end",
        (subject.meter_ids, start, start + dt.timedelta(days=1)),
    ).fetchall()
    intervals = [
        {"interval_end": end, "energy_wh": energy, "provenance": _provenance(flags),
         "flags": flag_names(flags), "batch": f"{agent}/{sequence}"}
        for end, energy, flags, agent, sequence in rows
    ]  # fmt: skip
    estimated = sum(1 for i in intervals if i["provenance"] == "estimated")
    return MeterDay(
        meter=subject,
        day=day,
        intervals=intervals,
        read=len(intervals) - estimated,
        estimated=estimated,
        missing=96 - len(intervals),
        batches=sorted({i["batch"] for i in intervals}),
    )


def _provenance(flags: int) -> str:
    return "estimated" if flags & ESTIMATED else "read"


@dataclass(frozen=True, slots=True)
class RollupTrace:
    """One rollup row and the batches whose readings it sums, checked against them."""

    table: str
    substation: str
    period: dt.datetime
    stored: dict[str, int] | None  # the row: energy_wh, received, estimated, suspect
    summed: dict[str, int]  # the same, summed from the stored readings now
    batches: list[dict[str, Any]]  # agent/sequence, readings, energy_wh

    @property
    def consistent(self) -> bool:
        """The rollup equals the sum of the readings it was kept from."""
        return self.stored == self.summed


def rollup(
    conn: psycopg.Connection, substation: str, period: dt.datetime, unit: str
) -> RollupTrace:
    """``substation_hourly`` (unit ``hour``) or ``substation_daily`` (``day``) for one period.

    A reading counts in the period its interval starts in; customer meters only, attributed
    to the substation of the batch that stored it, as the core keeps the rollups.
    """
    table, column = {"hour": ("substation_hourly", "hour"), "day": ("substation_daily", "day")}[
        unit
    ]
    start = period.replace(tzinfo=dt.UTC) if period.tzinfo is None else period
    end = start + (dt.timedelta(hours=1) if unit == "hour" else dt.timedelta(days=1))
    row = conn.execute(
        f"SELECT energy_wh, received, estimated, suspect FROM {table}"  # noqa: S608 - constants
        f" WHERE substation = %s AND {column} = %s",
        (substation, start),
    ).fetchone()
    batches = conn.execute(
        "SELECT b.agent_id || '/' || b.sequence, count(*), sum(r.energy_wh)::bigint,"
        " count(*) FILTER (WHERE r.quality_flags & %s <> 0),"
        " count(*) FILTER (WHERE r.quality_flags & %s <> 0)"
        " FROM meter_readings r JOIN batches b USING (batch_id) JOIN meters m USING (meter_id)"
        " WHERE b.substation = %s AND m.role = 'customer'"
        " AND r.interval_end > %s AND r.interval_end <= %s GROUP BY 1 ORDER BY 1",
        (ESTIMATED, SUSPECT_MASK, substation, start, end),
    ).fetchall()
    estimated = sum(b[3] for b in batches)
    summed = {
        "energy_wh": sum(b[2] for b in batches),
        "received": sum(b[1] for b in batches) - estimated,
        "estimated": estimated,
        "suspect": sum(b[4] for b in batches),
    }
    stored = (
        dict(zip(("energy_wh", "received", "estimated", "suspect"), row, strict=True))
        if row
        else None
    )
    return RollupTrace(
        table=table,
        substation=substation,
        period=start,
        stored=stored,
        summed=summed,
        batches=[
            {"batch": b[0], "readings": b[1], "energy_wh": b[2], "estimated": b[3]} for b in batches
        ],
    )


def run_events(
    conn: psycopg.Connection,
    start: dt.datetime,
    end: dt.datetime,
    *,
    namespace: str,
    database_namespace: str,
) -> list[RunEvent]:
    """The core's run event of every batch committed in [start, end), rebuilt from the ledger."""
    rows = conn.execute(
        BATCH + " WHERE b.committed_at >= %s AND b.committed_at < %s ORDER BY b.committed_at",
        (start, end),
    ).fetchall()
    return [
        build_event(
            committed_batch(row[:20]), namespace=namespace, database_namespace=database_namespace
        )
        for row in rows
    ]
