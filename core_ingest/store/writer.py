"""One verified batch, committed exactly once: ledger row, readings, telemetry and rollups.

Everything a batch writes goes in one transaction on one borrowed autocommit connection; the
ledger row goes first and is the exactly-once guard (``ledger``). Readings go in with binary
COPY (``readings``), and through the staging path when some were stored before. Every
connection of the core's pool runs with ``synchronous_commit`` on (``core_ingest.server``): a
committed batch is on disk, whatever the server's default.

The store answers in its own terms (``Stored``); the receiving stage turns that into the wire
protocol's Ack.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass

import numpy as np
import psycopg

from core_ingest.lineage.record import CommittedBatch
from core_ingest.schema import NATIVE
from core_ingest.store import ledger
from core_ingest.store.batch import VerifiedBatch
from core_ingest.store.ledger import EarlierCopy
from core_ingest.store.meters import FirstSeen, MeterDirectory, MeterIds, apply_rotations
from core_ingest.store.partitions import Partitions, batch_days
from core_ingest.store.reading_rows import (
    device_roles,
    meter_devices,
    meter_roles,
    quality_counts,
    suspect_count,
)
from core_ingest.store.readings import (
    NO_CORRECTIONS,
    copy_readings,
    insert_new_readings,
)
from core_ingest.store.rollups import add_to_rollups
from core_ingest.store.telemetry import copy_telemetry
from proto.version import __version__

log = logging.getLogger(__name__)

# A transaction that lost a deadlock or serialization race is tried again this often.
WRITE_ATTEMPTS = 3


class Stored(enum.Enum):
    """What became of a batch handed to the store."""

    ACCEPTED = "accepted"  # committed now
    DUPLICATE = "duplicate"  # committed before: nothing written
    CONFLICT = "conflict"  # another batch holds its sequence: nothing written
    KEY_CHANGED = "key-changed"  # the agent was revoked or re-keyed meanwhile: nothing written


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What became of the batch and, when it was committed now, its lineage."""

    stored: Stored
    committed: CommittedBatch | None = None
    refused: int = 0  # values set apart by the bounds, kept in refused_values


_EARLIER = {
    EarlierCopy.SAME: Stored.DUPLICATE,
    EarlierCopy.OTHER: Stored.CONFLICT,
    EarlierCopy.NONE: Stored.KEY_CHANGED,
}


