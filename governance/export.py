"""Anonymized exports: query, generalize, measure, write, record. Nothing leaves unrecorded.

``export`` reads the weekly profiles the login may see (``load_profiles``), makes a release
that holds the target or refuses (``anonymize``), writes it (CSV or Parquet, by the file's
suffix) beside its destination, then records it in one transaction: an ``exports`` row with
the dataset, filter, target, measured k and l, key ids, meter count and the file's SHA-256, one
``export_meters`` row per meter released (a data subject's request finds them), and an
``export.write`` entry in the audit trail; the file is moved into place inside that
transaction, so a record that fails leaves no file, and a file that cannot be placed leaves
no record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from governance import audit
from governance.anonymize import Release, Target, anonymize
from governance.load_profiles import LoadProfiles, ProfileQuery, read_profiles
from proto.progress import Progress

log = logging.getLogger(__name__)

DATASET = "weekly-profiles"  # the one dataset so far: a meter's mean week, generalized
FORMATS = {".csv": "csv", ".parquet": "parquet"}
EXPORT_STEPS = ("read profiles", "anonymize", "write", "record")


class ExportError(Exception):
    """An export asked for what cannot be written (an unknown file format)."""


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """What was exported and recorded."""

    export_id: int
    audit_entry: int
    path: Path
    sha256: str
    release: Release
    key_ids: list[str]


def export(
    conn: psycopg.Connection, query: ProfileQuery, target: Target, out: Path
) -> ExportRecord:
    """Export the weekly profiles of ``query`` to ``out``, anonymized to ``target``; record it.

    Raises:
        ExportError: ``out`` is neither ``.csv`` nor ``.parquet``.
        UnreachableTargetError: the target cannot be reached; nothing is written.

    """
    file_format = FORMATS.get(out.suffix.lower())
    if file_format is None:
        raise ExportError(f"--out must end in .csv or .parquet, got {out.name!r}")
    with Progress("export", len(EXPORT_STEPS), unit="steps", log=log) as steps:
        profiles = read_profiles(conn, query)
        steps.advance()
        release = anonymize(profiles, target)
        steps.advance()
        return _place(
            conn,
            (profiles, release),
            out,
            query=query,
            target=target,
            file_format=file_format,
            steps=steps,
        )


def _place(  # noqa: PLR0913 - the export's parts, from export() only
    conn: psycopg.Connection,
    made: tuple[LoadProfiles, Release],
    out: Path,
    *,
    query: ProfileQuery,
    target: Target,
    file_format: str,
    steps: Progress,
) -> ExportRecord:
    """Write the release beside ``out``, record it, move it into place (or leave nothing)."""
    profiles, release = made
    partial = out.with_name(f".{out.name}.partial")
    placed = False
    try:
        _write(release, partial, file_format)
        steps.advance()
        digest = hashlib.sha256(partial.read_bytes()).digest()
        with conn.transaction():  # the file is moved into place before the record commits
            export_id, entry = _record(
                conn,
                query=query,
                target=target,
                release=release,
                key_ids=profiles.key_ids,
                out=out,
                digest=digest,
            )
            partial.replace(out)
            placed = True
        steps.advance()
    except BaseException:
        if placed:
            out.unlink(missing_ok=True)  # recorded nowhere: not left behind either
        raise
    finally:
        partial.unlink(missing_ok=True)
    return ExportRecord(export_id, entry, out, digest.hex(), release, profiles.key_ids)


def _write(release: Release, path: Path, file_format: str) -> None:
    if file_format == "csv":
        release.table.to_csv(path, index=False)
    else:
        release.table.to_parquet(path, index=False)


def _record(  # noqa: PLR0913 - everything the record holds
    conn: psycopg.Connection,
    *,
    query: ProfileQuery,
    target: Target,
    release: Release,
    key_ids: list[str],
    out: Path,
    digest: bytes,
) -> tuple[int, int]:
    """The exports row, its meters and the audit entry (in the caller's transaction)."""
    asked = _filter(query)
    row = conn.execute(
        "INSERT INTO exports (dataset, filter, k, l, measured_k, measured_l, area_level,"
        " meters, suppressed, key_ids, file_name, file_sha256)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING export_id",
        (
            DATASET,
            Jsonb(asked),
            target.k,
            target.l,
            release.k,
            release.l,
            release.area_level,
            len(release.table),
            release.suppressed,
            key_ids,
            out.name,
            digest,
        ),
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    export_id = int(row[0])
    conn.execute(
        "INSERT INTO export_meters (export_id, meter_id, region_id)"
        " SELECT %s, m.meter_id, r.region_id FROM unnest(%s::int[]) AS e(meter_id)"
        " JOIN meters m USING (meter_id) JOIN regions r ON r.name = m.region",
        (export_id, release.meter_ids.tolist()),
    )
    entry = audit.append(
        conn,
        "export.write",
        DATASET,
        {
            "export_id": export_id,
            "filter": asked,
            "k": target.k,
            "l": target.l,
            "measured_k": release.k,
            "measured_l": release.l,
            "area_level": release.area_level,
            "meters": len(release.table),
            "suppressed": release.suppressed,
            "key_ids": key_ids,
            "file": out.name,
            "sha256": digest.hex(),
        },
    )
    return export_id, entry


def _filter(query: ProfileQuery) -> dict[str, object]:
    """The query as the record keeps it (times as ISO 8601)."""
    asked = dataclasses.asdict(query)
    return {
        key: value.isoformat() if isinstance(value, dt.datetime) else value
        for key, value in asked.items()
    }
