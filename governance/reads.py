"""Reads of personal data by role, as pgaudit records them, for the audit report.

The audit trail records what changes; who merely read personal data is pgaudit's to record,
in the server's log (object audit logging): ``enable`` grants SELECT on every
``pseudonymized-personal`` object of the data dictionary to a role of its own and names it
``pgaudit.role`` for the database, so every statement that reads one of them, by any login
but the loaders (the core), leaves an ``AUDIT: OBJECT`` line in the CSV log.
``server_reads`` reads those lines through SQL (``pg_ls_logdir``, ``pg_read_file``:
superuser, or pg_monitor with pg_read_server_files), ``parse_csvlog`` reads a copied file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from core_ingest.schema import recorded_storage
from core_ingest.schema.dictionary import Dictionary
from governance import audit

READ_AUDIT_ROLE = "meterpipe_read_audit"
# PostgreSQL 15's csvlog columns used here (0-based), and pgaudit's message fields.
LOG_TIME, USER, DATABASE, MESSAGE, APPLICATION = 0, 1, 2, 13, 22
OBJECT_PREFIX = "AUDIT: OBJECT"


class ReadsError(Exception):
    """Read auditing cannot be set up or read; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Read:
    """One relation one statement read, as pgaudit logged it."""

    at: dt.datetime
    user: str
    database: str
    application: str
    relation: str  # schema.name
    statement: str


@dataclass(frozen=True, slots=True)
class ReadCount:
    """How often one login, from one application, read one personal-data relation."""

    user: str
    application: str
    relation: str
    statements: int
    first: dt.datetime
    last: dt.datetime


def personal_objects(dictionary: Dictionary) -> list[str]:
    """The objects whose rows are about a meter, i.e. a household, under a pseudonym."""
    return sorted(
        name
        for name, entry in dictionary.objects.items()
        if entry.personal_data == "pseudonymized-personal"
    )


def enable(conn: psycopg.Connection, dictionary: Dictionary, loaders: list[str]) -> list[str]:
    """Log every read of the dictionary's personal-data objects; the objects, audited.

    ``loaders`` are the logins that write the data (the core): their sessions are left out.
    They must be on TimescaleDB: a COPY into a hypertable crashes the server process while
    pgaudit's object auditing is on in that session (timescale/timescaledb#7667, unfixed in
    2.19), and the core writes every batch with COPY.

    Raises:
        ReadsError: pgaudit is not loaded, or TimescaleDB storage without ``loaders``.

    """
    loaded = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if loaded is None or "pgaudit" not in loaded[0].split(","):
        raise ReadsError(
            "pgaudit is not loaded: install postgresql-15-pgaudit, add pgaudit to"
            " shared_preload_libraries and restart the server"
        )
    if not loaders and recorded_storage(conn) == "timescaledb":
        raise ReadsError(
            "name the core's login with --loader: on TimescaleDB, pgaudit's object auditing"
            " crashes the COPY the core writes batches with (timescale/timescaledb#7667)"
        )
    objects = personal_objects(dictionary)
    role = sql.Identifier(READ_AUDIT_ROLE)
    with conn.transaction():
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgaudit")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READ_AUDIT_ROLE,))
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
        conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, objects)), role
            )
        )
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None  # noqa: S101 - always one row
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET pgaudit.role = {}").format(
                sql.Identifier(database[0]), sql.Literal(READ_AUDIT_ROLE)
            )
        )
        for loader in loaders:
            conn.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET pgaudit.role = ''").format(
                    sql.Identifier(loader), sql.Identifier(database[0])
                )
            )
        audit.append(
            conn, "audit.reads.enable", "pgaudit", {"objects": objects, "loaders": loaders}
        )
    return objects


def parse_csvlog(text: str) -> Iterator[Read]:
    """The pgaudit object-read lines of a PostgreSQL CSV log."""
    for row in csv.reader(io.StringIO(text)):
        if len(row) <= APPLICATION or not row[MESSAGE].startswith(OBJECT_PREFIX):
            continue
        fields = next(csv.reader([row[MESSAGE]]))
        # AUDIT: OBJECT, statement id, substatement id, class, command, type, name, statement
        if len(fields) < 8 or fields[3] != "READ":  # noqa: PLR2004 - pgaudit's field count
            continue
        yield Read(
            at=dt.datetime.strptime(row[LOG_TIME], "%Y-%m-%d %H:%M:%S.%f %Z").replace(
                tzinfo=dt.UTC
            ),
            user=row[USER],
            database=row[DATABASE],
            application=row[APPLICATION],
            relation=fields[6],
            statement=fields[7],
        )


def server_reads(conn: psycopg.Connection) -> list[Read]:
    """Every logged read of this database, from the server's CSV logs (read over SQL).

    Raises:
        ReadsError: the login may not list or read the server's log files.

    """
    try:
        with conn.transaction():
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM pg_ls_logdir() WHERE name LIKE '%.csv' ORDER BY modification"
                ).fetchall()
            ]
            texts = [
                conn.execute(
                    "SELECT pg_read_file(current_setting('log_directory') || '/' || %s)", (name,)
                ).fetchone()
                for name in names
            ]
            database = conn.execute("SELECT current_database()").fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ReadsError(f"cannot read the server's logs: {exc.diag.message_primary}") from None
    assert database is not None  # noqa: S101 - always one row
    return [
        read
        for text in texts
        if text is not None
        for read in parse_csvlog(text[0])
        if read.database == database[0]
    ]


def summarise(reads: Iterable[Read], start: dt.datetime, end: dt.datetime) -> list[ReadCount]:
    """Reads in [start, end) by login, application and relation."""
    groups: dict[tuple[str, str, str], list[dt.datetime]] = {}
    for read in reads:
        if start <= read.at < end:
            groups.setdefault((read.user, read.application, read.relation), []).append(read.at)
    return [
        ReadCount(user, application, relation, len(times), min(times), max(times))
        for (user, application, relation), times in sorted(groups.items())
    ]
