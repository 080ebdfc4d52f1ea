"""Data-subject requests: access to, and erasure of, everything held about one household's meter.

The request starts at the gateway (``edge-agent subject token``), the only place that can turn
the meter serial into its pseudonym; the signed token is checked here against the agent's
enrolled key, then the meter is found under every pseudonym it had (``pseudonym_map``, across
key rotations).

``access`` writes everything held for it: the readings with their flags and provenance, the
trace of how they were produced, corrections, quarantined and refused values, key rotations,
the rollups that count it and the exports that included it, as JSON and CSV. ``erase`` deletes
it everywhere it is stored, in one transaction: readings, quarantine, corrections, refused
values, the exports' membership rows, key rotations, the meters dimension; the substation
rollups are corrected by what its readings added (they stay the sums of what is stored).
Both are audited (``subject.access``, ``subject.erase``) with counts and digests as evidence;
an erasure's entry carries the gateway's signed receipt for the buffer when given.

Run them as the schema's owner (erasure deletes what no group role may): like retention.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from governance import audit, lineage, subject
from proto import subject_token

EVER = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC))
# Where a meter's rows are, by meter ids (%(ids)s), pseudonyms as bytes (%(raw)s) or as hex
# (%(hex)s). Children before parents: the meters dimension last.
HELD = {
    "meter_readings": "meter_id = ANY(%(ids)s)",
    "reading_quarantine": "meter_id = ANY(%(ids)s)",
    "reading_corrections": "meter_id = ANY(%(ids)s)",
    "refused_values": "raw->>'meter' = ANY(%(hex)s)",
    "export_meters": "meter_id = ANY(%(ids)s)",
    "pseudonym_map": "old_meter = ANY(%(raw)s) OR new_meter = ANY(%(raw)s)",
    "meters": "meter_id = ANY(%(ids)s)",
}
# What the deleted customer readings added to each substation rollup, to take out again
# (buckets by interval start, as the core sums them; the substation is the batch's). Summed
# from the rows the DELETE returned, so a batch committing meanwhile cannot slip between.
ROLLUP_SHARE = """
SELECT b.substation, to_timestamp(floor((g.end_s - 900) / {period}) * {period}),
       sum(g.energy_wh)::bigint, count(*) FILTER (WHERE g.flags & {estimated} = 0),
       count(*) FILTER (WHERE g.flags & {estimated} <> 0),
       count(*) FILTER (WHERE g.flags & {suspect} <> 0)
FROM unnest(%(ends)s::float8[], %(energy)s::int8[], %(flags)s::int4[], %(batches)s::int8[])
     AS g(end_s, energy_wh, flags, batch_id)
JOIN batches b USING (batch_id)
GROUP BY 1, 2 ORDER BY 1, 2
"""
ROLLUPS = (("substation_hourly", "hour", 3600), ("substation_daily", "day", 86_400))
PSEUDONYM = re.compile(r"[0-9a-f]{64}")


class RequestError(Exception):
    """The token cannot be used: unreadable, unsigned by the agent, or naming no agent."""


@dataclass(frozen=True, slots=True)
class Token:
    """A verified subject token: one action on one meter, once, before it expires."""

    agent_id: str
    key_id: str
    pseudonym: str  # hex
    action: str  # access or erase
    reference: str
    issued_at: str
    expires_at: str
    sha256: str  # of the token as signed: the audit trail's reference to it

    def recorded(self) -> dict[str, Any]:
        """The token as the audit trail keeps it: the pseudonym only as a digest."""
        kept = asdict(self) | {"pseudonym_sha256": _digest(self.pseudonym)}
        kept.pop("pseudonym")
        return kept


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure removed, as its audit entry records it."""

    meter_ids: list[int]
    pseudonyms: list[str]
    before: dict[str, int]
    after: dict[str, int]
    rollup_rows_corrected: int
    sha256: str  # of every row deleted, in table order
    edge_receipt: dict[str, Any] | None
    audit_entry: int


def verify_token(conn: psycopg.Connection, text: str, action: str) -> Token:
    """The token, once it holds for ``action``: signed by its agent, current, unused, its own.

    Its signature must verify with the agent's enrolled key (not revoked); it must allow this
    action, not be expired nor used for it before (the audit trail is the record of use); and
    the meter it names, if stored, must be one its agent sent under that key.

    Raises:
        RequestError: what does not hold.

    """
    fields = _verified(
        conn, text, subject_token.SUBJECT_TOKEN, ("action", "issued_at", "expires_at")
    )
    token = Token(
        **{name: fields[name] for name in Token.__dataclass_fields__ if name != "sha256"},
        sha256=hashlib.sha256(text.strip().encode()).hexdigest(),
    )
    if token.action != action:
        raise RequestError(f"the token allows {token.action!r}, not {action!r}")
    try:
        expired = dt.datetime.fromisoformat(token.expires_at) < dt.datetime.now(dt.UTC)
    except ValueError:
        raise RequestError(f"expires_at {token.expires_at!r} is not a time") from None
    if expired:
        raise RequestError(f"the token expired at {token.expires_at}: make a new one")
    used = conn.execute(
        "SELECT entry_id FROM audit_log WHERE action = %s AND detail->'token'->>'sha256' = %s",
        (f"subject.{action}", token.sha256),
    ).fetchone()
    if used:
        raise RequestError(f"the token was used already (audit entry {used[0]}): make a new one")
    owner = conn.execute(
        "SELECT first_agent_id, key_id FROM meters WHERE pseudonym = %s",
        (bytes.fromhex(token.pseudonym),),
    ).fetchone()
    if owner and (owner[0] != token.agent_id or owner[1] not in (None, token.key_id)):
        raise RequestError(
            f"the meter was first sent by {owner[0]!r} under key {owner[1]!r}: a token from"
            f" {token.agent_id!r} under {token.key_id!r} cannot name it"
        )
    return token


