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

import psycopg

from core_ingest import __version__
from core_ingest.errors import StorageUnavailable
from core_ingest.migrations import NATIVE
from proto import EnvelopeError, OpenedBatch, pb

log = logging.getLogger(__name__)

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
# Times accepted, Unix seconds: 2000-01-01 to 2200-01-01. Anything else is a broken clock or
# a broken batch, and would not even convert to a timestamp past the year 9999.
EARLIEST_S = 946_684_800
LATEST_S = 7_258_118_400
UTC = dt.UTC
METER_COPY = (
    "COPY meter_readings (meter, interval_end, energy_wh, register_wh, quality_flags, poll_time,"
    " device, agent_id, batch_sequence) FROM STDIN (FORMAT BINARY)"
)
METER_TYPES = [
    "bytea",
    "timestamptz",
    "int8",
    "int8",
    "int4",
    "timestamptz",
    "text",
    "text",
    "int8",
]
TELEMETRY_COPY = (
    "COPY transformer_telemetry (transformer_id, time, metric, value, quality_flags, agent_id,"
    " batch_sequence) FROM STDIN (FORMAT BINARY)"
)
TELEMETRY_TYPES = ["text", "timestamptz", "text", "float8", "int4", "text", "int8"]


@dataclass(frozen=True, slots=True)
class AgentKey:
    """An enrolled agent's raw public key and whether it is revoked."""

    public_key: bytes
    revoked: bool


def _utc_day(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, UTC).date()


def batch_days(opened: OpenedBatch) -> dict[str, set[dt.date]]:
    """UTC days each partitioned table needs a partition for, to hold this batch."""
    return {
        "meter_readings": {_utc_day(s) for s in set(opened.payload.meter_readings.interval_end)},
        "transformer_telemetry": {
            _utc_day(ms / 1000) for ms in set(opened.payload.transformer_telemetry.time_ms)
        },
    }


def check_ranges(opened: OpenedBatch) -> None:
    """Refuse values the database columns cannot hold, naming the column."""
    readings = opened.payload.meter_readings
    telemetry = opened.payload.transformer_telemetry
    limits = (
        ("register_wh", readings.register_wh, 0, INT8_MAX),
        ("quality_flags", readings.quality_flags, 0, INT4_MAX),
        ("transformer quality_flags", telemetry.quality_flags, 0, INT4_MAX),
        ("created_ms", [opened.header.created_ms], EARLIEST_S * 1000, LATEST_S * 1000),
        ("interval_end", readings.interval_end, EARLIEST_S, LATEST_S),
        ("poll_time_ms", readings.poll_time_ms, EARLIEST_S * 1000, LATEST_S * 1000),
        ("telemetry time_ms", telemetry.time_ms, EARLIEST_S * 1000, LATEST_S * 1000),
    )
    for name, column, low, high in limits:
        if column and not low <= min(column) <= max(column) <= high:
            raise EnvelopeError(
                pb.REJECT_REASON_MALFORMED, f"a {name} value is outside {low}..{high}"
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
        self, conn: psycopg.AsyncConnection, *, storage: str, partitions: Partitions
    ) -> None:
        """Wrap an open autocommit connection (see ``connect``)."""
        self.conn = conn
        self.storage = storage
        self._partitions = partitions

    @classmethod
    async def connect(cls, dsn: str, *, partitions: Partitions) -> BatchStore:
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
        return cls(conn, storage=storage, partitions=partitions)

    async def close(self) -> None:
        """Close the connection."""
        await self.conn.close()

    @property
    def broken(self) -> bool:
        """Whether the connection is gone and a new store is needed."""
        return self.conn.closed or self.conn.broken

    async def agent_key(self, agent_id: str) -> AgentKey | None:
        """The enrolled key of ``agent_id``, or None when the agent is unknown."""
        cur = await self.conn.execute(
            "SELECT public_key, revoked_at IS NOT NULL FROM agents WHERE agent_id = %s",
            (agent_id,),
        )
        row = await cur.fetchone()
        return AgentKey(public_key=row[0], revoked=row[1]) if row else None

    async def write(self, opened: OpenedBatch, *, received_at: dt.datetime) -> int:
        """Commit the batch once; return ACK_STATUS_ACCEPTED or ACK_STATUS_DUPLICATE.

        Raises:
            EnvelopeError: SEQUENCE_CONFLICT or MALFORMED; nothing was written.

        """
        check_ranges(opened)
        if self.storage == NATIVE:
            await self._partitions.ensure(self.conn, batch_days(opened))
        header = opened.header
        payload = opened.payload
        async with self.conn.transaction():
            cur = await self.conn.execute(
                "INSERT INTO batches (agent_id, sequence, payload_sha256, header_sha256,"
                " schema_version, pseudonym_key_id, software_version, register_map_version,"
                " devices, created_at, received_at, meter_readings, telemetry_points, core_version,"
                " validation_ruleset)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (agent_id, sequence) DO NOTHING RETURNING 1",
                (
                    header.agent_id,
                    header.sequence,
                    opened.payload_sha256,
                    opened.header_sha256,
                    header.schema_version,
                    header.pseudonym_key_id,
                    header.software_version,
                    header.register_map_version,
                    list(payload.devices),
                    dt.datetime.fromtimestamp(header.created_ms / 1000, UTC),
                    received_at,
                    len(payload.meter_readings.interval_end),
                    len(payload.transformer_telemetry.time_ms),
                    __version__,
                    header.validation_ruleset or None,
                ),
            )
            if await cur.fetchone() is None:
                return await self._already_stored(opened)
            await self._copy_meter_readings(opened)
            await self._copy_telemetry(opened)
            await self._apply_rotations(opened)
        return pb.ACK_STATUS_ACCEPTED

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

    async def _copy_meter_readings(self, opened: OpenedBatch) -> None:
        columns = opened.payload.meter_readings
        if not columns.interval_end:
            return
        meters = list(columns.meters)
        devices = list(opened.payload.devices)
        agent_id, sequence = opened.header.agent_id, opened.header.sequence
        utc = dt.datetime.fromtimestamp
        async with self.conn.cursor() as cur, cur.copy(METER_COPY) as copy:
            copy.set_types(METER_TYPES)
            for row in zip(
                columns.meter_index,
                columns.interval_end,
                columns.energy_wh,
                columns.register_wh,
                columns.quality_flags,
                columns.poll_time_ms,
                columns.device_index,
                strict=True,
            ):
                meter, end, energy, register, flags, poll_ms, device = row
                await copy.write_row(
                    (
                        meters[meter],
                        utc(end, UTC),
                        energy,
                        register,
                        flags,
                        utc(poll_ms / 1000, UTC),
                        devices[device],
                        agent_id,
                        sequence,
                    )
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


async def _recorded_storage(conn: psycopg.AsyncConnection) -> str | None:
    """The schema's storage, or None when ``core-ingest migrate`` has not run."""
    try:
        cur = await conn.execute("SELECT storage FROM storage_settings")
    except psycopg.errors.UndefinedTable:
        return None
    row = await cur.fetchone()
    return row[0] if row else None
