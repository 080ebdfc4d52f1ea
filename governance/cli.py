"""``governance``: the data owner's, steward's and auditor's view of the central database."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core_ingest.schema.dictionary import digest, load_dictionary
from governance import access as access_module
from governance import audit, reads, render, subject_report
from governance import catalog as catalog_module
from governance import lineage as lineage_module
from governance import retention as retention_module
from governance import subject as subject_module
from governance import subject_request as subject_requests
from governance import versions as versions_module
from governance.catalog import CatalogMismatch
from governance.glossary import Glossary, load_glossary
from proto import key_files
from proto.lineage_names import DEFAULT_DATABASE_NAMESPACE

dsn_option = click.option(
    "--dsn",
    envvar="GOVERNANCE_DSN",
    required=True,
    help="PostgreSQL connection string. Env: GOVERNANCE_DSN.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
pgaudit_log_option = click.option(
    "--pgaudit-log",
    "logs",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PostgreSQL CSV logs holding pgaudit's lines (default: the server's, read over SQL).",
)


def period_options(days: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--from`` and ``--to`` (UTC, the end excluded); see ``period``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--to", "end", type=click.DateTime(), help="End, UTC, excluded (default now)."
        )(command)
        return click.option(
            "--from",
            "start",
            type=click.DateTime(),
            help=f"Start, UTC (default {days} days before the end).",
        )(command)

    return decorate


def period(
    start: dt.datetime | None, end: dt.datetime | None, days: int
) -> tuple[dt.datetime, dt.datetime]:
    """The period ``--from``/``--to`` name, as aware UTC times."""
    end_at = end.replace(tzinfo=dt.UTC) if end else dt.datetime.now(dt.UTC)
    start_at = start.replace(tzinfo=dt.UTC) if start else end_at - dt.timedelta(days=days)
    return start_at, end_at


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Data catalog and glossary (lineage, audit, access and exports to follow)."""


@contextlib.contextmanager
def connected(dsn: str) -> Iterator[psycopg.Connection]:
    """A connection, or a one-line error naming what failed instead of a traceback."""
    try:
        with psycopg.connect(
            dsn, connect_timeout=10, autocommit=True, fallback_application_name="governance"
        ) as conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}".strip()) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise click.ClickException(
            f"{str(exc).strip()}: this login's roles do not allow it (see docs/governance.md,"
            " Roles; `governance access show` lists them)"
        ) from None


@main.group()
def catalog() -> None:
    """What the database holds: every table, view and column, and the glossary's figures."""


@catalog.command()
@click.argument("name", required=False)
@dsn_option
@json_option
def show(name: str | None, dsn: str, *, as_json: bool) -> None:
    """List every table and view, or describe NAME in full with its columns.

    Row counts are the planner's estimates.

    Example: governance catalog show meter_readings --dsn postgresql://steward@db/meters
    """
    dictionary = load_dictionary()
    if name is not None and name not in dictionary.objects:
        close = ", ".join(sorted(n for n in dictionary.objects if name in n)) or "none"
        raise click.BadParameter(f"{name!r} is not in the catalog (names containing it: {close})")
    with connected(dsn) as conn:
        if name is None:
            datasets = catalog_module.list_datasets(conn, dictionary)
            _print(
                as_json, [dataclasses.asdict(d) for d in datasets], render.dataset_lines(datasets)
            )
        else:
            entry = catalog_module.describe(conn, dictionary, name)
            _print(as_json, dataclasses.asdict(entry), render.entry_lines(entry))


@catalog.command()
@click.argument("text")
@json_option
def search(text: str, *, as_json: bool) -> None:
    """Find TEXT in object and column names and descriptions, and in the glossary.

    No database needed: the data dictionary and the glossary ship with the release.

    Example: governance catalog search losses
    """
    glossary = load_glossary()
    hits = catalog_module.search(load_dictionary(), glossary, text)
    if as_json:
        click.echo(json.dumps([_hit_document(hit, glossary) for hit in hits], indent=2))
        return
    if not hits:
        click.echo(f"nothing matches {text!r}")
    for hit in hits:
        click.echo("\n".join(render.hit_lines(hit, glossary)))


