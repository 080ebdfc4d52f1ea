"""``core-ingest``: run the ingest service and manage its database and enrolled agents.

A thin layer: each command opens the database, calls the library and prints JSON. Library
errors become one-line messages (exit 1); invalid configuration exits 78.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import functools
import ipaddress
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import psycopg

from core_ingest import agents as agent_registry
from core_ingest.certificates import (
    AUTHORITY_DAYS,
    LEAF_DAYS,
    IpAddress,
    Issued,
    ServerTls,
    create_authority,
    issue_agent_certificate,
    issue_server_certificate,
    load_server_tls,
)
from core_ingest.config import CoreConfig, load_config
from core_ingest.doctor import HEADINGS, SILENT_MINUTES, diagnose
from core_ingest.errors import CertificateError, ConfigError, CoreError
from core_ingest.quality_watch import AlertRule, QualityAlert, check_suspect_share
from core_ingest.schema import MIGRATIONS, STORAGE_CHOICES, applied_versions, migrate
from core_ingest.server import APPLICATION, serve
from core_ingest.status import database_status
from proto.diagnosis import as_json as diagnosis_json
from proto.diagnosis import iso, needs_action, render
from proto.observability import LogFormat, configure_logging, log_options

EXIT_CONFIG = 78


def _print(data: Any) -> None:  # noqa: ANN401 - any JSON-serializable value
    click.echo(json.dumps(data, indent=2, default=str))


def database_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--config`` and ``--dsn``, shared by every command that opens the database."""
    command = click.option(
        "--dsn",
        envvar="CORE_INGEST_DSN",
        help="PostgreSQL connection string; overrides database.dsn. Env: CORE_INGEST_DSN.",
    )(command)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="CORE_INGEST_CONFIG",
        help="Core configuration file (TOML). Env: CORE_INGEST_CONFIG.",
    )(command)


@contextlib.contextmanager
def _exit_on_config_error() -> Iterator[None]:
    """Invalid configuration: one line naming the key, exit 78."""
    try:
        yield
    except ConfigError as exc:
        click.echo(f"Error: invalid configuration: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _config(config_path: Path | None, **overrides: str | None) -> CoreConfig:
    with _exit_on_config_error():
        return load_config(config_path, **overrides)


def _server_tls(config: CoreConfig) -> ServerTls | None:
    """``[server.tls]``'s files, read and checked before serving (None: plaintext)."""
    if config.server.tls is None:
        return None
    with _exit_on_config_error():
        return load_server_tls(config.server.tls)


@contextlib.contextmanager
def _database(config: CoreConfig) -> Iterator[psycopg.Connection]:
    """An autocommit connection; connection and library errors become one-line messages."""
    try:
        with psycopg.connect(
            config.database.dsn,
            autocommit=True,
            connect_timeout=10,
            fallback_application_name=APPLICATION,
        ) as conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}".strip()) from None
    except CoreError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@log_options("CORE_INGEST_LOG_FORMAT")
def main(*, verbose: bool, log_format: LogFormat) -> None:
    """Central ingest: verifies signed batches from edge agents and stores them exactly once."""
    configure_logging("core-ingest", verbose=verbose, log_format=log_format)


@main.command("serve")
@database_options
@click.option("--listen", envvar="CORE_INGEST_LISTEN", help="host:port to serve gRPC on.")
def serve_command(config_path: Path | None, dsn: str | None, listen: str | None) -> None:
    """Serve the gRPC ingest service until interrupted (schema must be migrated).

    With [server.tls] in the configuration it speaks mutual TLS only; its files are checked
    first (exit 78 naming the key). Without it, plaintext: for loopback or inside a VPN.

    Example: core-ingest serve --dsn postgresql://meterpipe_core@db/meters --listen 0.0.0.0:50051
    """
    config = _config(config_path, dsn=dsn, listen=listen)
    tls = _server_tls(config)
    faulthandler.enable()  # a crash in a C extension still leaves a stack in the log
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_serve_until_stopped(config, tls))


async def _serve_until_stopped(config: CoreConfig, tls: ServerTls | None) -> None:
    """Serve until SIGINT or SIGTERM (systemd's stop): either stops it gracefully.

    Batches being written get the server's grace period and queued lineage events are
    flushed, instead of the process dying mid-transaction.
    """
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await serve(config, tls=tls)


@main.command("migrate")
@database_options
@click.option(
    "--storage",
    type=click.Choice(STORAGE_CHOICES),
    help="Storage for a new schema (default auto: TimescaleDB when preloaded).",
)
@click.option("--list", "list_only", is_flag=True, help="List applied and pending; change nothing.")
@click.option("--stop-before", type=int, help="Apply only migrations below this version.")
def migrate_command(
    config_path: Path | None,
    dsn: str | None,
    storage: str | None,
    *,
    list_only: bool,
    stop_before: int | None,
) -> None:
    """Create or upgrade the database schema; safe to run again.

    Example: core-ingest migrate --dsn postgresql://meterpipe_owner@db/meters --list
    """
    config = _config(config_path, dsn=dsn, storage=storage)
    with _database(config) as conn:
        if list_only:
            applied = applied_versions(conn)
            _print(
                [
                    {"version": m.version, "name": m.name, "applied_at": applied.get(m.version)}
                    for m in MIGRATIONS
                ]
            )
            return
        done = migrate(conn, storage=config.database.storage, stop_before=stop_before)
        _print({"applied": [m.name for m in done], **database_status(conn)})


