"""The batch ledger: one row per committed batch, the exactly-once guard and its lineage.

The ledger's primary key (agent_id, sequence) is the guard. The row is inserted first with ON
CONFLICT DO NOTHING; if it already exists the batch was committed before (by this or another
core process: a concurrent insert waits on the key until the other transaction ends), and
``earlier_copy`` tells whether that was this very batch or another with the same sequence.
Values the bounds set apart are kept raw in ``refused_values`` beside the ledger row.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from core_ingest.store.batch import RefusedValue, VerifiedBatch
from proto.version import __version__

log = logging.getLogger(__name__)


class EarlierCopy(enum.Enum):
    """What the ledger holds under a batch's (agent_id, sequence) when its row is not new."""

    SAME = "same"  # this batch, committed before: the answer is DUPLICATE
    OTHER = "other"  # another batch with the same sequence: never stored over
    NONE = "none"  # no row: the agent was revoked or given a new key meanwhile


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A new ledger row's surrogate key and commit time."""

    batch_id: int
    committed_at: dt.datetime


async def insert_row(  # noqa: PLR0913 - keyword-only: the row's derived columns
    conn: psycopg.AsyncConnection,
    batch: VerifiedBatch,
    *,
    readings_within_bounds: int,
    quality: dict[str, int],
    suspect: int,
    poll_window: tuple[dt.datetime, dt.datetime] | None,
    interval_window: tuple[dt.datetime, dt.datetime] | None,
) -> LedgerRow | None:
    """The new ledger row, or None when there is none to insert.

    None means (agent, sequence) is already there, or the agent no longer holds the key the
    batch was verified with: the row is only inserted while the agent is enrolled with that
    key and unrevoked, so a cached key never outlives a revocation (a batch already being
    written when the revocation commits may still commit).
    """
    header, payload = batch.opened.header, batch.opened.payload
    cur = await conn.execute(
        "INSERT INTO batches (agent_id, sequence, payload_sha256, header_sha256,"
        " schema_version, pseudonym_key_id, software_version, register_map_version,"
        " devices, created_at, received_at, meter_readings, telemetry_points, core_version,"
        " validation_ruleset, substation, region, poll_start, poll_end, readings_stored,"
        " quality_counts, suspect_readings, oldest_interval_end, newest_interval_end)"
        " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s FROM agents a WHERE a.agent_id = %s AND a.public_key = %s"
        " AND a.revoked_at IS NULL"
        " ON CONFLICT (agent_id, sequence) DO NOTHING RETURNING batch_id, committed_at",
        (
            header.agent_id,
            header.sequence,
            batch.opened.payload_sha256,
            batch.opened.header_sha256,
            header.schema_version,
            header.pseudonym_key_id,
            header.software_version,
            header.register_map_version,
            list(payload.devices),
            dt.datetime.fromtimestamp(header.created_ms / 1000, dt.UTC),
            batch.received_at,
            len(payload.meter_readings.interval_end),
            len(payload.transformer_telemetry.time_ms),
            __version__,
            header.validation_ruleset or None,
            batch.agent.substation,
            batch.agent.region,
            poll_window[0] if poll_window else None,
            poll_window[1] if poll_window else None,
            readings_within_bounds,
            Jsonb(quality),
            suspect,
            interval_window[0] if interval_window else None,
            interval_window[1] if interval_window else None,
            header.agent_id,
            batch.agent.public_key,
        ),
    )
    row = await cur.fetchone()
    return LedgerRow(row[0], row[1]) if row else None


async def earlier_copy(conn: psycopg.AsyncConnection, batch: VerifiedBatch) -> EarlierCopy:
    """Whether the ledger row under the batch's key is this batch (see ``EarlierCopy``)."""
    cur = await conn.execute(
        "SELECT payload_sha256, header_sha256 FROM batches WHERE agent_id = %s AND sequence = %s",
        (batch.opened.header.agent_id, batch.opened.header.sequence),
    )
    row = await cur.fetchone()
    if row is None:
        return EarlierCopy.NONE
    # Rows stored before the header digest existed (schema version 1) compare the payload.
    if bytes(row[0]) == batch.opened.payload_sha256 and (
        row[1] is None or bytes(row[1]) == batch.opened.header_sha256
    ):
        return EarlierCopy.SAME
    return EarlierCopy.OTHER


async def keep_refused(
    conn: psycopg.AsyncConnection,
    refused: list[RefusedValue],
    *,
    batch_id: int,
    region_id: int,
    label: str,
) -> None:
    """The values set apart by the bounds, raw, with their reasons, in the batch's transaction."""
    if not refused:
        return
    await conn.execute(
        "INSERT INTO refused_values (batch_id, region_id, kind, position, reason, raw)"
        " SELECT %s, %s, * FROM unnest(%s::text[], %s::int4[], %s::text[], %s::jsonb[])",
        (
            batch_id,
            region_id,
            [r.kind for r in refused],
            [r.position for r in refused],
            [r.reason for r in refused],
            [Jsonb(r.raw) for r in refused],
        ),
    )
    log.warning("batch %s: %d values refused, first: %s", label, len(refused), refused[0].reason)


async def record_in_audit_trail(
    conn: psycopg.AsyncConnection,
    batch: VerifiedBatch,
    row: LedgerRow,
    *,
    readings_stored: int,
    estimates_replaced: int,
) -> None:
    """The batch's entry in the audit trail, the transaction's last statement.

    Last, because ``audit_append`` serializes appends on a lock held until the commit: taken
    at the end, concurrent batches wait only for one another's commit, not their whole work.
    The header digest chains the ledger row into the audit trail.
    """
    header = batch.opened.header
    await conn.execute(
        "SELECT audit_append('batch.ingest', %s, %s)",
        (
            f"{header.agent_id}/{header.sequence}",
            Jsonb(
                {
                    "batch_id": row.batch_id,
                    "header_sha256": batch.opened.header_sha256.hex(),
                    "readings": len(batch.opened.payload.meter_readings.interval_end),
                    "readings_stored": readings_stored,
                    "estimates_replaced": estimates_replaced,
                    "refused": len(batch.refused),
                    "telemetry_points": len(batch.points),
                    "pseudonym_key_id": header.pseudonym_key_id,
                }
            ),
        ),
    )