@catalog.command()
@dsn_option
def check(dsn: str) -> None:
    """Compare the database with the data dictionary; exit 1 listing every difference.

    Objects and columns in the database and not described, and described ones the database
    lacks (tables and views; partitions and chunks belong to their table).

    Example: governance catalog check --dsn postgresql://steward@db/meters
    """
    dictionary = load_dictionary()
    with connected(dsn) as conn:
        found = catalog_module.check(conn, dictionary)
    if found:
        for line in found:
            click.echo(line)
        raise click.ClickException(str(CatalogMismatch(found)))
    columns = sum(len(o.columns) for o in dictionary.objects.values())
    click.echo(
        f"the dictionary describes the database exactly: {len(dictionary.objects)} objects, "
        f"{columns} columns"
    )


@catalog.command()
@dsn_option
def sync(dsn: str) -> None:
    """Write the dictionary's descriptions as COMMENT ON, for psql's descriptions and other tools.

    Refused while `check` finds differences. Needs the tables' owner (the migration role).

    Example: governance catalog sync --dsn postgresql://meterpipe_owner@db/meters
    """
    with connected(dsn) as conn:
        try:
            written = catalog_module.sync(conn, load_dictionary())  # audited by sync
        except CatalogMismatch as exc:
            for line in exc.differences:
                click.echo(line, err=True)
            raise click.ClickException(f"{exc}; run `governance catalog check`") from None
    click.echo(f"{written} comments written")


@catalog.command()
@dsn_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="JSON-lines file.")
@click.option("--url", help="An OpenLineage HTTP consumer, e.g. http://marquez:5000.")
@click.option(
    "--namespace",
    default=DEFAULT_DATABASE_NAMESPACE,
    show_default=True,
    help="The database's OpenLineage namespace, as the core's [openlineage] names it.",
)
def publish(dsn: str, out: Path | None, url: str | None, namespace: str) -> None:
    """Publish the catalog as OpenLineage dataset events (schema, documentation, ownership).

    One event per table and view, under the names the core's lineage events use, so a
    Marquez or DataHub user sees the catalog beside the lineage. Give --out or --url.

    Example: governance catalog publish --url http://marquez:5000 --dsn postgresql://db/meters
    """
    from openlineage.client.serde import Serde  # noqa: PLC0415 - publish only

    from governance.dataset_events import dataset_event  # noqa: PLC0415

    if (out is None) == (url is None):
        raise click.UsageError("give one of --out FILE or --url URL")
    dictionary = load_dictionary()
    now = dt.datetime.now(dt.UTC)
    with connected(dsn) as conn:
        events = [
            dataset_event(
                catalog_module.describe(conn, dictionary, name), namespace=namespace, at=now
            )
            for name in sorted(dictionary.objects)
        ]
    if out is not None:
        with out.open("a", encoding="utf-8") as file:
            file.writelines(Serde.to_json(event) + "\n" for event in events)
    else:
        _post(events, str(url))
    with connected(dsn) as conn:
        audit.append(
            conn,
            "catalog.publish",
            namespace,
            {"datasets": len(events), "to": str(out.resolve()) if out else url},
        )
    click.echo(f"{len(events)} dataset events published to {out or url}")


def _post(events: list[Any], url: str) -> None:
    """Send each event to an OpenLineage HTTP consumer; the first failure stops with its reason."""
    from openlineage.client import OpenLineageClient  # noqa: PLC0415 - publish only
    from openlineage.client.transport.http import HttpConfig, HttpTransport  # noqa: PLC0415

    # Two tries at most per event: a consumer that is down is reported in seconds, not minutes.
    retry = {"total": 2, "connect": 2, "read": 2, "backoff_factor": 0.3}
    config = HttpConfig.from_dict({"url": url, "timeout": 10, "retry": retry})
    client = OpenLineageClient(transport=HttpTransport(config))
    for event in events:
        try:
            client.emit(event)
        except Exception as exc:  # noqa: BLE001 - the library raises what its HTTP stack raises
            raise click.ClickException(f"{url} refused the catalog: {exc}") from None


def _print(as_json: bool, document: object, lines: list[str]) -> None:  # noqa: FBT001
    click.echo(json.dumps(document, indent=2, default=_json_value) if as_json else "\n".join(lines))


def _json_value(value: object) -> str:
    """Times as ISO 8601 (what JSON readers parse), anything else as its text."""
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


