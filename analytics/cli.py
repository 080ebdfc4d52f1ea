"""``analytics``: batch jobs over the database the pipeline fills (a thin layer, JSON output).

Exit codes: 0 success, 1 a handled error (one line on stderr), 2 a usage error.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg

from analytics import daily_report, health, load_forecasts
from analytics.assets import AssetFileError, load_assets, read_assets
from analytics.forecast import DEFAULT_MODEL, MODELS

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
    """Analytics over the meterpipe database: transformer health, load forecasts, reports."""


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


def day_range(option: str, help_text: str, *, default_days: int) -> Callable[..., Any]:
    """``--day``/``--from`` (the first UTC day, passed as ``first``) and ``--days``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--days",
            type=click.IntRange(1, 3_660),
            default=default_days,
            show_default=True,
            help="Days from it.",
        )(command)
        return click.option(
            option, "first", type=click.DateTime(["%Y-%m-%d"]), required=True, help=help_text
        )(command)

    return decorate


@health_group.command("run")
@day_range("--day", "The first UTC day to compute.", default_days=1)
@dsn_option
def health_run(first: dt.datetime, days: int, dsn: str) -> None:
    """Compute and store transformer_health for each registered transformer and day.

    Run again, a day's rows are recomputed in place (their lineage says when and by whom).

    Example: analytics health run --day 2026-11-02 --days 7 --dsn postgresql://ops@db/meters
    """
    with _database(dsn) as conn:
        stored = [
            row
            for offset in range(days)
            for row in health.run_day(conn, first.date() + dt.timedelta(days=offset))
        ]
    _print(
        [
            {k: v for k, v in row.items() if k not in ("gases_ppm", "input_from", "input_to")}
            for row in stored
        ]
    )


@main.group("forecast")
def forecast_group() -> None:
    """Day-ahead load forecasts per substation and region."""


day_option = click.option(
    "--day", type=click.DateTime(["%Y-%m-%d"]), required=True, help="The UTC day to forecast."
)


@forecast_group.command("predict")
@day_option
@dsn_option
def forecast_predict(day: dt.datetime, dsn: str) -> None:
    """Forecast a day, hour by hour with an 80 % band, for every substation and region.

    Each series with the model train chose for it (gradient boosting before any training).
    Stored in load_forecasts with the model, its version and the training window (a day
    forecast again replaces its rows). Needs three weeks of rollups before the day.

    Example: analytics forecast predict --day 2026-12-03 --dsn postgresql://ops@db/meters
    """
    with _database(dsn) as conn:
        try:
            stored = load_forecasts.predict(conn, day.date())
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    totals: dict[str, float] = {}
    for row in stored:
        totals[row["series"]] = totals.get(row["series"], 0.0) + row["point_kwh"]
    _print({"day": day.date().isoformat(), "kwh_by_series": totals, "rows": len(stored)})


Result = TypeVar("Result")


def _over_days(
    dsn: str,
    first: dt.datetime,
    days: int,
    job: Callable[[psycopg.Connection, list[dt.date]], Result],
) -> Result:
    """``job`` over ``days`` days from ``first``; too little history is a handled error."""
    wanted = [first.date() + dt.timedelta(days=i) for i in range(days)]
    with _database(dsn) as conn:
        try:
            return job(conn, wanted)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None


@forecast_group.command("train")
@day_range("--from", "The first day of the backtest that chooses.", default_days=14)
@dsn_option
def forecast_train(first: dt.datetime, days: int, dsn: str) -> None:
    """Choose each series' model: the candidate with the lowest MAPE over past days.

    Every candidate (gradient boosting, random forest) forecasts each day from everything
    before it; the choice, each candidate's MAPE and the history used are stored in
    forecast_models, and predict uses it from then on. Train again as history grows.

    Example: analytics forecast train --from 2026-11-16 --days 14 --dsn postgresql://ops@db/m
    """
    chosen = _over_days(dsn, first, days, load_forecasts.train)
    _print(
        {
            row["series"]: {
                "model": row["model"],
                "mape": {name: round(v, 5) for name, v in row["mape"].obj.items()},
            }
            for row in chosen
        }
    )


@forecast_group.command("backtest")
@day_range("--from", "The first day forecast.", default_days=14)
@click.option(
    "--model",
    type=click.Choice(sorted(MODELS)),
    default=DEFAULT_MODEL,
    show_default=True,
    help="The model backtested, with its own band (train chooses per series).",
)
@dsn_option
def forecast_backtest(first: dt.datetime, days: int, model: str, dsn: str) -> None:
    """Forecast past days from their own past; MAPE against seasonal naive and a random forest.

    Each day is forecast from everything before it (rolling origins); the 80 % band's coverage
    is the share of hours inside it. Nothing is stored.

    Example: analytics forecast backtest --from 2026-11-16 --days 14 --dsn postgresql://ops@db/m
    """
    found = _over_days(dsn, first, days, partial(load_forecasts.backtests, model=model))
    _print(
        {
            name: {
                "days": result.days,
                "mape": round(result.mape, 5),
                "mape_seasonal_naive": round(result.mape_seasonal_naive, 5),
                "mape_random_forest": round(result.mape_random_forest, 5),
                "lower_than_seasonal_naive": round(result.gain_over_naive, 3),
                "coverage_80": round(result.coverage, 3),
            }
            for name, result in found.items()
        }
    )


@main.group("report")
def report_group() -> None:
    """Reports for management and the regulator."""


@report_group.command("daily")
@click.option(
    "--date", "day", type=click.DateTime(["%Y-%m-%d"]), required=True, help="The UTC day."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for index.html and its PNG charts (created if need be).",
)
@dsn_option
def report_daily(day: dt.datetime, out: Path, dsn: str) -> None:
    """Write a day's report: consumption vs forecast, losses, quality, alerts, transformers, ingest.

    Reads the rollups, the analytics tables and the batch ledger (run health run and forecast
    predict first for those sections). A bar shows progress on a terminal.

    Example: analytics report daily --date 2026-11-02 --out reports/2026-11-02 --dsn ...
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with _database(dsn) as conn:
        try:
            written = daily_report.write(conn, day.date(), out)
        except OSError as exc:
            raise click.ClickException(f"cannot write the report into {out}: {exc}") from None
    _print({"day": day.date().isoformat(), "page": str(written[0]),
            "files": sorted(path.name for path in written)})  # fmt: skip
