"""The meters dimension: a pseudonym's meter_id, added at first sight, and pseudonym rotations."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from core_ingest.errors import StorageUnavailable
from core_ingest.store.batch import AgentKey
from proto import OpenedBatch


@dataclass(frozen=True, slots=True)
class FirstSeen:
    """What the dimension keeps of a meter from the batch that first carries it."""

    role: str  # customer, feeder_head or transformer: its device's role
    feeder: str  # the device it was read through: its low-voltage feeder's concentrator
    key_id: str  # the edge key its pseudonym was made with


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
        first_seen: Callable[[], Sequence[FirstSeen]],
        agent_id: str,
        agent: AgentKey,
    ) -> MeterIds:
        """The meter_id of each pseudonym, in order, adding unknown meters to the dimension.

        A meter is added with its role, feeder and key as first seen (``first_seen()``: one
        per pseudonym, in the same order; asked only when a meter is new, off the hot path),
        and its agent's substation and region. Call it
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
        seen = dict(zip(listed, first_seen(), strict=True)) if missing else {}
        added = (
            await _add_meters(conn, missing, [seen[p] for p in missing], agent_id, agent)
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
    seen: list[FirstSeen],
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
        "INSERT INTO meters (pseudonym, substation, region, first_agent_id, role, feeder, key_id)"
        " SELECT p, %s, %s, %s, r, f, k"
        " FROM unnest(%b::bytea[], %s::text[], %s::text[], %s::text[]) AS g(p, r, f, k)"
        " ON CONFLICT (pseudonym) DO NOTHING",
        (
            agent.substation,
            agent.region,
            agent_id,
            pseudonyms,
            [s.role for s in seen],
            [s.feeder for s in seen],
            [s.key_id for s in seen],
        ),
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


async def apply_rotations(
    conn: psycopg.AsyncConnection, opened: OpenedBatch, region_id: int
) -> None:
    """Record old -> new pseudonyms; earlier mappings to an old one now point to the new.

    Stored readings keep the pseudonym they arrived with (lineage); the
    ``meter_readings_continuous`` view resolves every one to the meter's current pseudonym.
    """
    for rotation in opened.payload.rotations:
        old, new = list(rotation.old_meters), list(rotation.new_meters)
        await conn.execute(
            "UPDATE pseudonym_map p SET new_meter = m.new FROM unnest(%s::bytea[], %s::bytea[])"
            " AS m(old, new) WHERE p.new_meter = m.old",
            (old, new),
        )
        await conn.execute(
            "INSERT INTO pseudonym_map SELECT m.old, m.new, %s, %s, %s, %s, %s"
            " FROM unnest(%s::bytea[], %s::bytea[]) AS m(old, new)"
            " ON CONFLICT (old_meter) DO UPDATE SET new_meter = excluded.new_meter",
            (
                rotation.old_key_id,
                rotation.new_key_id,
                opened.header.agent_id,
                opened.header.sequence,
                region_id,
                old,
                new,
            ),
        )