def access(conn: psycopg.Connection, token: Token, out: Path) -> dict[str, Any]:
    """Write everything held about the token's meter into folder ``out``; audited.

    Returns the summary the audit entry records (files and their SHA-256, counts).
    """
    if out.exists() and any(out.iterdir()):
        raise RequestError(f"{out} is not empty: give a new folder for each request")
    out.mkdir(parents=True, exist_ok=True)
    meter = _meter(conn, token)
    if meter is None:
        held: dict[str, Any] = {"held": "nothing: no stored meter has this pseudonym"}
        readings = 0
    else:
        held = _jsonable(asdict(subject.trace(conn, token.pseudonym, *EVER)))
        readings = _write_readings(conn, meter, out / "readings.csv")
    (out / "subject.json").write_text(
        json.dumps({"token": asdict(token), **held}, indent=2, default=str)
    )  # the subject's own copy: their pseudonym in full
    files = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.iterdir())
        if path.name in {"subject.json", "readings.csv"}
    }
    summary = {"token": token.recorded(), "readings": readings, "files": files}
    summary["audit_entry"] = audit.append(conn, "subject.access", _digest(token.pseudonym), summary)
    return summary


def erase(conn: psycopg.Connection, token: Token, *, edge_receipt: str | None = None) -> Erasure:
    """Delete every row about the token's meter, correct the rollups, audit the evidence.

    ``edge_receipt``: the gateway's signed receipt for its buffer (``edge-agent subject
    erase``), verified and recorded with the central evidence.

    Raises:
        RequestError: a receipt for another agent or meter, or one that does not verify.

    """
    receipt = (
        _verified(conn, edge_receipt, subject_token.EDGE_RECEIPT, ("erased_at", "sha256"))
        if edge_receipt is not None
        else None
    )
    if receipt and (receipt["agent_id"], receipt["pseudonym"]) != (
        token.agent_id,
        token.pseudonym,
    ):
        raise RequestError("the edge receipt is for another agent or meter than the token")
    meter = _meter(conn, token)
    where = _where(meter, token)
    with conn.transaction():
        before = _counts(conn, where)
        customer = {
            meter_id
            for (meter_id,) in conn.execute(
                "SELECT meter_id FROM meters WHERE meter_id = ANY(%(ids)s) AND role = 'customer'",
                where,
            ).fetchall()
        }
        deleted = _each_held(conn, "DELETE FROM {} WHERE {} RETURNING *", where)
        corrected = _take_out_of_rollups(conn, deleted["meter_readings"], customer)
        digest = hashlib.sha256()
        for rows in deleted.values():
            for row in rows:
                digest.update(repr(row).encode())
        after = _counts(conn, where)
        evidence = {
            "token": token.recorded(),
            "meter_ids": where["ids"],
            "pseudonyms_sha256": [_digest(p) for p in where["hex"]],
            "before": before,
            "after": after,
            "rollup_rows_corrected": corrected,
            "sha256": digest.hexdigest(),
            "edge_receipt": _receipt_kept(receipt),
        }
        entry = audit.append(conn, "subject.erase", _digest(token.pseudonym), evidence)
    return Erasure(
        meter_ids=where["ids"],
        pseudonyms=where["hex"],
        before=before,
        after=after,
        rollup_rows_corrected=corrected,
        sha256=digest.hexdigest(),
        edge_receipt=receipt,
        audit_entry=entry,
    )


def _verified(
    conn: psycopg.Connection, text: str, kind: str, required: tuple[str, ...]
) -> dict[str, Any]:
    try:
        document = subject_token.read(text)
    except subject_token.DocumentError as exc:
        raise RequestError(str(exc)) from None
    needed = ("agent_id", "key_id", "pseudonym", "reference", *required)
    if missing := [name for name in needed if not isinstance(document.get(name), str)]:
        raise RequestError(f"the {kind} document lacks {', '.join(missing)}")
    if not PSEUDONYM.fullmatch(document["pseudonym"]):
        raise RequestError("the pseudonym is not 64 hexadecimal digits")
    row = conn.execute(
        "SELECT public_key, revoked_at FROM agents WHERE agent_id = %s", (document["agent_id"],)
    ).fetchone()
    if row is None:
        raise RequestError(f"no enrolled agent {document['agent_id']!r} signed this document")
    if row[1] is not None:
        raise RequestError(f"agent {document['agent_id']!r} was revoked at {row[1]:%Y-%m-%d %H:%M}")
    try:
        return subject_token.verify(document, kind, bytes(row[0]))
    except subject_token.DocumentError as exc:
        raise RequestError(str(exc)) from None