def _hit_document(hit: catalog_module.Hit, glossary: Glossary) -> dict[str, Any]:
    """A hit as JSON; a glossary term's hit carries the whole term."""
    document: dict[str, Any] = dataclasses.asdict(hit)
    if hit.kind == "term":
        document["term"] = msgspec.structs.asdict(glossary.terms[hit.name])
    return document


@main.group(name="audit")
def audit_group() -> None:
    """The audit trail: verify its chain, seal its head, report who did what."""


def _key_error(path: str, problem: str) -> click.ClickException:
    return click.ClickException(f"{path}: {problem}")


@audit_group.command(name="verify")
@dsn_option
@click.option(
    "--anchors",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Folder of heads signed by `audit seal`, kept away from the database.",
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The sealing key's public half (PEM, from `audit keygen`): only its heads count.",
)
@json_option
def verify_command(
    dsn: str, anchors: Path | None, public_key: Path | None, *, as_json: bool
) -> None:
    """Recompute the hash chain; exit 1 naming the first entry that does not hold.

    With --anchors, each sealed head must still be in the chain with its sealed hash, which
    catches a rewrite of the whole chain.

    Example: governance audit verify --anchors /srv/audit-heads --public-key seal.pub --dsn ...
    """
    if (anchors is None) != (public_key is None):
        raise click.UsageError("--anchors and --public-key go together")
    sealed = []
    if anchors is not None and public_key is not None:
        try:
            sealed = audit.read_anchors(anchors, _public_key(public_key))
        except audit.AuditError as exc:
            raise click.ClickException(str(exc)) from None
    with connected(dsn) as conn:
        found = audit.verify(conn, sealed)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(found), indent=2))
    elif found.intact:
        click.echo(
            f"audit trail intact: {found.entries:,} entries, {found.anchors} of"
            f" {len(sealed)} sealed heads matched"
        )
    if not found.intact:
        raise click.ClickException(str(found.problem))


def _public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise click.ClickException(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise click.ClickException(f"{path}: not an Ed25519 public key")
    return key


@audit_group.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (mode 0600); the public key goes to OUT.pub.",
)
def keygen(out: Path) -> None:
    """Create the Ed25519 key that seals the audit trail's head.

    Keep the private key off the database server: whoever holds it can sign a head.

    Example: governance audit keygen --out /etc/meterpipe/audit-seal.key
    """
    public_pem = key_files.generate_signing_key(out, _key_error)
    public = out.with_name(out.name + ".pub")
    public.write_bytes(public_pem)
    click.echo(f"sealing key written to {out}, its public key to {public}")


@audit_group.command(name="seal")
@dsn_option
@click.option(
    "--key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The sealing key from `audit keygen`.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the signed head is written to; copy it off the database server.",
)
def seal_command(dsn: str, key: Path, out: Path) -> None:
    """Append an audit.seal entry, sign the head it makes, and export the signed head.

    Run it periodically (deploy/governance-audit-seal.timer: hourly): a rewrite of the chain
    before a sealed head is then found by `audit verify --anchors`.

    Example: governance audit seal --key audit-seal.key --out /srv/audit-heads --dsn ...
    """
    signing_key = key_files.load_signing_key(key, _key_error)
    with connected(dsn) as conn:
        anchor = audit.seal(conn, signing_key)
    path = audit.write_anchor(anchor, out)
    click.echo(f"entry {anchor.entry_id} sealed: {path}")


@audit_group.command(name="report")
@dsn_option
@period_options(days=7)
@pgaudit_log_option
@json_option
def report_command(
    dsn: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
    logs: tuple[Path, ...],
    *,
    as_json: bool,
) -> None:
    """Who did what: entries by actor and action, batches ingested, reads of personal data.

    Reads come from pgaudit (`audit enable-reads`): by login, application and table.

    Example: governance audit report --from 2026-11-01 --to 2026-12-01 --dsn ...
    """
    start_at, end_at = period(start, end, days=7)
    with connected(dsn) as conn:
        found = audit.report(conn, start_at, end_at)
        try:
            counted, note = reads.summarise(_logged_reads(conn, logs), start_at, end_at), None
        except reads.ReadsError as exc:
            counted, note = [], str(exc)
    document = dataclasses.asdict(found) | {
        "reads": [dataclasses.asdict(r) for r in counted],
        "reads_unavailable": note,
    }
    _print(as_json, document, render.report_lines(found, counted, note))


