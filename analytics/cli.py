"""``analytics``: batch jobs over the database the pipeline fills (a thin layer, JSON output).

Exit codes: 0 success, 1 a handled error (one line on stderr), 2 a usage error.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import psycopg

from analytics import health
from analytics.assets import AssetFileError, load_assets, read_assets

APPLICATION = "analytics"  # its application_name in PostgreSQL, named by the audit trail


def _print(data: Any) -> None:  # noqa: ANN401 - any JSON-serializable value
    click.echo(json.dumps(data, indent=2, default=str))


def dsn_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--dsn``, for every command that opens the database."""
    return click.option(
        "--dsn",
        envvar="ANALYTICS_DSN",
        required=True,
        help="libpq connection string, a member of operations (transformer telemetry and"
        " assets are technical data). Env: ANALYTICS_DSN.",
    )(command)


@contextmanager
def _database(dsn: str) -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(dsn, autocommit=True, application_name=APPLICATION)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}".strip()) from None
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise click.ClickException(f"the database refused: {exc}".strip()) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Analytics over the meterpipe database: transformer health."""


@main.group("assets")
def assets_group() -> None:
    """The transformer asset registry."""


@assets_group.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dsn_option
def assets_load(path: Path, dsn: str) -> None:
    """Load (upsert) the transformers of a CSV into transformer_assets.

    Columns: transformer_id, substation, region, rated_kva; optional cooling, insulation,
    hot_spot_limit_c, top_oil_limit_c, oil_time_constant_min, winding_time_constant_min.

    Example: substation-sim assets national-slice > assets.csv && analytics assets load assets.csv
    """
    try:
        rows = read_assets(path)
    except AssetFileError as exc:
        raise click.ClickException(str(exc)) from None
    with _database(dsn) as conn:
        _print({"loaded": load_assets(conn, rows)})


@main.group("health")
def health_group() -> None:
    """Transformer health by day: limits, ageing, dissolved gases."""


@health_group.command("run")
@click.option(
    "--day",
    type=click.DateTime(["%Y-%m-%d"]),
    required=True,
    help="The first UTC day to compute.",
)
@click.option(
    "--days", type=click.IntRange(1, 3_660), default=1, show_default=True, help="Days from it."
)
@dsn_option
def health_run(day: dt.datetime, days: int, dsn: str) -> None:
    """Compute and store transformer_health for each registered transformer and day.

    Run again, a day's rows are recomputed in place (their lineage says when and by whom).

    Example: analytics health run --day 2026-11-02 --days 7 --dsn postgresql://ops@db/meters
    """
    with _database(dsn) as conn:
        stored = [
            row
            for offset in range(days)
            for row in health.run_day(conn, day.date() + dt.timedelta(days=offset))
        ]
    _print(
        [
            {k: v for k, v in row.items() if k not in ("gases_ppm", "input_from", "input_to")}
            for row in stored
        ]
    )
