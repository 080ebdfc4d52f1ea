"""Roles, least privilege: who may read and write what, derived from the data dictionary.

Six group roles (no login of their own; people and processes get a login role that is a
member): ``ingest`` (the core), ``analyst``, ``data_scientist``, ``operations``, ``steward``
and ``auditor``. Who reads an object follows from its personal-data class; who writes it is
the dictionary's ``writers``. Nothing here lists tables: a new object gets its grants from
its dictionary entry at the next ``init``.

=================  ===============  ==========================  ================
role               public           pseudonymized-personal      technical
=================  ===============  ==========================  ================
analyst            read             -                           -
data_scientist     read             read                        -
operations         read             read                        read
steward            read             -                           read
auditor            -                -                           read
ingest             read             (its writers' objects)      read
=================  ===============  ==========================  ================

Plus, per object, INSERT and UPDATE for its ``writers`` (with SELECT, which upserts need),
EXECUTE on ``audit_append`` for the roles whose actions are audited, and on
``ensure_daily_partition`` for ``ingest`` (native partitioning's days, made with the owner's
rights: the core needs no DDL).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import psycopg
from psycopg import sql

from core_ingest.schema.dictionary import Dictionary, Role
from governance import audit

ROLES: tuple[str, ...] = typing.get_args(Role)
READERS: dict[str, set[str]] = {
    "public": {"analyst", "data_scientist", "operations", "steward", "ingest"},
    "pseudonymized-personal": {"data_scientist", "operations"},
    "technical": {"operations", "steward", "auditor", "ingest"},
}
AUDITED = ("ingest", "operations", "steward", "auditor")  # may call audit_append


class AccessError(Exception):
    """A role or login is unknown, or the caller may not manage roles; says which."""


@dataclass(frozen=True, slots=True)
class Membership:
    """A login and the group roles it holds."""

    login: str
    roles: list[str]


def grants(dictionary: Dictionary) -> dict[str, dict[str, set[str]]]:
    """Object -> role -> privileges, as ``init`` applies them."""
    found: dict[str, dict[str, set[str]]] = {}
    for name, entry in dictionary.objects.items():
        per_role = found.setdefault(name, {})
        for role in READERS[entry.personal_data]:
            per_role.setdefault(role, set()).add("SELECT")
        if entry.kind != "view":
            for role in entry.writers:
                per_role.setdefault(role, set()).update({"SELECT", "INSERT", "UPDATE"})
    return found


def init(conn: psycopg.Connection, dictionary: Dictionary) -> dict[str, dict[str, set[str]]]:
    """Create the group roles (once per cluster) and grant this database's objects to them.

    Grants are set anew: an object's privileges for the six roles are revoked, then granted
    as the dictionary says now, so a changed class or writer takes effect. One transaction,
    audited.
    """
    planned = grants(dictionary)
    with conn.transaction():
        for role in ROLES:
            if (
                conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                is None
            ):
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        everyone = sql.SQL(", ").join(map(sql.Identifier, ROLES))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(everyone))
        for name, per_role in sorted(planned.items()):
            target = sql.Identifier(name)
            conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(target, everyone))
            for role, privileges in sorted(per_role.items()):
                conn.execute(
                    sql.SQL("GRANT {} ON {} TO {}").format(
                        sql.SQL(", ").join(map(sql.SQL, sorted(privileges))),
                        target,
                        sql.Identifier(role),
                    )
                )
        conn.execute(
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                sql.Identifier("ingest")
            )
        )
        conn.execute("GRANT EXECUTE ON FUNCTION ensure_daily_partition(text, date) TO ingest")
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION audit_append(text, text, jsonb) TO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, AUDITED))
            )
        )
        audit.append(
            conn,
            "access.init",
            "roles",
            {name: {r: sorted(p) for r, p in roles.items()} for name, roles in planned.items()},
        )
    return planned


def grant(conn: psycopg.Connection, login: str, role: str) -> None:
    """Make ``login`` a member of ``role`` (audited).

    Raises:
        AccessError: an unknown role or login.

    """
    _check(conn, login, role)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
        audit.append(conn, "access.grant", login, {"role": role})


def revoke(conn: psycopg.Connection, login: str, role: str) -> None:
    """Take ``role`` from ``login`` (audited).

    Raises:
        AccessError: an unknown role or login.

    """
    _check(conn, login, role)
    with conn.transaction():
        conn.execute(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(login))
        )
        audit.append(conn, "access.revoke", login, {"role": role})


def show(conn: psycopg.Connection, login: str | None = None) -> list[Membership]:
    """Every login holding one of the group roles (or ``login`` alone), with its roles."""
    rows = conn.execute(
        "SELECT m.rolname, array_agg(g.rolname ORDER BY g.rolname) FROM pg_auth_members a"
        " JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
        " WHERE g.rolname = ANY(%s) AND (%s::text IS NULL OR m.rolname = %s)"
        " GROUP BY 1 ORDER BY 1",
        (list(ROLES), login, login),
    ).fetchall()
    return [Membership(name, list(roles)) for name, roles in rows]


def _check(conn: psycopg.Connection, login: str, role: str) -> None:
    if role not in ROLES:
        raise AccessError(f"no role {role!r}: one of {', '.join(ROLES)}")
    if not _exists(conn, login):
        raise AccessError(f"no login {login!r} in this cluster: CREATE ROLE {login} LOGIN first")


def _exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
