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

Plus, per object, INSERT and UPDATE for its ``writers`` (with SELECT, which upserts need, and
its identity sequences), EXECUTE on ``audit_append`` for the roles whose actions are audited,
and on ``ensure_daily_partition`` for ``ingest`` (native partitioning's days, made with the
owner's rights: the core needs no DDL).

Regions (migration 14): a login given regions (``grant(..., regions=[...])``) sees only their
rows in every regional table and view, by row-level security; a login without a scope sees
every region. Members of ``ingest`` bypass the policies (the core writes every region, by
COPY, which row-level security would refuse), so making one takes a superuser.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from core_ingest.schema import PARTITIONED_TABLES
from core_ingest.schema.dictionary import Dictionary, Role
from governance import audit

ROLES: tuple[str, ...] = typing.get_args(Role)
READERS: dict[str, set[str]] = {
    "public": {"analyst", "data_scientist", "operations", "steward", "ingest"},
    "pseudonymized-personal": {"data_scientist", "operations"},
    "technical": {"operations", "steward", "auditor", "ingest"},
}
AUDITED = ("ingest", "data_scientist", "operations", "steward", "auditor")  # call audit_append


class AccessError(Exception):
    """A role or login is unknown, or the caller may not manage roles; says which."""


@dataclass(frozen=True, slots=True)
class Membership:
    """A login, the group roles it holds, and the regions it may see (None: every region)."""

    login: str
    roles: list[str]
    regions: list[str] | None


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
        _grant_sequences(conn, dictionary)
        _restrict_chunks(conn)
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


def grant(
    conn: psycopg.Connection,
    login: str,
    role: str,
    *,
    regions: Sequence[str] = (),
    all_regions: bool = False,
) -> None:
    """Make ``login`` a member of ``role``, adding ``regions`` to its scope (audited).

    With ``all_regions`` the login's scope is lifted: it sees every region again.

    Raises:
        AccessError: an unknown role, login or region.

    """
    _check(conn, login, role, regions)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
        if role == "ingest":
            _bypass_policies(conn, login, bypass=True)
        if all_regions:
            conn.execute("DELETE FROM region_scopes WHERE login = %s", (login,))
        elif regions:
            conn.execute(
                "INSERT INTO region_scopes (login, region_ids) VALUES (%s, %s)"
                " ON CONFLICT (login) DO UPDATE SET changed_at = now(), region_ids ="
                " ARRAY(SELECT DISTINCT unnest(region_scopes.region_ids || excluded.region_ids)"
                " ORDER BY 1)",
                (login, _region_ids(conn, regions)),
            )
        audit.append(
            conn,
            "access.grant",
            login,
            {"role": role, "regions": _scope(conn, login)},
        )


def revoke(conn: psycopg.Connection, login: str, role: str, *, regions: Sequence[str] = ()) -> None:
    """Take ``role`` from ``login`` (audited); with ``regions``, take only those from its scope.

    A login whose last region is taken keeps an empty scope: it sees no regional row (never
    every region, as a login without a scope does).

    Raises:
        AccessError: an unknown role, login or region.

    """
    _check(conn, login, role, regions)
    with conn.transaction():
        if regions:
            conn.execute(
                "INSERT INTO region_scopes (login, region_ids)"
                " SELECT %s, coalesce(array_agg(region_id ORDER BY region_id), '{}') FROM regions"
                " WHERE region_id <> ALL(%s)"
                " ON CONFLICT (login) DO UPDATE SET changed_at = now(), region_ids ="
                " ARRAY(SELECT unnest(region_scopes.region_ids)"
                " EXCEPT SELECT unnest(%s::smallint[]) ORDER BY 1)",
                (login, ids := _region_ids(conn, regions), ids),
            )
        else:
            conn.execute(
                sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(login))
            )
            if role == "ingest":
                _bypass_policies(conn, login, bypass=False)
        audit.append(
            conn,
            "access.revoke",
            login,
            {"role": role, "regions_taken": list(regions), "regions": _scope(conn, login)},
        )


def show(conn: psycopg.Connection, login: str | None = None) -> list[Membership]:
    """Every login holding one of the group roles (or ``login`` alone), with roles and regions."""
    rows = conn.execute(
        "SELECT m.rolname, array_agg(g.rolname ORDER BY g.rolname),"
        " (SELECT ARRAY(SELECT r.name FROM regions r WHERE r.region_id = ANY(s.region_ids)"
        "  ORDER BY r.name) FROM region_scopes s WHERE s.login = m.rolname)"
        " FROM pg_auth_members a"
        " JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
        " WHERE g.rolname = ANY(%s) AND (%s::text IS NULL OR m.rolname = %s)"
        " GROUP BY 1 ORDER BY 1",
        (list(ROLES), login, login),
    ).fetchall()
    return [
        Membership(name, list(roles), None if scope is None else list(scope))
        for name, roles, scope in rows
    ]


