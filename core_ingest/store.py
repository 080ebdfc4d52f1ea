"""Write verified batches to PostgreSQL exactly once: ledger row and readings in one transaction.

The ledger's primary key (agent_id, sequence) is the exactly-once guard. The ledger row is
inserted first with ON CONFLICT DO NOTHING; if it already exists the batch was committed before
(by this or another core process: a concurrent insert waits on the key until the other
transaction ends), nothing is written, and the answer is DUPLICATE when the payload hash matches
or SEQUENCE_CONFLICT when it does not. Readings go in with binary COPY.

Binary COPY applies no casts: every column's type is pinned with ``set_types`` below. Values
outside ``proto.limits`` never reach it: ``core_ingest.bounds`` sets them apart first, and they
are kept raw in ``refused_values`` in the batch's transaction, so the good ones still go in.
Every connection of the core's pool runs with ``synchronous_commit`` on
(``core_ingest.service.connection_pool``): an ACCEPTED answer means the batch is on disk,
whatever the server's default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

from core_ingest import __version__
from core_ingest.bounds import RefusedValue, split_readings, split_telemetry
from core_ingest.errors import StorageUnavailable
from core_ingest.lineage_events import CommittedBatch
from core_ingest.migrations import NATIVE
from core_ingest.reading_rows import (
    COPY_COLUMNS,
    ReadingColumns,
    copy_buffer,
    device_roles,
    meter_roles,
    quality_counts,
    rollup_delta,
    suspect_count,
)
from proto import EnvelopeError, OpenedBatch, limits, pb
from proto.quality import QualityFlag

log = logging.getLogger(__name__)

UTC = dt.UTC
LATEST_CREATED_S = 7_258_118_400  # 2200-01-01: any later time is a broken batch
METER_COPY = f"COPY meter_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
TELEMETRY_COPY = (
    "COPY transformer_telemetry (transformer_id, time, metric, value, quality_flags, agent_id,"
    " batch_sequence) FROM STDIN (FORMAT BINARY)"
)
TELEMETRY_TYPES = ["text", "timestamptz", "text", "float8", "int4", "text", "int8"]
STAGED_COLUMNS = ", ".join(f"i.{name}" for name in COPY_COLUMNS.split(", "))
ESTIMATED = int(QualityFlag.ESTIMATED)
# Staged real readings already stored by an earlier batch with another value: kept, not
# applied. A staged estimate never conflicts: what is stored (read or estimated) stands.
QUARANTINE_CONFLICTS = (
    f"INSERT INTO reading_quarantine ({COPY_COLUMNS}, reason)"  # noqa: S608 - constants only
    f" SELECT {STAGED_COLUMNS}, 'conflicts-with-stored'"
    " FROM incoming_readings i JOIN meter_readings r USING (meter_id, interval_end)"
    f" WHERE r.batch_id <> %s AND i.quality_flags & {ESTIMATED} = 0"
    " AND (r.energy_wh, r.register_wh) IS DISTINCT FROM (i.energy_wh, i.register_wh)"
)
# A staged real reading replaces a stored estimate of its meter and interval, and the
# correction is recorded. The estimate is re-checked under the row lock (another core may
# have replaced it meanwhile: then this one replaces nothing and records nothing).
REPLACE_ESTIMATES = (
    "WITH replaced AS ("  # noqa: S608 - constants only
    " UPDATE meter_readings r SET energy_wh = i.energy_wh, register_wh = i.register_wh,"
    " quality_flags = i.quality_flags, poll_time = i.poll_time, batch_id = i.batch_id,"
    " device_no = i.device_no, clock_offset_s = i.clock_offset_s"
    " FROM incoming_readings i JOIN meter_readings o USING (meter_id, interval_end)"
    " WHERE r.meter_id = i.meter_id AND r.interval_end = i.interval_end"
    f" AND r.quality_flags & {ESTIMATED} <> 0 AND i.quality_flags & {ESTIMATED} = 0"
    " RETURNING r.meter_id, r.interval_end, o.energy_wh AS old_energy,"
    " o.register_wh AS old_register, o.quality_flags AS old_flags, o.batch_id AS old_batch,"
    " r.energy_wh, r.quality_flags, r.batch_id)"
    " , recorded AS (INSERT INTO reading_corrections (meter_id, interval_end,"
    " estimated_energy_wh, estimated_register_wh, estimated_quality_flags, estimated_batch_id,"
    " energy_wh, quality_flags, batch_id)"
    " SELECT meter_id, interval_end, old_energy, old_register, old_flags, old_batch,"
    " energy_wh, quality_flags, batch_id FROM replaced)"
    " SELECT extract(epoch FROM r.interval_end)::bigint, r.old_energy, r.old_flags, r.energy_wh,"
    " r.quality_flags, (m.role = 'customer')::int FROM replaced r JOIN meters m USING (meter_id)"
)
# The batches whose estimates were replaced no longer hold them.
UNCOUNT_REPLACED = (
    "UPDATE batches b SET readings_stored = b.readings_stored - c.n"
    " FROM (SELECT estimated_batch_id, count(*) AS n FROM reading_corrections"
    " WHERE batch_id = %s GROUP BY 1) c WHERE b.batch_id = c.estimated_batch_id"
)
# A transaction that lost a deadlock or serialization race is tried again this often.
WRITE_ATTEMPTS = 3
ROLLUP_TABLES = (("substation_hourly", "hour", 3600), ("substation_daily", "day", 86_400))


def _rollup_upsert(table: str, column: str) -> psycopg.sql.Composed:
    """Add per-bucket sums (arrays named after the table) to one rollup table."""
    return psycopg.sql.SQL(
        "INSERT INTO {table} AS t (substation, region, {column}, energy_wh, received, estimated,"
        " suspect) SELECT %(substation)s, %(region)s, to_timestamp(d.bucket), d.energy_wh,"
        " d.received, d.estimated, d.suspect FROM unnest({bucket}::int8[], {energy}::int8[],"
        " {received}::int8[], {estimated}::int8[], {suspect}::int8[])"
        " AS d(bucket, energy_wh, received, estimated, suspect)"
        " ON CONFLICT (substation, {column}) DO UPDATE SET"
        " energy_wh = t.energy_wh + excluded.energy_wh,"
        " received = t.received + excluded.received,"
        " estimated = t.estimated + excluded.estimated,"
        " suspect = t.suspect + excluded.suspect"
    ).format(
        table=psycopg.sql.Identifier(table),
        column=psycopg.sql.Identifier(column),
        **{
            name: psycopg.sql.Placeholder(f"{table}_{name}")
            for name in ("bucket", "energy", "received", "estimated", "suspect")
        },
    )


# Both rollups in one statement: one round trip per batch.
ADD_TO_ROLLUPS = psycopg.sql.SQL("WITH hourly AS ({}) {}").format(
    *(_rollup_upsert(table, column) for table, column, _period in ROLLUP_TABLES)
)


@dataclass(frozen=True, slots=True)
class AgentKey:
    """An enrolled agent: its raw public key, whether it is revoked, and where it stands."""

    public_key: bytes
    revoked: bool
    substation: str
    region: str


def _utc_day(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, UTC).date()


def batch_days(columns: ReadingColumns, telemetry_ms: Sequence[int]) -> dict[str, set[dt.date]]:
    """UTC days each partitioned table needs a partition for, to hold this batch."""
    return {
        "meter_readings": {_utc_day(int(s)) for s in np.unique(columns.interval_end)},
        "transformer_telemetry": {_utc_day(ms / 1000) for ms in set(telemetry_ms)},
    }


def check_created(opened: OpenedBatch) -> None:
    """The batch's creation time must be a time the ledger can hold (2000 to 2200).

    It is the gateway's clock, metadata of the batch: a gateway clock days ahead must not get
    every batch refused for good, since the readings carry the devices' own times.
    """
    created_s = opened.header.created_ms / 1000
    if not limits.EARLIEST_INTERVAL_END_S <= created_s <= LATEST_CREATED_S:
        raise EnvelopeError(
            pb.REJECT_REASON_MALFORMED,
            f"created_ms {opened.header.created_ms} is outside 2000-01-01 to 2200-01-01",
        )


class AgentDirectory:
    """Enrolled agents' keys and places, remembered for ``ttl`` seconds by this core process.

    Saves a query per batch. Safe because the ledger row is only inserted while the agent
    still holds the key and is unrevoked (see ``BatchStore``): a revocation or new key is not
    delayed by the cache, which only decides how a refusal is worded.
    """

    def __init__(self, ttl: float = 30.0) -> None:
        """Start empty."""
        self._ttl = ttl
        self._known: dict[str, tuple[float, AgentKey]] = {}

    async def get(
        self, conn: psycopg.AsyncConnection, agent_id: str, *, fresh: bool = False
    ) -> AgentKey | None:
        """The enrolled agent, from memory unless ``fresh`` or older than the ttl."""
        now = time.monotonic()
        remembered = self._known.get(agent_id)
        if remembered and not fresh and now - remembered[0] < self._ttl:
            return remembered[1]
        cur = await conn.execute(
            "SELECT public_key, revoked_at IS NOT NULL, substation, region FROM agents"
            " WHERE agent_id = %s",
            (agent_id,),
        )
        row = await cur.fetchone()
        if row is None:
            self._known.pop(agent_id, None)
            return None
        agent = AgentKey(bytes(row[0]), *row[1:])
        self._known[agent_id] = (now, agent)
        return agent


@dataclass(frozen=True, slots=True)
class MeterIds:
    """A batch's meter ids, by meter index, and what the directory learns once it commits."""

    ids: npt.NDArray[np.int32]
    customer: npt.NDArray[np.bool_]  # whether each meter's role is customer (consumption)
    digest: bytes
    added: list[tuple[bytes, tuple[int, bool]]]


