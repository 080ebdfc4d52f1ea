"""The audit question: everything that happened to one data subject's data in a period.

A data subject is a household; centrally it is a meter under one or more pseudonyms (edge key
rotations). ``trace`` gathers, for every pseudonym it has had: its readings and how each was
produced (the edge software, VEE ruleset, pseudonym key and core that handled them), the
estimates, the corrections that replaced estimates with read values, the readings set aside
(quarantined, refused), the key rotations, the rollups its readings are counted in, the audit
trail's entries that changed stored readings or applied retention in the period, the
anonymized exports that included it (its profile aggregated with k - 1 others), and the reads
of personal data pgaudit logged (statements naming one of its pseudonyms or ids picked out).
Every query is by the meter's ids on the readings' (meter_id, interval_end) index, so a year
of one meter is read without touching anyone else's rows.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from governance import lineage
from governance.reads import Read, ReadCount, summarise
from proto.quality import QualityFlag

READINGS = """
SELECT count(*), count(*) FILTER (WHERE quality_flags & %(estimated)s <> 0),
       count(*) FILTER (WHERE quality_flags & %(suspect)s <> 0),
       min(interval_end), max(interval_end), count(DISTINCT batch_id)
FROM meter_readings
WHERE meter_id = ANY(%(ids)s) AND interval_end > %(start)s AND interval_end <= %(end)s
"""
FLAGS = """
SELECT f.bit, count(*) FROM meter_readings r,
LATERAL unnest(%(bits)s::int[]) AS f(bit)
WHERE r.meter_id = ANY(%(ids)s) AND r.interval_end > %(start)s AND r.interval_end <= %(end)s
  AND r.quality_flags & f.bit <> 0
GROUP BY 1 ORDER BY 1
"""
PRODUCERS = """
SELECT b.software_version, b.register_map_version, b.validation_ruleset, b.pseudonym_key_id,
       b.core_version, b.agent_id, count(*), min(r.interval_end), max(r.interval_end)