def _check_scopes_hold(conn: psycopg.Connection, role: str) -> None:
    """Refuse a region scope that would not hold: for ingest, or through bypassing views."""
    if role == "ingest":
        raise AccessError("members of ingest bypass row-level security: a region scope cannot hold")
    if leaking := unfiltered_views(conn):
        raise AccessError(
            "region scopes cannot hold: views " + ", ".join(leaking) + " are owned by a role that"
            " bypasses row-level security (a superuser, or BYPASSRLS), so they show every region;"
            " migrate as a schema owner without those rights, or give them one"
            " (ALTER VIEW ... OWNER TO meterpipe_owner)"
        )


def unfiltered_views(conn: psycopg.Connection) -> list[str]:
    """Views whose owner bypasses row-level security: through them, every region shows.

    A view reads its tables with its owner's rights; the policies are forced on the owner and
    ask who connected, but a superuser or a BYPASSRLS role skips them altogether.
    """
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_roles o ON o.oid = c.relowner"
        " WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace"
        " AND (o.rolsuper OR o.rolbypassrls) ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def _region_ids(conn: psycopg.Connection, names: Sequence[str]) -> list[int]:
    """The regions' ids; an unknown name is an error listing the known ones."""
    known: dict[str, int] = dict(
        conn.execute("SELECT name, region_id FROM regions ORDER BY name").fetchall()
    )
    if unknown := [n for n in names if n not in known]:
        raise AccessError(
            f"no region {', '.join(map(repr, unknown))}: one of {', '.join(known)}"
            " (regions are added by enrolling an agent in them)"
        )
    return [known[n] for n in names]


def _scope(conn: psycopg.Connection, login: str) -> list[str] | None:
    """The regions ``login`` may see now, by name (None: every region)."""
    row = conn.execute(
        "SELECT ARRAY(SELECT r.name FROM regions r WHERE r.region_id = ANY(s.region_ids)"
        " ORDER BY r.name) FROM region_scopes s WHERE s.login = %s",
        (login,),
    ).fetchone()
    return None if row is None else list(row[0])


def _bypass_policies(conn: psycopg.Connection, login: str, *, bypass: bool) -> None:
    """The core's login writes every region by COPY: row-level security must not apply to it."""
    attribute = sql.SQL("BYPASSRLS" if bypass else "NOBYPASSRLS")
    try:
        conn.execute(sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(login), attribute))
    except psycopg.errors.InsufficientPrivilege:
        raise AccessError(
            f"making {login!r} a member of ingest sets BYPASSRLS on it, which takes a superuser"
        ) from None


def _grant_sequences(conn: psycopg.Connection, dictionary: Dictionary) -> None:
    """USAGE on each written table's identity sequences, for its writers."""
    for name, entry in dictionary.objects.items():
        if entry.kind == "view" or not entry.writers:
            continue
        for (sequence,) in conn.execute(
            "SELECT s.oid::regclass::text FROM pg_class s JOIN pg_depend d ON d.objid = s.oid"
            " WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND d.refobjid = %s::regclass",
            (name,),
        ).fetchall():
            conn.execute(
                sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                    sql.Identifier(sequence), sql.SQL(", ").join(map(sql.Identifier, entry.writers))
                )
            )


def _restrict_chunks(conn: psycopg.Connection) -> None:
    """Take the grants TimescaleDB just copied onto every chunk off again (see migration 14)."""
    if conn.execute("SELECT storage FROM storage_settings").fetchone() != ("timescaledb",):
        return
    for table in PARTITIONED_TABLES:
        conn.execute("SELECT restrict_chunks(%s, '-infinity')", (table,))


def _check(conn: psycopg.Connection, login: str, role: str, regions: Sequence[str] = ()) -> None:
    """The role and login exist, and a region scope asked for would hold."""
    if role not in ROLES:
        raise AccessError(f"no role {role!r}: one of {', '.join(ROLES)}")
    if not _exists(conn, login):
        raise AccessError(f"no login {login!r} in this cluster: CREATE ROLE {login} LOGIN first")
    if regions:
        _check_scopes_hold(conn, role)


def _exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