def _logged_reads(conn: psycopg.Connection, logs: tuple[Path, ...]) -> list[reads.Read]:
    """The reads pgaudit logged: in the files given, or else in the server's logs over SQL."""
    if not logs:
        return reads.server_reads(conn)
    return [r for log in logs for r in reads.parse_csvlog(log.read_text(encoding="utf-8"))]


@audit_group.command(name="enable-reads")
@click.option(
    "--loader",
    "loaders",
    multiple=True,
    help="A login that writes the data (the core's), left out; required on TimescaleDB.",
)
@dsn_option
def enable_reads(loaders: tuple[str, ...], dsn: str) -> None:
    """Have pgaudit log every read of personal data, for `audit report`.

    Grants SELECT on the dictionary's pseudonymized-personal objects to a role of its own and
    makes it the database's pgaudit.role. Needs a superuser and pgaudit loaded by the server.
    The core's login is left out (--loader): on TimescaleDB pgaudit's object auditing crashes
    the COPY it writes batches with (timescale/timescaledb#7667).

    Example: governance audit enable-reads --loader ingest --dsn postgresql://postgres@db/meters
    """
    with connected(dsn) as conn:
        try:
            objects = reads.enable(conn, load_dictionary(), list(loaders))
        except reads.ReadsError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"reads of {len(objects)} personal-data objects are logged: {', '.join(objects)}")


@main.group()
def retention() -> None:
    """Keep each dataset as long as the data dictionary says, and nothing longer."""


@retention.command(name="apply")
@dsn_option
@click.option("--dry-run", is_flag=True, help="Show what would go; remove nothing.")
@json_option
def apply_retention(dsn: str, *, dry_run: bool, as_json: bool) -> None:
    """Remove what is older than each dataset's retention, with an audit entry per dataset.

    Readings and telemetry lose whole chunks or daily partitions, other tables rows.

    Rollups have their own, longer retention: they outlive the readings.

    Example: governance retention apply --dry-run --dsn postgresql://meterpipe_owner@db/meters
    """
    dictionary = load_dictionary()
    with connected(dsn) as conn:
        removals, kept = retention_module.plan(conn, dictionary, dt.datetime.now(dt.UTC))
        if not dry_run:
            removals = retention_module.apply(conn, removals, dictionary)
    document = {
        "dry_run": dry_run,
        "removed" if not dry_run else "would_remove": [dataclasses.asdict(r) for r in removals],
        "kept": [dataclasses.asdict(k) for k in kept],
    }
    _print(as_json, document, render.retention_lines(removals, kept, dry_run=dry_run))


@main.command()
@dsn_option
@period_options(days=90)
@json_option
def versions(
    dsn: str, start: dt.datetime | None, end: dt.datetime | None, *, as_json: bool
) -> None:
    """The schema's migrations, the data dictionary's versions, and what produced the data.

    Producers: each combination of edge software, register map, VEE ruleset, pseudonym key and
    core software that committed batches in the period, with when and from how many agents.

    Example: governance versions --from 2026-01-01 --dsn postgresql://steward@db/meters
    """
    start_at, end_at = period(start, end, days=90)
    with connected(dsn) as conn:
        found = versions_module.history(conn, start_at, end_at)
    current = digest(load_dictionary())
    document = dataclasses.asdict(found) | {"release_dictionary": current}
    _print(as_json, document, render.versions_lines(found, current))


@catalog.command(name="diff")
@click.argument("old")
@click.argument("new", default=versions_module.CURRENT)
@click.option(
    "--dsn",
    envvar="GOVERNANCE_DSN",
    help="PostgreSQL connection string (for recorded versions). Env: GOVERNANCE_DSN.",
)
def diff_command(old: str, new: str, dsn: str | None) -> None:
    """What changed in the data dictionary from version OLD to NEW (default: this release's).

    Versions are digests from `governance versions` (a unique prefix is enough) or `current`.

    Example: governance catalog diff 3fa2c1d09b7e current --dsn postgresql://steward@db/meters
    """
    release = load_dictionary()
    try:
        if dsn is None:
            dictionaries = [versions_module.load_version(None, v, release) for v in (old, new)]
        else:
            with connected(dsn) as conn:
                dictionaries = [versions_module.load_version(conn, v, release) for v in (old, new)]
    except versions_module.VersionError as exc:
        raise click.ClickException(str(exc)) from None
    changes = versions_module.diff(*dictionaries)
    click.echo("\n".join(changes) if changes else "no differences")