@main.command("status")
@database_options
def status_command(config_path: Path | None, dsn: str | None) -> None:
    """Show server and TimescaleDB versions, storage in use, schema version and row counts.

    Example: core-ingest status --dsn postgresql://meterpipe_core@db/meters
    """
    with _database(_config(config_path, dsn=dsn)) as conn:
        _print(database_status(conn))


@main.command("doctor")
@database_options
@click.option(
    "--metrics",
    "metrics_targets",
    multiple=True,
    metavar="HOST:PORT",
    help="A running core's [metrics] listen address (repeat for each core); default: the config's.",
)
@click.option(
    "--silent-minutes",
    type=click.IntRange(1, 10_080),
    default=SILENT_MINUTES,
    show_default=True,
    help="An agent not heard from for this long is silent.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(
    config_path: Path | None,
    dsn: str | None,
    metrics_targets: tuple[str, ...],
    silent_minutes: int,
    *,
    as_json: bool,
) -> None:
    """Say what is wrong at the center and what to do; exit 1 if anything needs action.

    The database (reachable, versions, schema), each core's pool and OpenLineage backlog,
    silent agents and refused batches, latency, the suspect-share alert, quarantine and
    completeness. Connect as a member of operations.

    Example: core-ingest doctor --dsn postgresql://operator@db/meters --metrics core1:9464
    """
    config = _config(config_path, dsn=dsn)
    targets = list(metrics_targets) or ([config.metrics.listen] if config.metrics.listen else [])
    checked = time.time_ns() // 1_000_000
    findings = diagnose(
        config.database.dsn, metrics=targets, silent_minutes=silent_minutes, at_ms=checked
    )
    if as_json:
        _print(diagnosis_json({"metrics": targets}, checked, findings))
    else:
        cores = f"{len(targets)} core{'s' if len(targets) != 1 else ''}"
        title = f"core-ingest doctor: {iso(checked)}; metrics read from {cores}"
        click.echo(render(title, HEADINGS, findings))
    sys.exit(1 if needs_action(findings) else 0)


@main.command("quality-check")
@database_options
@click.option(
    "--window-seconds",
    type=click.FloatRange(1, 86_400),
    help="Look back this far instead of [quality] alert_window_seconds.",
)
def quality_check(config_path: Path | None, dsn: str | None, window_seconds: float | None) -> None:
    """Check the suspect-share alert rule now; print the alert raised, or null.

    Every serving core checks it each [quality] alert_check_seconds; this is the same check
    on demand (after a storm, from a monitoring job). One alert per breached window: while an
    alert is younger than the window, none is raised again.

    Example: core-ingest quality-check --dsn postgresql://meterpipe_core@db/meters
    """
    config = _config(config_path, dsn=dsn)
    rule = config.quality.rule
    if window_seconds is not None:
        rule = dataclasses.replace(rule, window_seconds=window_seconds)
    alert = asyncio.run(_check_once(config.database.dsn, rule))
    _print(dataclasses.asdict(alert) | {"share": alert.share} if alert else None)


async def _check_once(dsn: str, rule: AlertRule) -> QualityAlert | None:
    try:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, fallback_application_name=APPLICATION
        ) as conn:
            return await check_suspect_share(conn, rule, raised_by="core-ingest quality-check")
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}".strip()) from None


@main.group("agents")
def agents_group() -> None:
    """Enroll, list and revoke the edge agents allowed to send batches."""


@agents_group.command("add")
@database_options
@click.option("--agent-id", required=True, help="The agent's id, as in its [agent] id.")
@click.option(
    "--public-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The agent's public key (PEM), written by `edge-agent keygen` as KEY.pub.",
)
@click.option("--substation", help="The substation the agent serves (default: the agent id).")
@click.option(
    "--region",
    default=agent_registry.UNASSIGNED_REGION,
    show_default=True,
    help="The substation's region: the unit of rollups and per-region access (added if new).",
)
def agents_add(  # noqa: PLR0913, PLR0917 - click passes one parameter per option
    config_path: Path | None,
    dsn: str | None,
    agent_id: str,
    public_key_file: Path,
    substation: str | None,
    region: str,
) -> None:
    """Enroll an agent's public key (re-enrolling replaces its key and lifts a revocation).

    Example: core-ingest agents add --agent-id sub-north-001 --public-key-file agent.key.pub
    --substation north-001 --region North
    """
    with _database(_config(config_path, dsn=dsn)) as conn:
        key = agent_registry.public_key_from_pem(public_key_file.read_bytes())
        agent_registry.enroll(conn, agent_id, key, substation=substation, region=region)
        _print(
            {
                "enrolled": agent_id,
                "public_key": key.hex(),
                "substation": substation or agent_id,
                "region": region,
            }
        )