FROM meter_readings r JOIN batches b USING (batch_id)
WHERE r.meter_id = ANY(%(ids)s) AND r.interval_end > %(start)s AND r.interval_end <= %(end)s
GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY min(r.interval_end)
"""


@dataclass(frozen=True, slots=True)
class SubjectTrace:
    """The report ``governance trace subject`` prints, as data."""

    meter: lineage.Meter
    start: dt.datetime
    end: dt.datetime
    readings: dict[str, Any]  # stored, estimated, suspect, first, last, batches
    flags: dict[str, int]  # quality flag -> readings carrying it
    producers: list[dict[str, Any]]  # edge software, ruleset, key, core, agent: readings
    corrections: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    rotations: list[dict[str, Any]]
    rollups: dict[str, Any]
    changes: list[dict[str, Any]]  # audit entries changing readings or applying retention
    # anonymized exports holding its readings of the period (whenever they were made)
    exports: list[dict[str, Any]] = field(default_factory=list)
    reads: list[ReadCount] = field(default_factory=list)
    reads_naming: list[dict[str, Any]] = field(default_factory=list)
    reads_unavailable: str | None = None


def trace(
    conn: psycopg.Connection,
    pseudonym: str,
    start: dt.datetime,
    end: dt.datetime,
    logged_reads: list[Read] | None = None,
) -> SubjectTrace:
    """Everything the database records about the meter's data in (start, end].

    ``logged_reads`` are pgaudit's (None: not available); reads are counted over the period and
    those whose statement names one of the meter's pseudonyms or ids listed.

    Raises:
        lineage.LineageError: no stored meter has the pseudonym.

    """
    subject = lineage.meter(conn, pseudonym)
    window = {"ids": subject.meter_ids, "start": start, "end": end}
    stored, estimated, suspect, first, last, batches = conn.execute(
        READINGS, window | {"estimated": lineage.ESTIMATED, "suspect": lineage.SUSPECT_MASK}
    ).fetchone() or (0, 0, 0, None, None, 0)
    reads = logged_reads or []
    return SubjectTrace(
        meter=subject,
        start=start,
        end=end,
        readings={"stored": stored, "read": stored - estimated, "estimated": estimated,
                  "suspect": suspect, "first": first, "last": last, "batches": batches},
        flags=_flags(conn, window),
        producers=_rows(conn, PRODUCERS, window, (
            "software_version", "register_map_version", "validation_ruleset",
            "pseudonym_key_id", "core_version", "agent_id", "readings", "first", "last")),
        corrections=_rows(conn, (
            "SELECT interval_end, estimated_energy_wh, energy_wh, estimated_batch_id, batch_id,"
            " corrected_at FROM reading_corrections WHERE meter_id = ANY(%(ids)s)"
            " AND interval_end > %(start)s AND interval_end <= %(end)s ORDER BY interval_end"),
            window, ("interval_end", "estimated_energy_wh", "energy_wh", "estimated_batch_id",
                     "batch_id", "corrected_at")),
        quarantined=_rows(conn, (
            "SELECT interval_end, energy_wh, reason, batch_id, quarantined_at"
            " FROM reading_quarantine WHERE meter_id = ANY(%(ids)s)"
            " AND interval_end > %(start)s AND interval_end <= %(end)s ORDER BY interval_end"),
            window, ("interval_end", "energy_wh", "reason", "batch_id", "quarantined_at")),
        refused=_rows(conn, (
            "SELECT b.received_at, v.reason, v.batch_id FROM refused_values v"
            " JOIN batches b USING (batch_id) WHERE v.raw->>'meter' = ANY(%(hex)s)"
            " AND b.received_at > %(start)s AND b.received_at <= %(end)s ORDER BY 1"),
            window | {"hex": subject.pseudonyms}, ("received_at", "reason", "batch_id")),
        rotations=_rows(conn, (
            "SELECT encode(old_meter, 'hex'), encode(new_meter, 'hex'), old_key_id, new_key_id,"
            " agent_id, batch_sequence FROM pseudonym_map"
            " WHERE old_meter = ANY(%(raw)s) OR new_meter = ANY(%(raw)s)"),
            window | {"raw": [bytes.fromhex(p) for p in subject.pseudonyms]},
            ("old", "new", "old_key_id", "new_key_id", "agent_id", "batch_sequence")),
        rollups=_rollups(conn, subject, window),
        changes=_rows(conn, (
            "SELECT entry_id, at, actor, action, object, detail FROM audit_log"
            " WHERE at > %(start)s AND at <= %(end)s"
            " AND (action LIKE 'readings.%%' OR action = 'retention.apply')"
            " ORDER BY entry_id"),
            window, ("entry_id", "at", "actor", "action", "object", "detail")),
        exports=_rows(conn, (
            "SELECT e.export_id, e.made_at, e.made_by, e.dataset, e.k, e.l, e.area_level,"
            " e.file_name FROM export_meters x JOIN exports e USING (export_id)"
            " WHERE x.meter_id = ANY(%(ids)s) AND (e.filter->>'since')::timestamptz < %(end)s"
            " AND (e.filter->>'until')::timestamptz > %(start)s ORDER BY e.export_id"),
            window, ("export_id", "made_at", "made_by", "dataset", "k", "l", "area_level",
                     "file_name")),
        reads=summarise(reads, start, end),
        reads_naming=_naming(reads, subject, start, end),
        reads_unavailable=None if logged_reads is not None else "pgaudit's log not read",
    )  # fmt: skip


def _flags(conn: psycopg.Connection, window: dict[str, Any]) -> dict[str, int]:
    bits = [int(f) for f in QualityFlag if f]
    counted = conn.execute(FLAGS, window | {"bits": bits}).fetchall()
    return {lineage.flag_names(bit)[0]: count for bit, count in counted}


def _rows(
    conn: psycopg.Connection, query: str, window: dict[str, Any], names: tuple[str, ...]
) -> list[dict[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in conn.execute(query, window).fetchall()]


def _rollups(
    conn: psycopg.Connection, subject: lineage.Meter, window: dict[str, Any]
) -> dict[str, Any]:
    """How many hourly and daily rollup rows the meter's readings are counted in."""
    if subject.role != "customer":
        return {"hourly": 0, "daily": 0, "note": f"a {subject.role} meter: not consumption"}
    row = conn.execute(
        "SELECT count(DISTINCT date_trunc('hour', interval_end - interval '15 minutes', 'UTC')),"
        " count(DISTINCT date_trunc('day', interval_end - interval '15 minutes', 'UTC'))"
        " FROM meter_readings WHERE meter_id = ANY(%(ids)s)"
        " AND interval_end > %(start)s AND interval_end <= %(end)s",
        window,
    ).fetchone() or (0, 0)
    return {"hourly": row[0], "daily": row[1], "substation": subject.substation,
            "region": subject.region}  # fmt: skip


def _naming(
    reads: list[Read], subject: lineage.Meter, start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    """The logged reads whose statement names one of the meter's pseudonyms or ids."""
    ids = "|".join(str(i) for i in subject.meter_ids)
    names = re.compile(rf"{'|'.join(subject.pseudonyms)}|\bmeter_id\s*=\s*({ids})\b", re.IGNORECASE)
    statements: dict[tuple[dt.datetime, str, str], dict[str, Any]] = {}
    for r in reads:  # pgaudit logs a statement once per relation it read: one entry each
        if start < r.at <= end and names.search(r.statement):
            entry = statements.setdefault(
                (r.at, r.user, r.statement),
                {"at": r.at, "user": r.user, "application": r.application, "relations": [],
                 "statement": r.statement},
            )  # fmt: skip
            entry["relations"].append(r.relation)
    return list(statements.values())
