"""Daily partitions for native partitioning (TimescaleDB makes its chunks itself)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import psycopg

from core_ingest.store.reading_rows import ReadingColumns


def _utc_day(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).date()


def batch_days(columns: ReadingColumns, telemetry_ms: Sequence[int]) -> dict[str, set[dt.date]]:
    """UTC days each partitioned table needs a partition for, to hold this batch."""
    return {
        "meter_readings": {_utc_day(int(s)) for s in np.unique(columns.interval_end)},
        "transformer_telemetry": {_utc_day(ms / 1000) for ms in set(telemetry_ms)},
    }


class Partitions:
    """Creates the daily partitions native partitioning needs, once per day and table.

    Partitions are created in their own short transaction, before the batch's, because
    attaching a partition locks the parent table. ``ensure_daily_partition`` (migration 13)
    creates them with the schema owner's rights, so the core needs no DDL right, and takes an
    advisory lock so two core processes never create the same partition at once.
    """

    def __init__(self) -> None:
        """Start with no partitions known; the first batch of a day checks the catalog."""
        self._known: set[tuple[str, dt.date]] = set()

    async def ensure(self, conn: psycopg.AsyncConnection, days: dict[str, set[dt.date]]) -> None:
        """Create the partitions of ``days`` that do not exist yet."""
        missing = [(t, d) for t, ds in days.items() for d in ds if (t, d) not in self._known]
        for table, day in missing:
            async with conn.transaction():  # the function runs as the schema's owner
                await conn.execute("SELECT ensure_daily_partition(%s, %s)", (table, day))
            self._known.add((table, day))