def _digest(pseudonym: str) -> str:
    """A pseudonym as the audit trail names it: its SHA-256 (the trail is kept forever)."""
    return hashlib.sha256(bytes.fromhex(pseudonym)).hexdigest()


def _receipt_kept(receipt: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gateway's receipt for the audit trail: its facts, the pseudonym as a digest."""
    if receipt is None:
        return None
    kept = {key: value for key, value in receipt.items() if key not in ("pseudonym", "kind")}
    return kept | {"pseudonym_sha256": _digest(receipt["pseudonym"])}


def _meter(conn: psycopg.Connection, token: Token) -> lineage.Meter | None:
    try:
        return lineage.meter(conn, token.pseudonym)
    except lineage.LineageError:
        return None


def _where(meter: lineage.Meter | None, token: Token) -> dict[str, Any]:
    """The query parameters naming the meter: ids, pseudonyms as bytes and hex."""
    pseudonyms = meter.pseudonyms if meter else [token.pseudonym]
    return {
        "ids": meter.meter_ids if meter else [],
        "hex": pseudonyms,
        "raw": [bytes.fromhex(p) for p in pseudonyms],
    }


def _counts(conn: psycopg.Connection, where: dict[str, Any]) -> dict[str, int]:
    found = _each_held(conn, "SELECT count(*) FROM {} WHERE {}", where)
    return {table: int(rows[0][0]) for table, rows in found.items()}


def _each_held(
    conn: psycopg.Connection, statement: str, where: dict[str, Any]
) -> dict[str, list[tuple[Any, ...]]]:
    """``statement`` (a table and a condition to fill in) run over each of ``HELD``, in order."""
    return {
        table: conn.execute(
            sql.SQL(statement).format(sql.Identifier(table), sql.SQL(condition)),
            where,
        ).fetchall()
        for table, condition in HELD.items()
    }


def _take_out_of_rollups(
    conn: psycopg.Connection, deleted: list[tuple[Any, ...]], customer: set[int]
) -> int:
    """Subtract the deleted customer readings from the rollups; the rows corrected."""
    columns = [
        desc.name for desc in conn.execute("SELECT * FROM meter_readings LIMIT 0").description or []
    ]
    at = {
        name: columns.index(name)
        for name in ("meter_id", "interval_end", "energy_wh", "quality_flags", "batch_id")
    }
    rows = [row for row in deleted if row[at["meter_id"]] in customer]
    readings = {
        "ends": [row[at["interval_end"]].timestamp() for row in rows],
        "energy": [row[at["energy_wh"]] for row in rows],
        "flags": [row[at["quality_flags"]] for row in rows],
        "batches": [row[at["batch_id"]] for row in rows],
    }
    corrected = 0
    for table, column, period in ROLLUPS:
        shares = conn.execute(
            ROLLUP_SHARE.format(
                period=period, estimated=lineage.ESTIMATED, suspect=lineage.SUSPECT_MASK
            ),
            readings,
        ).fetchall()
        for substation, bucket, energy, received, estimated, suspect in shares:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET energy_wh = energy_wh - %s, received = received - %s,"
                    " estimated = estimated - %s, suspect = suspect - %s"
                    " WHERE substation = %s AND {} = %s"
                ).format(sql.Identifier(table), sql.Identifier(column)),
                (energy, received, estimated, suspect, substation, bucket),
            )
            corrected += 1
    return corrected


def _write_readings(conn: psycopg.Connection, meter: lineage.Meter, path: Path) -> int:
    """Every stored reading of the meter, with its flags and provenance, as CSV."""
    rows = conn.execute(
        "SELECT encode(m.pseudonym, 'hex'), r.interval_end, r.energy_wh, r.register_wh,"
        " r.quality_flags, r.poll_time, r.batch_id FROM meter_readings r"
        " JOIN meters m USING (meter_id) WHERE r.meter_id = ANY(%s) ORDER BY r.interval_end",
        (meter.meter_ids,),
    ).fetchall()
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ("pseudonym", "interval_end", "energy_wh", "register_wh", "quality_flags",
             "flags", "provenance", "poll_time", "batch_id")
        )  # fmt: skip
        for pseudonym, end, energy, register, flags, polled, batch in rows:
            names = " ".join(lineage.flag_names(flags))
            provenance = "estimated" if flags & lineage.ESTIMATED else "read"
            writer.writerow(
                (pseudonym, end.isoformat(), energy, register, flags, names, provenance,
                 polled.isoformat(), batch)
            )  # fmt: skip
    return len(rows)


def _jsonable(value: Any) -> Any:  # noqa: ANN401 - any structure of the trace
    """The trace with times as ISO 8601 text."""
    return json.loads(json.dumps(value, default=str))
