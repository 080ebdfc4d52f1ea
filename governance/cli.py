"""``governance``: the data owner's and auditors' view of the central database."""

from __future__ import annotations

import dataclasses
import json

import click
import psycopg

from governance.catalog import list_datasets


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Data catalog (lineage, access, audit, exports and data-subject requests to follow)."""


@main.command()
@click.option(
    "--dsn",
    envvar="GOVERNANCE_DSN",
    required=True,
    help="PostgreSQL connection string. Env: GOVERNANCE_DSN.",
)
def catalog(dsn: str) -> None:
    """List every table and view with its description, owner, class and estimated rows.

    Example: governance catalog --dsn postgresql://steward@db/meters
    """
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            datasets = list_datasets(conn)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}".strip()) from None
    click.echo(json.dumps([dataclasses.asdict(d) for d in datasets], indent=2))
