"""Transformer telemetry into ``transformer_telemetry``: the points within bounds, once each.

A point is stored once per (transformer, time, metric, agent) (migration 20's unique index): the
fast path copies the batch's points; when the copy meets a point stored before (a message the
broker delivered again after the agent was killed before acknowledging it), the batch's
transaction runs again on the staged path, which inserts only the points not stored yet.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from proto import OpenedBatch

TELEMETRY_TYPES = ["text", "timestamptz", "text", "float8", "int4", "text", "int8", "int2"]


TELEMETRY_COLUMNS = (
    "transformer_id, time, metric, value, quality_flags, agent_id, batch_sequence, region_id"
)


async def copy_telemetry(
    conn: psycopg.AsyncConnection,
    opened: OpenedBatch,
    points: list[int],
    region_id: int,
    *,
    staged: bool = False,
) -> None:
    """The telemetry points at positions ``points`` (the others were refused), in ``region_id``.

    ``staged``: through a temporary table, skipping points stored before (and repeats within
    the batch); else by COPY straight into the table, which fails on any such point.
    """
    if not points:
        return
    if not staged:
        await _copy(conn, opened, points, region_id, f"transformer_telemetry ({TELEMETRY_COLUMNS})")
        return
    await conn.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_telemetry"
        " (LIKE transformer_telemetry) ON COMMIT DELETE ROWS"
    )
    await _copy(conn, opened, points, region_id, f"incoming_telemetry ({TELEMETRY_COLUMNS})")
    await conn.execute(
        f"INSERT INTO transformer_telemetry ({TELEMETRY_COLUMNS})"  # noqa: S608 - constants
        f" SELECT {TELEMETRY_COLUMNS} FROM incoming_telemetry ORDER BY transformer_id, time, metric"
        " ON CONFLICT (transformer_id, time, metric, agent_id) DO NOTHING"
    )


async def _copy(
    conn: psycopg.AsyncConnection,
    opened: OpenedBatch,
    points: list[int],
    region_id: int,
    target: str,
) -> None:
    columns = opened.payload.transformer_telemetry
    transformers = list(columns.transformers)
    metrics = list(columns.metrics)
    agent_id, sequence = opened.header.agent_id, opened.header.sequence
    statement = f"COPY {target} FROM STDIN (FORMAT BINARY)"
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(TELEMETRY_TYPES)
        for i in points:
            await copy.write_row(
                (
                    transformers[columns.transformer_index[i]],
                    dt.datetime.fromtimestamp(columns.time_ms[i] / 1000, dt.UTC),
                    metrics[columns.metric_index[i]],
                    columns.value[i],
                    columns.quality_flags[i],
                    agent_id,
                    sequence,
                    region_id,
                )
            )