class MeterDirectory:
    """Pseudonym -> meter_id from the meters dimension, remembered by this core process.

    A meter is added the first time a batch that carries it commits, with that agent's
    substation and region: the insert runs in the batch's transaction, so a refused batch adds
    none. An agent sends the same list of meters interval after interval, so whole lists are
    remembered by their digest and a known list costs one hash, not a lookup per meter. New
    meters are inserted sorted, so two cores adding the same ones lock them in the same order.
    Memory is bounded: past the capacities the caches start over. Meter ids are never
    renumbered, so a remembered id stays right.
    """

    def __init__(self, *, meters: int = 500_000, lists: int = 4_096) -> None:
        """Start empty; about 120 bytes per remembered meter, 4 per meter in a list."""
        self._ids: dict[bytes, tuple[int, bool]] = {}  # pseudonym -> (meter_id, customer)
        self._lists: dict[bytes, tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]] = {}
        self._meter_capacity = meters
        self._list_capacity = lists

    async def ids(
        self,
        conn: psycopg.AsyncConnection,
        pseudonyms: Sequence[bytes],
        roles: Callable[[], Sequence[str]],
        agent_id: str,
        agent: AgentKey,
    ) -> MeterIds:
        """The meter_id of each pseudonym, in order, adding unknown meters to the dimension.

        A meter is added with its role as first seen (``roles()``: one per pseudonym, in the
        same order; asked only when a meter is new, off the hot path). Call it
        inside the batch's transaction and ``remember`` the result after the commit: a
        rolled-back insert must not leave ids in memory that the dimension does not hold.
        """
        digest = hashlib.blake2b(b"".join(pseudonyms), digest_size=16).digest()
        known = self._lists.get(digest)
        if known is not None:
            return MeterIds(*known, digest, [])
        listed = list(pseudonyms)
        # Resolve into a local dict: another stream may clear the cache while this one waits.
        unique = set(listed)
        found = {p: self._ids[p] for p in unique if p in self._ids}
        missing = sorted(unique - found.keys())
        role_of = dict(zip(listed, roles(), strict=True)) if missing else {}
        added = (
            await _add_meters(conn, missing, [role_of[p] for p in missing], agent_id, agent)
            if missing
            else []
        )
        found.update(added)
        ids = np.fromiter((found[p][0] for p in listed), dtype=np.int32, count=len(listed))
        customer = np.fromiter((found[p][1] for p in listed), dtype=np.bool_, count=len(listed))
        return MeterIds(ids, customer, digest, added)

    def remember(self, resolved: MeterIds) -> None:
        """Keep a committed batch's meter ids for the next batches."""
        if resolved.added:
            if len(self._ids) + len(resolved.added) > self._meter_capacity:
                self._ids.clear()
            self._ids.update(resolved.added)
        if resolved.digest not in self._lists:
            if len(self._lists) >= self._list_capacity:
                self._lists.clear()
            self._lists[resolved.digest] = (resolved.ids, resolved.customer)