@main.group()
def lineage() -> None:
    """Where a stored value came from, and what includes it."""


pseudonym_option = click.option(
    "--pseudonym", required=True, help="The meter's pseudonym (hex), any it has had."
)


def _traced(dsn: str, trace: Callable[[psycopg.Connection], Any]) -> Any:  # noqa: ANN401
    """``trace(conn)``, its LineageError a one-line error naming what was looked for."""
    with connected(dsn) as conn:
        try:
            return trace(conn)
        except lineage_module.LineageError as exc:
            raise click.ClickException(str(exc)) from None


@lineage.command(name="reading")
@pseudonym_option
@click.option(
    "--interval-end", required=True, type=click.DateTime(), help="The interval's end, UTC."
)
@dsn_option
@json_option
def lineage_reading(pseudonym: str, interval_end: dt.datetime, dsn: str, *, as_json: bool) -> None:
    """One reading's chain, from the device read to the rollups it is counted in.

    Every edge step with its versions, the signed batch, ingest and its audit entry, and the
    estimate it replaced, if any.

    Example: governance lineage reading --pseudonym 9f2c --interval-end 2026-11-02T10:15 --dsn DSN
    """
    at = interval_end.replace(tzinfo=dt.UTC)
    found = _traced(dsn, lambda conn: lineage_module.reading(conn, pseudonym, at))
    _print(as_json, dataclasses.asdict(found), render.reading_lines(found))


@lineage.command(name="batch")
@click.argument("agent")
@click.argument("sequence", type=int)
@dsn_option
@json_option
def lineage_batch(agent: str, sequence: int, dsn: str, *, as_json: bool) -> None:
    """A batch: its ledger row, digests, signing key, audit entry, versions, and what it stored.

    Example: governance lineage batch sub-north-0042 1532 --dsn postgresql://auditor@db/meters
    """
    found = _traced(
        dsn, lambda conn: lineage_module.batch_trace(conn, agent_id=agent, sequence=sequence)
    )
    _print(as_json, dataclasses.asdict(found), render.batch_lines(found))


@lineage.command(name="meter-day")
@pseudonym_option
@click.option("--day", required=True, type=click.DateTime(["%Y-%m-%d"]), help="The UTC day.")
@dsn_option
@json_option
def lineage_meter_day(pseudonym: str, day: dt.datetime, dsn: str, *, as_json: bool) -> None:
    """A meter's day: each interval read, estimated or missing, and the batch that stored it.

    Example: governance lineage meter-day --pseudonym 9f2c... --day 2026-11-02 --dsn ...
    """
    found = _traced(dsn, lambda conn: lineage_module.meter_day(conn, pseudonym, day.date()))
    _print(as_json, dataclasses.asdict(found), render.meter_day_lines(found))


@lineage.command(name="rollup")
@click.option("--substation", required=True, help="The substation.")
@click.option("--hour", type=click.DateTime(), help="An hour of substation_hourly, UTC.")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), help="A day of substation_daily.")
@dsn_option
@json_option
def lineage_rollup(
    substation: str, hour: dt.datetime | None, day: dt.datetime | None, dsn: str, *, as_json: bool
) -> None:
    """A rollup row, the batches whose readings it sums, and whether it still equals them.

    Example: governance lineage rollup --substation N-S01 --day 2026-11-02 --dsn ...
    """
    if (hour is None) == (day is None):
        raise click.UsageError("give one of --hour or --day")
    period, unit = (hour, "hour") if hour is not None else (day, "day")
    assert period is not None  # noqa: S101 - one of them, checked above
    found = _traced(dsn, lambda conn: lineage_module.rollup(conn, substation, period, unit))
    document = dataclasses.asdict(found) | {"consistent": found.consistent}
    _print(as_json, document, render.rollup_lines(found))


