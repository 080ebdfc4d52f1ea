"""Write verified batches to PostgreSQL exactly once: ledger row and readings in one transaction.

The ledger's primary key (agent_id, sequence) is the exactly-once guard. The ledger row is
inserted first with ON CONFLICT DO NOTHING; if it already exists the batch was committed before
(by this or another core process: a concurrent insert waits on the key until the other
transaction ends), nothing is written, and the answer is DUPLICATE when the payload hash matches
or SEQUENCE_CONFLICT when it does not. Readings go in with binary COPY.

Binary COPY applies no casts: every column's type is pinned with ``set_types`` below, and a
value outside the column's range is refused before the COPY starts.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

from core_ingest import __version__
from core_ingest.errors import StorageUnavailable
from core_ingest.migrations import NATIVE
from core_ingest.reading_rows import (
    COPY_COLUMNS,
    ReadingColumns,
    copy_buffer,
    quality_counts,
    rollup_delta,
    suspect_count,
)
from proto import EnvelopeError, OpenedBatch, pb

log = logging.getLogger(__name__)

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
# Times accepted, Unix seconds: 2000-01-01 to 2200-01-01. Anything else is a broken clock or
# a broken batch, and would not even convert to a timestamp past the year 9999.
EARLIEST_S = 946_684_800
LATEST_S = 7_258_118_400
UTC = dt.UTC
METER_COPY = f"COPY meter_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
TELEMETRY_COPY = (
    "COPY transformer_telemetry (transformer_id, time, metric, value, quality_flags, agent_id,"
    " batch_sequence) FROM STDIN (FORMAT BINARY)"
)
TELEMETRY_TYPES = ["text", "timestamptz", "text", "float8", "int4", "text", "int8"]
STAGED_COLUMNS = ", ".join(f"i.{name}" for name in COPY_COLUMNS.split(", "))
# Staged readings already stored by an earlier batch with another value: kept, not applied.
QUARANTINE_CONFLICTS = (
    f"INSERT INTO reading_quarantine ({COPY_COLUMNS}, reason)"  # noqa: S608 - constants only
    f" SELECT {STAGED_COLUMNS}, 'conflicts-with-stored'"
    " FROM incoming_readings i JOIN meter_readings r USING (meter_id, interval_end)"
    " WHERE r.batch_id <> %s"
    " AND (r.energy_wh, r.register_wh) IS DISTINCT FROM (i.energy_wh, i.register_wh)"
)
# A transaction that lost a deadlock or serialization race is tried again this often.
WRITE_ATTEMPTS = 3
ROLLUP_TABLES = (("substation_hourly", "hour", 3600), ("substation_daily", "day", 86_400))


@dataclass(frozen=True, slots=True)
class AgentKey:
    """An enrolled agent: its raw public key, whether it is revoked, and where it stands."""

    public_key: bytes
    revoked: bool
    substation: str
    region: str


def _utc_day(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, UTC).date()


def batch_days(opened: OpenedBatch, columns: ReadingColumns) -> dict[str, set[dt.date]]:
    """UTC days each partitioned table needs a partition for, to hold this batch."""
    return {
        "meter_readings": {_utc_day(int(s)) for s in np.unique(columns.interval_end)},
        "transformer_telemetry": {
            _utc_day(ms / 1000) for ms in set(opened.payload.transformer_telemetry.time_ms)
        },
    }


def check_ranges(opened: OpenedBatch, columns: ReadingColumns) -> None:
    """Refuse values the database columns cannot hold, naming the column."""
    telemetry = opened.payload.transformer_telemetry
    limits = (
        ("register_wh", columns.register_wh, 0, INT8_MAX),
        ("quality_flags", columns.quality_flags, 0, INT4_MAX),
        ("transformer quality_flags", telemetry.quality_flags, 0, INT4_MAX),
        ("created_ms", [opened.header.created_ms], EARLIEST_S * 1000, LATEST_S * 1000),
        ("interval_end", columns.interval_end, EARLIEST_S, LATEST_S),
        ("poll_time_ms", columns.poll_time_ms, EARLIEST_S * 1000, LATEST_S * 1000),
        ("telemetry time_ms", telemetry.time_ms, EARLIEST_S * 1000, LATEST_S * 1000),
    )
    for name, column, low, high in limits:
        if len(column) and not low <= min(column) <= max(column) <= high:
            raise EnvelopeError(
                pb.REJECT_REASON_MALFORMED, f"a {name} value is outside {low}..{high}"
            )


class MeterDirectory:
    """Pseudonym -> meter_id from the meters dimension, remembered by this core process.

    A meter is added the first time any agent sends it, with that agent's substation and
    region. Lookups are sorted so two cores adding the same new meters lock them in the same
    order. The memory is bounded: past ``capacity`` pseudonyms it starts over.
    """

    def __init__(self, capacity: int = 2_000_000) -> None:
        """Start empty; about 120 bytes per remembered meter."""
        self._ids: dict[bytes, int] = {}
        self._capacity = capacity

    async def ids(
        self, conn: psycopg.AsyncConnection, pseudonyms: list[bytes], agent_id: str, agent: AgentKey
    ) -> npt.NDArray[np.int32]:
        """The meter_id of each pseudonym, in order, adding unknown meters to the dimension."""
        wanted = set(pseudonyms)
        missing = [p for p in wanted if p not in self._ids]
        if missing:
            if len(self._ids) + len(missing) > self._capacity:
                self._ids.clear()
                missing = list(wanted)
            missing.sort()
            await conn.execute(
                "INSERT INTO meters (pseudonym, substation, region, first_agent_id)"
                " SELECT p, %s, %s, %s FROM unnest(%s::bytea[]) AS p"
                " ON CONFLICT (pseudonym) DO NOTHING",
                (agent.substation, agent.region, agent_id, missing),
            )
            cur = await conn.execute(
                "SELECT pseudonym, meter_id FROM meters WHERE pseudonym = ANY(%s)", (missing,)
            )
            self._ids.update((bytes(p), meter_id) for p, meter_id in await cur.fetchall())
        return np.fromiter(
            (self._ids[p] for p in pseudonyms), dtype=np.int32, count=len(pseudonyms)
        )


class Partitions:
    """Creates the daily partitions native partitioning needs, once per day and table.

    Partitions are created in their own short transaction, before the batch's, because
    attaching a partition locks the parent table; an advisory lock keeps two core processes
    from creating the same partition at once.
    """

    def __init__(self) -> None:
        """Start with no partitions known; the first batch of a day checks the catalog."""
        self._known: set[tuple[str, dt.date]] = set()

    async def ensure(self, conn: psycopg.AsyncConnection, days: dict[str, set[dt.date]]) -> None:
        """Create the partitions of ``days`` that do not exist yet."""
        missing = [(t, d) for t, ds in days.items() for d in ds if (t, d) not in self._known]
        for table, day in missing:
            name = f"{table}_p{day:%Y%m%d}"
            start, end = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
                await conn.execute(
                    psycopg.sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        psycopg.sql.Identifier(name),
                        psycopg.sql.Identifier(table),
                        psycopg.sql.Literal(f"{start} 00:00:00+00"),
                        psycopg.sql.Literal(f"{end} 00:00:00+00"),
                    )
                )
            self._known.add((table, day))


class BatchStore:
    """One database connection that writes batches; use ``async with``."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        *,
        storage: str,
        partitions: Partitions,
        meters: MeterDirectory,
    ) -> None:
        """Wrap an open autocommit connection (see ``connect``)."""
        self.conn = conn
        self.storage = storage
        self._partitions = partitions
        self._meters = meters
        self._staging_ready = False

    @classmethod
    async def connect(
        cls, dsn: str, *, partitions: Partitions, meters: MeterDirectory
    ) -> BatchStore:
        """Open a connection and read which storage the schema uses.

        Raises:
            StorageUnavailable: the database cannot be reached or has no schema yet.

        """
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"cannot connect to the database: {exc}") from exc
        storage = await _recorded_storage(conn)
        if storage is None:
            await conn.close()
            raise StorageUnavailable("database has no schema yet; run `core-ingest migrate`")
        return cls(conn, storage=storage, partitions=partitions, meters=meters)

    async def close(self) -> None:
        """Close the connection."""
        await self.conn.close()

    @property
    def broken(self) -> bool:
        """Whether the connection is gone and a new store is needed."""
        return self.conn.closed or self.conn.broken

    async def agent_key(self, agent_id: str) -> AgentKey | None:
        """The enrolled agent ``agent_id``, or None when the agent is unknown."""
        cur = await self.conn.execute(
            "SELECT public_key, revoked_at IS NOT NULL, substation, region FROM agents"
            " WHERE agent_id = %s",
            (agent_id,),
        )
        row = await cur.fetchone()
        return AgentKey(*row) if row else None

    async def write(self, opened: OpenedBatch, *, agent: AgentKey, received_at: dt.datetime) -> int:
        """Commit the batch once; return ACK_STATUS_ACCEPTED or ACK_STATUS_DUPLICATE.

        A transaction that loses a deadlock against another core's is tried again.

        Raises:
            EnvelopeError: SEQUENCE_CONFLICT or MALFORMED; nothing was written.

        """
        columns = ReadingColumns.of(opened.payload.meter_readings)
        check_ranges(opened, columns)
        if self.storage == NATIVE:
            await self._partitions.ensure(self.conn, batch_days(opened, columns))
        meter_ids = await self._meters.ids(
            self.conn, list(opened.payload.meter_readings.meters), opened.header.agent_id, agent
        )
        batch = _PendingBatch(opened, columns, meter_ids, agent, received_at)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return await self._commit(batch)
            except psycopg.errors.TransactionRollback as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.info("retrying batch %s after %s", opened.header.sequence, exc.sqlstate)
        raise AssertionError  # unreachable: the last attempt returns or raises

    async def _commit(self, batch: _PendingBatch) -> int:
        async with self.conn.transaction():
            batch_id = await self._insert_ledger_row(batch)
            if batch_id is None:
                return await self._already_stored(batch.opened)
            stored = await self._copy_meter_readings(batch, batch_id)
            if len(stored) != len(batch.columns):
                await self.conn.execute(
                    "UPDATE batches SET readings_stored = %s WHERE batch_id = %s",
                    (len(stored), batch_id),
                )
            await self._copy_telemetry(batch.opened)
            await self._apply_rotations(batch.opened)
            await self._add_to_rollups(stored, batch.agent)
        return pb.ACK_STATUS_ACCEPTED

    async def _insert_ledger_row(self, batch: _PendingBatch) -> int | None:
        """The new ledger row's batch_id, or None when (agent, sequence) is already there."""
        header, payload, flags = (
            batch.opened.header,
            batch.opened.payload,
            batch.columns.quality_flags,
        )
        window = batch.columns.poll_window()
        cur = await self.conn.execute(
            "INSERT INTO batches (agent_id, sequence, payload_sha256, header_sha256,"
            " schema_version, pseudonym_key_id, software_version, register_map_version,"
            " devices, created_at, received_at, meter_readings, telemetry_points, core_version,"
            " validation_ruleset, substation, region, poll_start, poll_end, readings_stored,"
            " quality_counts, suspect_readings)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s)"
            " ON CONFLICT (agent_id, sequence) DO NOTHING RETURNING batch_id",
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
                dt.datetime.fromtimestamp(header.created_ms / 1000, UTC),
                batch.received_at,
                len(batch.columns),
                len(payload.transformer_telemetry.time_ms),
                __version__,
                header.validation_ruleset or None,
                batch.agent.substation,
                batch.agent.region,
                window[0] if window else None,
                window[1] if window else None,
                len(batch.columns),
                Jsonb(quality_counts(flags)),
                suspect_count(flags),
            ),
        )
        row = await cur.fetchone()
        return row[0] if row else None

    async def _already_stored(self, opened: OpenedBatch) -> int:
        cur = await self.conn.execute(
            "SELECT payload_sha256, header_sha256 FROM batches"
            " WHERE agent_id = %s AND sequence = %s",
            (opened.header.agent_id, opened.header.sequence),
        )
        row = await cur.fetchone()
        # Rows stored before the header digest existed (schema version 1) compare the payload.
        if (
            row is not None
            and bytes(row[0]) == opened.payload_sha256
            and (row[1] is None or bytes(row[1]) == opened.header_sha256)
        ):
            return pb.ACK_STATUS_DUPLICATE
        raise EnvelopeError(
            pb.REJECT_REASON_SEQUENCE_CONFLICT,
            f"batch {opened.header.agent_id}#{opened.header.sequence} was stored before "
            "with different content",
        )

    async def _apply_rotations(self, opened: OpenedBatch) -> None:
        """Record old -> new pseudonyms; earlier mappings to an old one now point to the new.

        Stored readings keep the pseudonym they arrived with (lineage); the
        ``meter_readings_continuous`` view resolves every one to the meter's current pseudonym.
        """
        for rotation in opened.payload.rotations:
            old, new = list(rotation.old_meters), list(rotation.new_meters)
            await self.conn.execute(
                "UPDATE pseudonym_map p SET new_meter = m.new FROM unnest(%s::bytea[], %s::bytea[])"
                " AS m(old, new) WHERE p.new_meter = m.old",
                (old, new),
            )
            await self.conn.execute(
                "INSERT INTO pseudonym_map SELECT m.old, m.new, %s, %s, %s, %s"
                " FROM unnest(%s::bytea[], %s::bytea[]) AS m(old, new)"
                " ON CONFLICT (old_meter) DO UPDATE SET new_meter = excluded.new_meter",
                (
                    rotation.old_key_id,
                    rotation.new_key_id,
                    opened.header.agent_id,
                    opened.header.sequence,
                    old,
                    new,
                ),
            )

    async def _copy_meter_readings(self, batch: _PendingBatch, batch_id: int) -> ReadingColumns:
        """COPY the readings; return those newly stored.

        The normal path is one binary COPY straight into the table, inside a savepoint. When
        the unique (meter_id, interval_end) index refuses it, some readings were stored
        before (a backfill re-read, a batch re-sealed after a crash): the same rows go to a
        staging table and only the new ones are inserted. A stored reading whose new copy
        carries another value is kept in reading_quarantine, never silently replaced.
        """
        if not len(batch.columns):
            return batch.columns
        rows = copy_buffer(batch.columns, batch.meter_ids, batch_id)
        try:
            async with self.conn.transaction():
                await self._copy(METER_COPY, rows)
        except psycopg.errors.UniqueViolation:
            return await self._insert_new_readings(batch, rows, batch_id)
        return batch.columns

    async def _copy(self, statement: str, rows: bytes) -> None:
        async with self.conn.cursor() as cur, cur.copy(statement) as copy:
            await copy.write(rows)

    async def _insert_new_readings(
        self, batch: _PendingBatch, rows: bytes, batch_id: int
    ) -> ReadingColumns:
        if not self._staging_ready:
            await self.conn.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_readings"
                " (LIKE meter_readings) ON COMMIT DELETE ROWS"
            )
            self._staging_ready = True
        await self.conn.execute("TRUNCATE incoming_readings")
        await self._copy(
            f"COPY incoming_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)", rows
        )
        cur = await self.conn.execute(
            f"INSERT INTO meter_readings ({COPY_COLUMNS}) SELECT {COPY_COLUMNS}"  # noqa: S608 - constants
            " FROM incoming_readings ORDER BY meter_id, interval_end"
            " ON CONFLICT (meter_id, interval_end) DO NOTHING"
            " RETURNING meter_id, extract(epoch FROM interval_end)::bigint"
        )
        inserted = set(await cur.fetchall())
        await self.conn.execute(QUARANTINE_CONFLICTS, (batch_id,))

        ids = batch.meter_ids[batch.columns.meter_index].tolist()
        ends = batch.columns.interval_end.tolist()
        new = np.fromiter(
            ((meter, end) in inserted for meter, end in zip(ids, ends, strict=True)),
            dtype=np.bool_,
            count=len(ends),
        )
        log.info(
            "batch %s#%s: %d of %d readings were stored before",
            batch.opened.header.agent_id,
            batch.opened.header.sequence,
            len(ends) - int(new.sum()),
            len(ends),
        )
        return batch.columns.select(new)

    async def _add_to_rollups(self, stored: ReadingColumns, agent: AgentKey) -> None:
        """Add newly stored readings to their substation's hourly and daily rollups.

        Only readings stored by this transaction are added, so a re-sent batch (DUPLICATE)
        or a re-read reading adds nothing, and a late one lands in its own hour and day.
        """
        if not len(stored):
            return
        for table, column, period in ROLLUP_TABLES:
            delta = rollup_delta(
                stored.interval_end, stored.energy_wh, stored.quality_flags, period
            )
            await self.conn.execute(
                psycopg.sql.SQL(
                    "INSERT INTO {table} AS t (substation, region, {column}, energy_wh, received,"
                    " estimated, suspect)"
                    " SELECT %s, %s, d.* FROM unnest(%s::timestamptz[], %s::int8[], %s::int8[],"
                    " %s::int8[], %s::int8[]) AS d"
                    " ON CONFLICT (substation, {column}) DO UPDATE SET"
                    " energy_wh = t.energy_wh + excluded.energy_wh,"
                    " received = t.received + excluded.received,"
                    " estimated = t.estimated + excluded.estimated,"
                    " suspect = t.suspect + excluded.suspect"
                ).format(
                    table=psycopg.sql.Identifier(table), column=psycopg.sql.Identifier(column)
                ),
                (
                    agent.substation,
                    agent.region,
                    delta.bucket,
                    delta.energy_wh,
                    delta.received,
                    delta.estimated,
                    delta.suspect,
                ),
            )

    async def _copy_telemetry(self, opened: OpenedBatch) -> None:
        columns = opened.payload.transformer_telemetry
        if not columns.time_ms:
            return
        transformers = list(columns.transformers)
        metrics = list(columns.metrics)
        agent_id, sequence = opened.header.agent_id, opened.header.sequence
        async with self.conn.cursor() as cur, cur.copy(TELEMETRY_COPY) as copy:
            copy.set_types(TELEMETRY_TYPES)
            for transformer, metric, time_ms, value, flags in zip(
                columns.transformer_index,
                columns.metric_index,
                columns.time_ms,
                columns.value,
                columns.quality_flags,
                strict=True,
            ):
                await copy.write_row(
                    (
                        transformers[transformer],
                        dt.datetime.fromtimestamp(time_ms / 1000, UTC),
                        metrics[metric],
                        value,
                        flags,
                        agent_id,
                        sequence,
                    )
                )


@dataclass(frozen=True, slots=True)
class _PendingBatch:
    """A verified batch on its way into one transaction, with what the transaction needs."""

    opened: OpenedBatch
    columns: ReadingColumns
    meter_ids: npt.NDArray[np.int32]
    agent: AgentKey
    received_at: dt.datetime


async def _recorded_storage(conn: psycopg.AsyncConnection) -> str | None:
    """The schema's storage, or None when ``core-ingest migrate`` has not run."""
    try:
        cur = await conn.execute("SELECT storage FROM storage_settings")
    except psycopg.errors.UndefinedTable:
        return None
    row = await cur.fetchone()
    return row[0] if row else None