@agents_group.command("list")
@database_options
def agents_list(config_path: Path | None, dsn: str | None) -> None:
    """List enrolled agents: their public keys (hex), places and revocation times.

    Example: core-ingest agents list --dsn postgresql://operator@db/meters
    """
    with _database(_config(config_path, dsn=dsn)) as conn:
        _print(
            [
                {
                    "agent_id": a.agent_id,
                    "public_key": a.public_key_hex,
                    "enrolled_at": a.enrolled_at,
                    "revoked_at": a.revoked_at,
                    "substation": a.substation,
                    "region": a.region,
                }
                for a in agent_registry.list_agents(conn)
            ]
        )


@agents_group.command("revoke")
@database_options
@click.option("--agent-id", required=True, help="The agent to refuse from now on.")
def agents_revoke(config_path: Path | None, dsn: str | None, agent_id: str) -> None:
    """Revoke an agent: its later batches are refused with REVOKED_AGENT.

    Example: core-ingest agents revoke --agent-id sub-north-001
    """
    with _database(_config(config_path, dsn=dsn)) as conn:
        agent_registry.revoke(conn, agent_id)
        _print({"revoked": agent_id})


@main.group("ca")
def ca_group() -> None:
    """Issue the certificates for mutual TLS between agents and the core (a private CA)."""


def ca_options(*, days: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--dir``, ``--days`` and ``--force``, shared by every ``ca`` command."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--force", is_flag=True, help="Replace existing files (the old ones are lost)."
        )(command)
        command = click.option(
            "--days",
            type=click.IntRange(1, 36_500),
            default=days,
            show_default=True,
            help="Days the certificate is valid.",
        )(command)
        return click.option(
            "--dir",
            "folder",
            type=click.Path(file_okay=False, path_type=Path),
            required=True,
            help="The authority's folder: ca.crt, ca.key and the issued files.",
        )(command)

    return decorate


def _ip_addresses(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> list[IpAddress]:
    try:
        return [ipaddress.ip_address(value) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _issued(issue: Callable[[], Issued]) -> None:
    """Run one issuing call and print what it wrote; its errors become one-line messages."""
    try:
        issued = issue()
    except CertificateError as exc:
        raise click.ClickException(str(exc)) from None
    _print(dataclasses.asdict(issued))


@ca_group.command("init")
@ca_options(days=AUTHORITY_DAYS)
def ca_init(folder: Path, days: int, *, force: bool) -> None:
    """Create the certificate authority (ca.crt, and ca.key with mode 0600) in a new folder.

    Every agent and the core trust ca.crt; ca.key is needed only to issue, keep it offline.

    Example: core-ingest ca init --dir /srv/meterpipe-ca
    """
    _issued(functools.partial(create_authority, folder, days=days, force=force))


@ca_group.command("issue-server")
@ca_options(days=LEAF_DAYS)
@click.option("--name", required=True, help="The core's DNS name agents connect to (the CN).")
@click.option(
    "--dns", "dns_names", multiple=True, help="Another DNS name for the core; repeatable."
)
@click.option(
    "--ip",
    "ip_addresses",
    multiple=True,
    callback=_ip_addresses,
    help="An IP address agents connect to; repeatable.",
)
def ca_issue_server(  # noqa: PLR0913 - one parameter per option
    folder: Path,
    days: int,
    name: str,
    dns_names: tuple[str, ...],
    ip_addresses: list[IpAddress],
    *,
    force: bool,
) -> None:
    """Issue the core's server certificate (server-NAME.crt, server-NAME.key) from the CA.

    Example: core-ingest ca issue-server --dir /srv/meterpipe-ca --name core.example --ip 10.0.0.7
    """
    _issued(
        functools.partial(
            issue_server_certificate,
            folder,
            name=name,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            days=days,
            force=force,
        )
    )


@ca_group.command("issue-agent")
@ca_options(days=LEAF_DAYS)
@click.option("--agent-id", required=True, help="The agent's id, as in its [agent] id (the CN).")
def ca_issue_agent(folder: Path, days: int, agent_id: str, *, force: bool) -> None:
    """Issue an agent's client certificate (agent-ID.crt, agent-ID.key) from the CA.

    The core refuses batches whose agent id differs from the certificate's common name.

    Example: core-ingest ca issue-agent --dir /srv/meterpipe-ca --agent-id sub-north-0042
    """
    _issued(
        functools.partial(
            issue_agent_certificate, folder, agent_id=agent_id, days=days, force=force
        )
    )