@lineage.command(name="export")
@period_options(days=1)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSON-lines file."
)
@click.option("--namespace", default="meterpipe", show_default=True, help="The jobs' namespace.")
@click.option(
    "--database-namespace",
    default=DEFAULT_DATABASE_NAMESPACE,
    show_default=True,
    help="The tables' namespace, as the core's [openlineage] names it.",
)
@dsn_option
def lineage_export(  # noqa: PLR0913, PLR0917 - click passes one parameter per option
    start: dt.datetime | None,
    end: dt.datetime | None,
    out: Path,
    namespace: str,
    database_namespace: str,
    dsn: str,
) -> None:
    """Write the OpenLineage run events of a period: committed batches and anonymized exports.

    The batches' are the same events (and run ids) the core emits with [openlineage], for a
    catalog that missed them or was added later; each export is a run of
    governance.export.<dataset> from the tables it read to the file it wrote.

    Example: governance lineage export --from 2026-11-01 --to 2026-11-02 --out nov1.jsonl --dsn ...
    """
    from openlineage.client.serde import Serde  # noqa: PLC0415 - export only

    from governance import export_events  # noqa: PLC0415 - export only

    start_at, end_at = period(start, end, days=1)
    names = {"namespace": namespace, "database_namespace": database_namespace}
    with connected(dsn) as conn:
        batches = lineage_module.run_events(conn, start_at, end_at, **names)
        exports = export_events.export_events(conn, start_at, end_at, **names)
    with out.open("w", encoding="utf-8") as file:
        file.writelines(Serde.to_json(event) + "\n" for event in [*batches, *exports])
    click.echo(
        f"{len(batches) + len(exports)} run events written to {out}"
        f" ({len(batches)} batches, {len(exports)} exports)"
    )


@main.group()
def trace() -> None:
    """The audit question: what happened to one data subject's data."""


@trace.command(name="subject")
@pseudonym_option
@period_options(days=365)
@click.option(
    "--format",
    "form",
    type=click.Choice(["markdown", "html", "json"]),
    default="markdown",
    show_default=True,
    help="The report's format.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout)."
)
@pgaudit_log_option
@dsn_option
def trace_subject(  # noqa: PLR0913, PLR0917 - click passes one parameter per option
    pseudonym: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
    form: str,
    out: Path | None,
    logs: tuple[Path, ...],
    dsn: str,
) -> None:
    """Everything that touched one meter's data in a period, as one report.

    Transformations, estimates, corrections, key rotations, rollups, changes to stored
    readings and retention, and reads of personal data (pgaudit).

    Example: governance trace subject --pseudonym 9f2c --from 2025-12-01 --to 2026-12-01 --dsn DSN
    """
    start_at, end_at = period(start, end, days=365)
    with connected(dsn) as conn:
        try:
            logged: list[reads.Read] | None = _logged_reads(conn, logs)
        except reads.ReadsError:
            logged = None
        try:
            found = subject_module.trace(conn, pseudonym, start_at, end_at, logged)
        except lineage_module.LineageError as exc:
            raise click.ClickException(str(exc)) from None
    if form == "json":
        text = json.dumps(dataclasses.asdict(found), indent=2, default=_json_value) + "\n"
    else:
        text = (
            subject_report.markdown(found)
            if form == "markdown"
            else subject_report.html_page(found)
        )
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"report written to {out}", err=True)


@main.group()
def access() -> None:
    """Who may read and write what: group roles derived from the data dictionary."""


@access.command(name="init")
@dsn_option
@json_option
def access_init(dsn: str, *, as_json: bool) -> None:
    """Create the group roles and grant this database's objects to them, as the dictionary says.

    Readers follow each object's personal-data class, writers its `writers`. Run it as a
    superuser after each migrate; it sets the grants anew.

    Example: governance access init --dsn postgresql://postgres@db/meters
    """
    with connected(dsn) as conn:
        planned = access_module.init(conn, load_dictionary())
        if leaking := access_module.unfiltered_views(conn):
            click.echo(
                f"warning: views {', '.join(leaking)} are owned by a role that bypasses"
                " row-level security: region scopes cannot be granted until a schema owner"
                " without superuser or BYPASSRLS owns them",
                err=True,
            )
    document = {name: {r: sorted(p) for r, p in roles.items()} for name, roles in planned.items()}
    _print(as_json, document, render.grant_lines(document))


role_option = click.option(
    "--role", required=True, type=click.Choice(access_module.ROLES), help="The group role."
)
login_option = click.option("--login", required=True, help="An existing login role.")


