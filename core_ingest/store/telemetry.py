"""Transformer telemetry into ``transformer_telemetry``: the points within bounds, by COPY."""

from __future__ import annotations

import datetime as dt

import psycopg

from proto import OpenedBatch

TELEMETRY_COPY = (
    "COPY transformer_telemetry (transformer_id, time, metric, value, quality_flags, agent_id,"
    " batch_sequence, region_id) FROM STDIN (FORMAT BINARY)"
)
TELEMETRY_TYPES = ["text", "timestamptz", "text", "float8", "int4", "text", "int8", "int2"]


async def copy_telemetry(
    conn: psycopg.AsyncConnection, opened: OpenedBatch, points: list[int], region_id: int
) -> None:
    """The telemetry points at positions ``points`` (the others were refused), in ``region_id``."""
    columns = opened.payload.transformer_telemetry
    if not points:
        return
    transformers = list(columns.transformers)
    metrics = list(columns.metrics)
    agent_id, sequence = opened.header.agent_id, opened.header.sequence
    async with conn.cursor() as cur, cur.copy(TELEMETRY_COPY) as copy:
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