async def _add_meters(
    conn: psycopg.AsyncConnection,
    pseudonyms: list[bytes],
    roles: list[str],
    agent_id: str,
    agent: AgentKey,
) -> list[tuple[bytes, tuple[int, bool]]]:
    """Insert the meters not in the dimension yet; (pseudonym, (meter_id, customer)) of all.

    ``customer`` is the role the dimension holds (set when the meter was first seen), which
    decides whether its readings are consumption.

    Ids come back in the order asked (no pseudonym is sent back: decoding thousands of
    bytea values costs more than the lookup). A meter another core is adding meanwhile is
    waited for by the insert and found by the select, which sees what committed before it.
    """
    await conn.execute(
        "INSERT INTO meters (pseudonym, substation, region, first_agent_id, role)"
        " SELECT p, %s, %s, %s, r FROM unnest(%b::bytea[], %s::text[]) AS g(p, r)"
        " ON CONFLICT (pseudonym) DO NOTHING",
        (agent.substation, agent.region, agent_id, pseudonyms, roles),
    )
    cur = await conn.execute(
        "SELECT m.meter_id, m.role = 'customer' FROM unnest(%b::bytea[]) WITH ORDINALITY AS g(p, n)"
        " JOIN meters m ON m.pseudonym = g.p ORDER BY g.n",
        (pseudonyms,),
        binary=True,
    )
    ids = [(meter_id, customer) for meter_id, customer in await cur.fetchall()]
    if len(ids) != len(pseudonyms):
        raise StorageUnavailable(f"{len(pseudonyms) - len(ids)} meters vanished from the dimension")
    return list(zip(pseudonyms, ids, strict=True))


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
    """Writes batches through one borrowed autocommit connection."""

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

    async def write(
        self, opened: OpenedBatch, *, agent: AgentKey, received_at: dt.datetime
    ) -> WriteOutcome:
        """Commit the batch once: ACK_STATUS_ACCEPTED with its lineage, or ACK_STATUS_DUPLICATE.

        Values outside the bounds are set apart first and committed to ``refused_values``
        with the rest. A transaction that loses a deadlock against another core's is tried
        again.

        Raises:
            EnvelopeError: SEQUENCE_CONFLICT or MALFORMED; nothing was written.

        """
        now_s = received_at.timestamp()
        check_created(opened)
        readings = opened.payload.meter_readings
        columns = ReadingColumns.of(readings)
        within, refused = split_readings(columns, list(readings.meters), now_s=now_s)
        points, refused_points = split_telemetry(opened.payload.transformer_telemetry, now_s=now_s)
        if refused:
            columns = columns.select(within)
        telemetry = opened.payload.transformer_telemetry
        if self.storage == NATIVE:
            times = [telemetry.time_ms[i] for i in points]
            await self._partitions.ensure(self.conn, batch_days(columns, times))
        batch = _PendingBatch(
            opened,
            columns,
            device_roles(opened.payload),
            points,
            [*refused, *refused_points],
            agent,
            received_at,
            quality_counts(columns.quality_flags),
            columns.poll_window(),
        )
        staged, attempt = False, 1
        while True:
            try:
                return await self._commit(batch, staged=staged)
            except psycopg.errors.UniqueViolation:
                if staged:
                    raise
                staged = True  # some readings were stored before: only the new ones go in
            except psycopg.errors.TransactionRollback as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise
                attempt += 1
                staged = True  # inserted in key order this time, so the retry cannot deadlock
                log.info("retrying batch %s after %s", opened.header.sequence, exc.sqlstate)

    async def _commit(self, batch: _PendingBatch, *, staged: bool) -> WriteOutcome:
        async with self.conn.transaction():
            ledger = await self._insert_ledger_row(batch)
            if ledger is None:
                return WriteOutcome(await self._already_stored(batch.opened), None)
            batch_id, committed_at = ledger
            meters = await self._batch_meters(batch)
            corrected = NO_CORRECTIONS
            if staged:
                stored, corrected = await self._insert_new_readings(batch, meters.ids, batch_id)
            else:
                await self._copy(METER_COPY, copy_buffer(batch.columns, meters.ids, batch_id))
                stored = batch.columns
            await self._copy_telemetry(batch.opened, batch.points)
            await self._keep_refused(batch, batch_id)
            await self._apply_rotations(batch.opened)
            await self._add_to_rollups(stored, corrected, batch.agent, meters.customer)
        self._meters.remember(meters)
        return WriteOutcome(
            pb.ACK_STATUS_ACCEPTED,
            batch.committed(batch_id, committed_at, len(stored) + len(corrected.interval_end)),
            refused=len(batch.refused),
        )

    async def _batch_meters(self, batch: _PendingBatch) -> MeterIds:
        """Meter ids by the batch's meter index; only meters of stored readings are added.

        A meter whose every reading was refused gets no row in the dimension (it would count
        as an expected meter in the quality views); its index maps to 0, never copied.
        """
        readings = batch.opened.payload.meter_readings
        agent_id = batch.opened.header.agent_id

        def roles() -> list[str]:
            return meter_roles(batch.columns, len(readings.meters), batch.device_roles)

        if not batch.refused:
            return await self._meters.ids(self.conn, readings.meters, roles, agent_id, batch.agent)
        used = np.unique(batch.columns.meter_index)

        def used_roles() -> list[str]:
            every = roles()
            return [every[i] for i in used]

        subset = await self._meters.ids(
            self.conn,
            [readings.meters[i] for i in used],
            used_roles,
            agent_id,
            batch.agent,
        )
        ids = np.zeros(len(readings.meters), dtype=np.int32)
        ids[used] = subset.ids
        customer = np.zeros(len(readings.meters), dtype=np.bool_)
        customer[used] = subset.customer
        return MeterIds(ids, customer, subset.digest, subset.added)

    async def _keep_refused(self, batch: _PendingBatch, batch_id: int) -> None:
        """The values set apart by the bounds, raw, with their reasons, in this transaction."""
        refused = batch.refused
        if not refused:
            return
        await self.conn.execute(
            "INSERT INTO refused_values (batch_id, kind, position, reason, raw)"
            " SELECT %s, * FROM unnest(%s::text[], %s::int4[], %s::text[], %s::jsonb[])",
            (
                batch_id,
                [r.kind for r in refused],
                [r.position for r in refused],
                [r.reason for r in refused],
                [Jsonb(r.raw) for r in refused],
            ),
        )
        log.warning(
            "batch %s#%s: %d values refused, first: %s",
            batch.opened.header.agent_id,
            batch.opened.header.sequence,
            len(refused),
            refused[0].reason,
        )

    async def _insert_ledger_row(self, batch: _PendingBatch) -> tuple[int, dt.datetime] | None:
        """The new ledger row's batch_id and commit time, or None when there is none to insert.

        None means (agent, sequence) is already there, or the agent no longer holds the key
        the batch was verified with: the row is only inserted while the agent is enrolled with
        that key and unrevoked, so a cached key never outlives a revocation (a batch already
        being written when the revocation commits may still commit).
        """
        header, payload, flags = (
            batch.opened.header,
            batch.opened.payload,
            batch.columns.quality_flags,
        )
        cur = await self.conn.execute(
            "INSERT INTO batches (agent_id, sequence, payload_sha256, header_sha256,"
            " schema_version, pseudonym_key_id, software_version, register_map_version,"
            " devices, created_at, received_at, meter_readings, telemetry_points, core_version,"
            " validation_ruleset, substation, region, poll_start, poll_end, readings_stored,"
            " quality_counts, suspect_readings)"
            " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s FROM agents a WHERE a.agent_id = %s AND a.public_key = %s"
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
                dt.datetime.fromtimestamp(header.created_ms / 1000, UTC),
                batch.received_at,
                len(payload.meter_readings.interval_end),
                len(payload.transformer_telemetry.time_ms),
                __version__,
                header.validation_ruleset or None,
                batch.agent.substation,
                batch.agent.region,
                batch.poll_window[0] if batch.poll_window else None,
                batch.poll_window[1] if batch.poll_window else None,
                len(batch.columns),
                Jsonb(batch.quality),
                suspect_count(flags),
                header.agent_id,
                batch.agent.public_key,
            ),
        )
        row = await cur.fetchone()
        return (row[0], row[1]) if row else None

    async def _already_stored(self, opened: OpenedBatch) -> pb.AckStatus:
        cur = await self.conn.execute(
            "SELECT payload_sha256, header_sha256 FROM batches"
            " WHERE agent_id = %s AND sequence = %s",
            (opened.header.agent_id, opened.header.sequence),
        )
        row = await cur.fetchone()
        if row is None:
            raise EnvelopeError(
                pb.REJECT_REASON_REVOKED_AGENT,
                f"agent {opened.header.agent_id!r} was revoked or given a new key",
            )
        # Rows stored before the header digest existed (schema version 1) compare the payload.
        if bytes(row[0]) == opened.payload_sha256 and (
            row[1] is None or bytes(row[1]) == opened.header_sha256
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

    async def _copy(self, statement: str, rows: bytes) -> None:
        async with self.conn.cursor() as cur, cur.copy(statement) as copy:
            await copy.write(rows)

    async def _insert_new_readings(
        self, batch: _PendingBatch, meter_ids: npt.NDArray[np.int32], batch_id: int
    ) -> tuple[ReadingColumns, Corrections]:
        """Insert only the readings not stored yet; return them, and the estimates replaced.

        The normal path COPYs a batch straight into meter_readings. When the unique
        (meter_id, interval_end) index refuses that, some readings were stored before (a
        backfill re-read, a batch re-sealed after a crash, a real reading for an interval
        estimated before) and the transaction is run again through here: the rows go to a
        staging table. A real reading replaces a stored estimate, recorded in
        reading_corrections; the other new readings are inserted. A stored real reading
        whose new copy carries another value is kept in reading_quarantine, never silently
        replaced.
        """
        if not len(batch.columns):
            return batch.columns, NO_CORRECTIONS
        await self.conn.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_readings"
            " (LIKE meter_readings) ON COMMIT DELETE ROWS"
        )
        await self._copy(
            f"COPY incoming_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)",
            copy_buffer(batch.columns, meter_ids, batch_id),
        )
        ids = meter_ids[batch.columns.meter_index].tolist()
        ends = batch.columns.interval_end.tolist()
        cur = await self.conn.execute(REPLACE_ESTIMATES)
        corrected = Corrections.of(await cur.fetchall())
        if len(corrected.interval_end):
            await self.conn.execute(UNCOUNT_REPLACED, (batch_id,))
        cur = await self.conn.execute(
            f"INSERT INTO meter_readings ({COPY_COLUMNS}) SELECT {COPY_COLUMNS}"  # noqa: S608 - constants
            " FROM incoming_readings ORDER BY meter_id, interval_end"
            " ON CONFLICT (meter_id, interval_end) DO NOTHING"
            " RETURNING meter_id, extract(epoch FROM interval_end)::bigint"
        )
        inserted = set(await cur.fetchall())
        await self.conn.execute(QUARANTINE_CONFLICTS, (batch_id,))
        await self.conn.execute(
            "UPDATE batches SET readings_stored = %s WHERE batch_id = %s",
            (len(inserted) + len(corrected.interval_end), batch_id),
        )
        new = np.fromiter(
            ((meter, end) in inserted for meter, end in zip(ids, ends, strict=True)),
            dtype=np.bool_,
            count=len(ends),
        )
        log.info(
            "batch %s#%s: %d of %d readings were stored before, %d of them estimates replaced",
            batch.opened.header.agent_id,
            batch.opened.header.sequence,
            len(ends) - int(new.sum()),
            len(ends),
            len(corrected.interval_end),
        )
        return batch.columns.select(new), corrected

    async def _add_to_rollups(
        self,
        stored: ReadingColumns,
        corrected: Corrections,
        agent: AgentKey,
        customer: npt.NDArray[np.bool_],
    ) -> None:
        """Add newly stored customer readings to their substation's hourly and daily rollups.

        Only readings stored by this transaction are added, so a re-sent batch (DUPLICATE)
        or a re-read reading adds nothing, and a late one lands in its own hour and day. A
        replaced estimate is taken out as its real reading goes in: the energy moves by the
        difference, one reading moves from estimated to received. Only meters whose role in
        the dimension is customer (``customer``, by meter index) are consumption: feeder-head
        and transformer meters are compared with these sums in the losses view.
        """
        stored = stored.select(customer[stored.meter_index])
        corrected = corrected.customers()
        if not len(stored) and not len(corrected.interval_end):
            return
        ends = np.concatenate([stored.interval_end, corrected.interval_end, corrected.interval_end])
        energy = np.concatenate(
            [stored.energy_wh, corrected.energy_wh, corrected.estimated_energy_wh]
        )
        flags = np.concatenate([stored.quality_flags, corrected.flags, corrected.estimated_flags])
        sign = np.concatenate(
            [
                np.ones(len(stored) + len(corrected.interval_end), np.int64),
                -np.ones_like(corrected.interval_end),
            ]
        )
        params: dict[str, object] = {"substation": agent.substation, "region": agent.region}
        for table, _column, period in ROLLUP_TABLES:
            delta = rollup_delta(ends, energy, flags, period, sign)
            params |= {f"{table}_{name}": values for name, values in delta.columns().items()}
        await self.conn.execute(ADD_TO_ROLLUPS, params)

    async def _copy_telemetry(self, opened: OpenedBatch, points: list[int]) -> None:
        """The telemetry points at positions ``points`` (the others were refused)."""
        columns = opened.payload.transformer_telemetry
        if not points:
            return
        transformers = list(columns.transformers)
        metrics = list(columns.metrics)
        agent_id, sequence = opened.header.agent_id, opened.header.sequence
        async with self.conn.cursor() as cur, cur.copy(TELEMETRY_COPY) as copy:
            copy.set_types(TELEMETRY_TYPES)
            for i in points:
                await copy.write_row(
                    (
                        transformers[columns.transformer_index[i]],
                        dt.datetime.fromtimestamp(columns.time_ms[i] / 1000, UTC),
                        metrics[columns.metric_index[i]],
                        columns.value[i],
                        columns.quality_flags[i],
                        agent_id,
                        sequence,
                    )
                )