region_option = click.option(
    "--region",
    "regions",
    multiple=True,
    help="A region (repeatable): the login sees these regions' rows only, in every table and view.",
)


@access.command(name="grant")
@login_option
@role_option
@region_option
@click.option(
    "--all-regions", is_flag=True, help="Lift the login's region scope: it sees every region."
)
@dsn_option
def access_grant(
    login: str, role: str, regions: tuple[str, ...], dsn: str, *, all_regions: bool
) -> None:
    """Give a login one of the group roles, and regions to its scope (audited).

    A login given no region sees every region; one given regions sees only theirs, whatever
    it queries. A member of ingest bypasses the regions (the core writes all of them): a
    superuser must grant it.

    Example: governance access grant --login anna --role analyst --region North --dsn postgresql://postgres@db/meters
    """
    if regions and all_regions:
        raise click.UsageError("--region and --all-regions exclude each other")
    with _access_errors(), connected(dsn) as conn:
        access_module.grant(conn, login, role, regions=regions, all_regions=all_regions)
        scope = access_module.show(conn, login)
    click.echo(f"{login} is now {role} and {_scope_text(scope)}")


@access.command(name="revoke")
@login_option
@role_option
@click.option(
    "--region",
    "regions",
    multiple=True,
    help="Take only this region from the login's scope (repeatable); the role stays.",
)
@dsn_option
def access_revoke(login: str, role: str, regions: tuple[str, ...], dsn: str) -> None:
    """Take a group role from a login, or regions from its scope (audited).

    Example: governance access revoke --login anna --role analyst --dsn postgresql://postgres@db/meters
    """
    with _access_errors(), connected(dsn) as conn:
        access_module.revoke(conn, login, role, regions=regions)
        scope = access_module.show(conn, login)
    if regions:
        click.echo(f"{login} no longer sees {', '.join(regions)}: now {_scope_text(scope)}")
    else:
        click.echo(f"{login} is no longer {role}")


@contextlib.contextmanager
def _access_errors() -> Iterator[None]:
    try:
        yield
    except access_module.AccessError as exc:
        raise click.ClickException(str(exc)) from None


def _scope_text(found: list[access_module.Membership]) -> str:
    """'sees North, South', 'sees every region' or 'sees no region', for the login."""
    regions = found[0].regions if found else None
    if regions is None:
        return "sees every region"
    return f"sees {', '.join(regions)}" if regions else "sees no region"


@access.command(name="show")
@click.option("--login", help="One login (default: every login holding a group role).")
@dsn_option
@json_option
def access_show(login: str | None, dsn: str, *, as_json: bool) -> None:
    """Which logins hold which group roles, and which regions each sees.

    Example: governance access show --dsn postgresql://auditor@db/meters
    """
    with connected(dsn) as conn:
        found = access_module.show(conn, login)
    rows = [
        (
            m.login,
            ", ".join(m.roles),
            "all" if m.regions is None else ", ".join(m.regions) or "none",
        )
        for m in found
    ]
    _print(
        as_json,
        [dataclasses.asdict(m) for m in found],
        render.table(("login", "roles", "regions"), rows),
    )


