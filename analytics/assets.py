"""The transformer asset registry (``transformer_assets``), loaded from a CSV.

The asset system of record exports one row per transformer; ``substation-sim assets`` writes
the same file for a simulated field. Loading upserts by ``transformer_id``: a transformer's
rating or limits change in place, and nothing is deleted (a transformer that left the file
keeps its history).
"""

from __future__ import annotations

import csv
from pathlib import Path

import psycopg

from analytics.upsert import upsert

REQUIRED = ("transformer_id", "substation", "region", "rated_kva")
OPTIONAL = (
    "cooling",
    "insulation",
    "hot_spot_limit_c",
    "top_oil_limit_c",
    "oil_time_constant_min",
    "winding_time_constant_min",
)


class AssetFileError(ValueError):
    """The asset file cannot be loaded; the message names the line and the column."""


def read_assets(path: Path) -> list[dict[str, str]]:
    """The file's rows, each with the required columns, empty optional ones left out.

    Raises:
        AssetFileError: a required column is missing, or a row lacks a value for one.

    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise AssetFileError(f"{path}: no column {', '.join(missing)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            empty = [c for c in REQUIRED if not (row.get(c) or "").strip()]
            if empty:
                raise AssetFileError(f"{path}:{line}: no value for {', '.join(empty)}")
            rows.append({k: v.strip() for k, v in row.items() if k in REQUIRED + OPTIONAL and v})
    return rows


def load_assets(conn: psycopg.Connection, rows: list[dict[str, str]]) -> int:
    """Upsert ``rows`` into the registry in one transaction; return how many.

    Raises:
        psycopg.Error: a value the table refuses (the database names the column).

    """
    with conn.transaction():
        for row in rows:
            upsert(conn, "transformer_assets", row, key=("transformer_id",))
    return len(rows)