class BatchStore:
    """Writes verified batches through one borrowed autocommit connection."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        *,
        storage: str,
        partitions: Partitions,
        meters: MeterDirectory,
    ) -> None:
        """Wrap an open autocommit connection of a schema using ``storage``."""
        self.conn = conn
        self.storage = storage
        self._partitions = partitions
        self._meters = meters

    async def write(self, batch: VerifiedBatch) -> WriteOutcome:
        """Commit the batch once, or say why nothing was written.

        A transaction that loses a deadlock against another core's is tried again; one that
        finds readings or telemetry points stored before runs again through the staging path.
        """
        if self.storage == NATIVE:
            telemetry = batch.opened.payload.transformer_telemetry
            times = [telemetry.time_ms[i] for i in batch.points]
            await self._partitions.ensure(self.conn, batch_days(batch.columns, times))
        figures = _Figures.of(batch)
        staged, attempt = False, 1
        while True:
            try:
                return await self._commit(batch, figures, staged=staged)
            except psycopg.errors.UniqueViolation:
                if staged:
                    raise
                staged = True  # some readings or points were stored before: only new ones go in
            except psycopg.errors.TransactionRollback as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise
                attempt += 1
                staged = True  # inserted in key order this time, so the retry cannot deadlock
                log.info("retrying batch %s after %s", _label(batch), exc.sqlstate)

    async def _commit(
        self, batch: VerifiedBatch, figures: _Figures, *, staged: bool
    ) -> WriteOutcome:
        columns = batch.columns
        region_id = batch.agent.region_id  # the enrolled agent's, whatever the batch says
        async with self.conn.transaction():
            row = await ledger.insert_row(
                self.conn,
                batch,
                readings_within_bounds=len(columns),
                quality=figures.quality,
                suspect=figures.suspect,
                poll_window=figures.poll_window,
                interval_window=figures.interval_window,
            )
            if row is None:
                return WriteOutcome(_EARLIER[await ledger.earlier_copy(self.conn, batch)])
            meters = await self._batch_meters(batch)
            corrected = NO_CORRECTIONS
            if staged:
                stored, corrected = await insert_new_readings(
                    self.conn, columns, meters.ids, batch_id=row.batch_id, region_id=region_id
                )
                log.info(
                    "batch %s: %d of %d readings were stored before, %d of them estimates replaced",
                    _label(batch),
                    len(columns) - len(stored),
                    len(columns),
                    len(corrected.interval_end),
                )
            else:
                await copy_readings(
                    self.conn, columns, meters.ids, batch_id=row.batch_id, region_id=region_id
                )
                stored = columns
            await copy_telemetry(self.conn, batch.opened, batch.points, region_id, staged=staged)
            await ledger.keep_refused(
                self.conn,
                batch.refused,
                batch_id=row.batch_id,
                region_id=region_id,
                label=_label(batch),
            )
            await apply_rotations(self.conn, batch.opened, region_id)
            await add_to_rollups(
                self.conn,
                stored=stored,
                corrected=corrected,
                customer=meters.customer,
                substation=batch.agent.substation,
                region=batch.agent.region,
            )
            readings_stored = len(stored) + len(corrected.interval_end)
            await ledger.record_in_audit_trail(
                self.conn,
                batch,
                row,
                readings_stored=readings_stored,
                estimates_replaced=len(corrected.interval_end),
            )
        self._meters.remember(meters)
        return WriteOutcome(
            Stored.ACCEPTED,
            _committed(batch, row, readings_stored, figures),
            refused=len(batch.refused),
        )

    async def _batch_meters(self, batch: VerifiedBatch) -> MeterIds:
        """Meter ids by the batch's meter index; only meters of stored readings are added.

        A meter whose every reading was refused gets no row in the dimension (it would count
        as an expected meter in the quality views); its index maps to 0, never copied.
        """
        payload = batch.opened.payload
        readings = payload.meter_readings
        header = batch.opened.header

        def first_seen() -> list[FirstSeen]:
            meters = len(readings.meters)
            roles = meter_roles(batch.columns, meters, device_roles(payload))
            feeders = meter_devices(batch.columns, meters, payload.devices)
            return [
                FirstSeen(role, feeder, header.pseudonym_key_id)
                for role, feeder in zip(roles, feeders, strict=True)
            ]

        if not batch.refused:
            return await self._meters.ids(
                self.conn, readings.meters, first_seen, header.agent_id, batch.agent
            )
        used = np.unique(batch.columns.meter_index)

        def used_first_seen() -> list[FirstSeen]:
            every = first_seen()
            return [every[i] for i in used]

        subset = await self._meters.ids(
            self.conn,
            [readings.meters[i] for i in used],
            used_first_seen,
            header.agent_id,
            batch.agent,
        )
        ids = np.zeros(len(readings.meters), dtype=np.int32)
        ids[used] = subset.ids
        customer = np.zeros(len(readings.meters), dtype=np.bool_)
        customer[used] = subset.customer
        return MeterIds(ids, customer, subset.digest, subset.added)


def _label(batch: VerifiedBatch) -> str:
    """How the log names a batch: agent#sequence."""
    return f"{batch.opened.header.agent_id}#{batch.opened.header.sequence}"


@dataclass(frozen=True, slots=True)
class _Figures:
    """What the ledger row and the lineage record say of the batch's readings.

    Computed once per batch, not once per attempt of its transaction.
    """

    quality: dict[str, int]
    suspect: int
    poll_window: tuple[dt.datetime, dt.datetime] | None
    interval_window: tuple[dt.datetime, dt.datetime] | None

    @classmethod
    def of(cls, batch: VerifiedBatch) -> _Figures:
        columns = batch.columns
        flags = columns.quality_flags
        return cls(
            quality_counts(flags),
            suspect_count(flags),
            columns.poll_window(),
            columns.interval_window(),
        )


def _committed(
    batch: VerifiedBatch, row: ledger.LedgerRow, readings_stored: int, figures: _Figures
) -> CommittedBatch:
    """The lineage of the batch as committed under the ledger ``row``."""
    header, payload = batch.opened.header, batch.opened.payload
    poll_window = figures.poll_window
    return CommittedBatch(
        agent_id=header.agent_id,
        sequence=header.sequence,
        batch_id=row.batch_id,
        substation=batch.agent.substation,
        region=batch.agent.region,
        devices=tuple(payload.devices),
        poll_start=poll_window[0] if poll_window else None,
        poll_end=poll_window[1] if poll_window else None,
        created_at=dt.datetime.fromtimestamp(header.created_ms / 1000, dt.UTC),
        received_at=batch.received_at,
        committed_at=row.committed_at,
        software_version=header.software_version,
        register_map_version=header.register_map_version,
        validation_ruleset=header.validation_ruleset or None,
        pseudonym_key_id=header.pseudonym_key_id,
        core_version=__version__,
        meter_readings=len(payload.meter_readings.interval_end),
        readings_stored=readings_stored,
        telemetry_points=len(payload.transformer_telemetry.time_ms),
        quality_counts=figures.quality,
    )


async def recorded_storage(conn: psycopg.AsyncConnection) -> str | None:
    """The schema's storage, or None when ``core-ingest migrate`` has not run."""
    try:
        cur = await conn.execute("SELECT storage FROM storage_settings")
    except psycopg.errors.UndefinedTable:
        return None
    row = await cur.fetchone()
    return row[0] if row else None