@dataclass(frozen=True, slots=True)
class Corrections:
    """Stored estimates a batch replaced with real readings: what each was and now is."""

    interval_end: npt.NDArray[np.int64]
    estimated_energy_wh: npt.NDArray[np.int64]
    estimated_flags: npt.NDArray[np.int64]
    energy_wh: npt.NDArray[np.int64]
    flags: npt.NDArray[np.int64]
    customer: npt.NDArray[np.int64]  # 1 for a customer meter's reading, else 0

    @classmethod
    def of(cls, rows: list[tuple[int, int, int, int, int, int]]) -> Corrections:
        """From ``REPLACE_ESTIMATES``' rows."""
        columns = np.array(rows, dtype=np.int64).reshape(-1, 6).T
        return cls(*columns)

    def customers(self) -> Corrections:
        """Only the corrections of customer meters' readings (what the rollups sum)."""
        keep = self.customer == 1
        return Corrections(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))


NO_CORRECTIONS = Corrections.of([])


@dataclass(frozen=True, slots=True)
class _PendingBatch:
    """A verified batch on its way into one transaction, with what the transaction needs."""

    opened: OpenedBatch
    columns: ReadingColumns  # the readings within bounds
    device_roles: list[int]  # MeterRole per device of the payload (customer when not sent)
    points: list[int]  # positions of the telemetry points within bounds
    refused: list[RefusedValue]
    agent: AgentKey
    received_at: dt.datetime
    quality: dict[str, int]
    poll_window: tuple[dt.datetime, dt.datetime] | None

    def committed(
        self, batch_id: int, committed_at: dt.datetime, readings_stored: int
    ) -> CommittedBatch:
        """The lineage of the batch as committed under ``batch_id``."""
        header, payload = self.opened.header, self.opened.payload
        return CommittedBatch(
            agent_id=header.agent_id,
            sequence=header.sequence,
            batch_id=batch_id,
            substation=self.agent.substation,
            region=self.agent.region,
            devices=tuple(payload.devices),
            poll_start=self.poll_window[0] if self.poll_window else None,
            poll_end=self.poll_window[1] if self.poll_window else None,
            created_at=dt.datetime.fromtimestamp(header.created_ms / 1000, UTC),
            received_at=self.received_at,
            committed_at=committed_at,
            software_version=header.software_version,
            register_map_version=header.register_map_version,
            validation_ruleset=header.validation_ruleset or None,
            pseudonym_key_id=header.pseudonym_key_id,
            core_version=__version__,
            meter_readings=len(payload.meter_readings.interval_end),
            readings_stored=readings_stored,
            telemetry_points=len(payload.transformer_telemetry.time_ms),
            quality_counts=self.quality,
        )


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The ack status of a written batch and, when it was committed now, its lineage."""

    status: pb.AckStatus
    committed: CommittedBatch | None
    refused: int = 0  # values set apart by the bounds, kept in refused_values


async def recorded_storage(conn: psycopg.AsyncConnection) -> str | None:
    """The schema's storage, or None when ``core-ingest migrate`` has not run."""
    try:
        cur = await conn.execute("SELECT storage FROM storage_settings")
    except psycopg.errors.UndefinedTable:
        return None
    row = await cur.fetchone()
    return row[0] if row else None