@main.command(name="export")
@click.argument("dataset", type=click.Choice(["weekly-profiles"]))
@click.option("--k", "k", type=click.IntRange(min=2), required=True, help="k-anonymity to reach.")
@click.option("--l", "l", type=click.IntRange(min=2), help="l-diversity of consumption bands.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The file to write: .csv or .parquet.",
)
@period_options(days=28)
@click.option("--region", "regions", multiple=True, help="Only this region (repeatable).")
@click.option(
    "--resolution",
    type=click.Choice(["15min", "hour", "day"]),
    default="hour",
    show_default=True,
    help="Slots of the weekly profile.",
)
@click.option(
    "--max-suppressed",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Share of the meters that may be left out before a coarser level is tried.",
)
@dsn_option
@json_option
def export_command(  # noqa: PLR0913, PLR0917 - click passes one parameter per option
    dataset: str,
    k: int,
    l: int | None,  # noqa: E741 - as the literature names it
    out: Path,
    start: dt.datetime | None,
    end: dt.datetime | None,
    regions: tuple[str, ...],
    resolution: str,
    max_suppressed: float,
    dsn: str,
    *,
    as_json: bool,
) -> None:
    """Export DATASET anonymized: k-anonymous, l-diverse, no unique load profile; recorded.

    weekly-profiles: one row per customer meter, its mean week (Wh per slot) shared by at least
    k meters, with its area (feeder, substation or region: the finest at which k holds),
    customer class and consumption band. Refused, writing nothing, when the target cannot be
    reached. Each export is recorded (exports, export_meters) and audited (export.write).

    Example: governance export weekly-profiles --k 10 --l 2 --out north.csv --region North --dsn postgresql://anna@db/meters
    """
    try:
        from governance import anonymize, load_profiles  # noqa: PLC0415 - pandas, pycanon
        from governance import export as export_module  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"exports need {exc.name}: pip install 'meterpipe[governance]' and, without its"
            " exact pins of numpy and pandas, pip install --no-deps pycanon==1.3.6"
        ) from None

    start_at, end_at = period(start, end, days=28)
    query = load_profiles.ProfileQuery(start_at, end_at, resolution, regions)
    target = anonymize.Target(k, l, max_suppressed)
    with connected(dsn) as conn:
        try:
            record = export_module.export(conn, query, target, out)
        except (anonymize.UnreachableTargetError, export_module.ExportError) as exc:
            raise click.ClickException(f"cannot export {dataset}: {exc}") from None
    release = record.release
    document = {
        "export_id": record.export_id,
        "audit_entry": record.audit_entry,
        "file": str(record.path),
        "sha256": record.sha256,
        "meters": len(release.table),
        "suppressed": release.suppressed,
        "area_level": release.area_level,
        "customer_classes_kept": release.classes_kept,
        "k": release.k,
        "l": release.l,
        "profiles_unique_before": release.unique_before,
        "median_nearest_profile_wh_before": release.nearest_before_wh,
        "profiles_unique_after": release.unique_after,
        "key_ids": record.key_ids,
    }
    _print(as_json, document, render.export_lines(document))


@main.group()
def subject() -> None:
    """A data subject's requests: everything held about a meter, or its erasure."""


token_option = click.option(
    "--token",
    "token_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The meter's token for this action, from `edge-agent subject token` on its gateway.",
)


@subject.command(name="access")
@token_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write subject.json and readings.csv into.",
)
@dsn_option
@json_option
def subject_access(token_file: Path, out: Path, dsn: str, *, as_json: bool) -> None:
    """Write everything held about the token's meter: readings, flags, lineage, exports.

    Audited (subject.access) with the files' SHA-256. Run as the schema's owner.

    Example: governance subject access --token token.json --out dsr-0042 --dsn postgresql://meterpipe_owner@db/meters
    """
    with connected(dsn) as conn, _request_errors():
        token = subject_requests.verify_token(conn, token_file.read_text(), "access")
        summary = subject_requests.access(conn, token, out)
    lines = [
        f"{summary['readings']:,} readings and everything held about them written to {out}",
        *(f"  {name}  sha256 {digest}" for name, digest in summary["files"].items()),
        f"  audit entry {summary['audit_entry']}",
    ]
    _print(as_json, summary, lines)


@subject.command(name="erase")
@token_option
@click.option(
    "--edge-receipt",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The gateway's signed receipt from `edge-agent subject erase`, recorded with this one.",
)
@dsn_option
@json_option
def subject_erase(token_file: Path, edge_receipt: Path | None, dsn: str, *, as_json: bool) -> None:
    """Delete everything held about the token's meter, everywhere; audited with evidence.

    Readings, quarantine, corrections, refused values, export membership, key rotations and
    the meters dimension; the rollups are corrected by what its readings added. One
    transaction. Run as the schema's owner.

    Example: governance subject erase --token token.json --edge-receipt receipt.json --dsn postgresql://meterpipe_owner@db/meters
    """
    with connected(dsn) as conn, _request_errors():
        token = subject_requests.verify_token(conn, token_file.read_text(), "erase")
        receipt = edge_receipt.read_text() if edge_receipt else None
        erased = subject_requests.erase(conn, token, edge_receipt=receipt)
    document = dataclasses.asdict(erased)
    _print(as_json, document, render.erasure_lines(document))


@contextlib.contextmanager
def _request_errors() -> Iterator[None]:
    try:
        yield
    except subject_requests.RequestError as exc:
        raise click.ClickException(f"cannot use the token: {exc}") from None
