"""The audit trail: append, verify, seal and summarise the hash-chained ``audit_log``.

The database appends (``audit_append``, migration 11): each entry's hash is SHA-256 of the
previous entry's hash and this entry's fields, each written ``<length>:<text>``. ``verify``
recomputes the chain here, independently of the database's functions, and names the first
entry that does not hold: a changed entry no longer gives its hash, a removed one leaves a
gap, a reordered or inserted one does not follow its predecessor. Whoever rewrites the whole
chain consistently (a superuser can) is caught by the heads ``seal`` signed with a key the
database never sees: the sealed entry no longer has the sealed hash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg.types.json import Jsonb

GENESIS = bytes(32)  # the first entry's previous hash
# Read as the database hashed them: the time in the exact text audit_entry_text() uses, the
# detail in jsonb's own rendering.
ENTRIES = (
    "SELECT entry_id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
    " actor, application, action, object, detail::text, previous_hash, hash"
    " FROM audit_log ORDER BY entry_id"
)
SEALED_MESSAGE = "meterpipe audit head {entry_id} {hash}"
ANCHOR_FILE = "audit-head-{entry_id:012d}.json"
FETCH_ROWS = 10_000


class AuditError(Exception):
    """An anchor file or key cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit entry, its fields as they were hashed."""

    entry_id: int
    at: str
    actor: str
    application: str
    action: str
    object: str
    detail: str  # jsonb's text
    previous_hash: bytes
    hash: bytes

    def computed_hash(self, previous: bytes) -> bytes:
        """What this entry's hash must be after ``previous``."""
        fields = (
            str(self.entry_id),
            self.at,
            self.actor,
            self.application,
            self.action,
            self.object,
            self.detail,
        )
        text = "".join(f"{len(field)}:{field}" for field in fields)
        return hashlib.sha256(previous + text.encode()).digest()


@dataclass(frozen=True, slots=True)
class Anchor:
    """A chain head signed by ``seal``: this entry had this hash when it was sealed."""

    entry_id: int
    hash: str  # hex
    at: str
    public_key: str  # hex, raw Ed25519
    signature: str  # hex

    def message(self) -> bytes:
        """What the signature covers."""
        return SEALED_MESSAGE.format(entry_id=self.entry_id, hash=self.hash).encode()


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``verify`` found: the entries checked and the first that does not hold, if any."""

    entries: int  # entries that hold, from entry 1: the last one that holds is this one
    anchors: int  # sealed heads the chain matched
    bad_entry: int | None
    problem: str | None

    @property
    def intact(self) -> bool:
        """Every entry follows its predecessor, gives its hash, and matches every seal."""
        return self.problem is None


def append(conn: psycopg.Connection, action: str, obj: str, detail: dict[str, object]) -> int:
    """Append one entry (in the caller's transaction, if any); its entry_id."""
    row = conn.execute("SELECT audit_append(%s, %s, %s)", (action, obj, Jsonb(detail))).fetchone()
    assert row is not None  # noqa: S101 - a function call returns one row
    return int(row[0])


def entries(conn: psycopg.Connection) -> Iterator[Entry]:
    """Every entry in chain order, streamed (the trail grows by every committed batch)."""
    with conn.transaction(), conn.cursor(name="audit_entries") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(ENTRIES)
        for entry_id, at, actor, application, action, obj, detail, previous, hashed in cursor:
            yield Entry(
                entry_id,
                at,
                actor,
                application,
                action,
                obj,
                detail,
                bytes(previous),
                bytes(hashed),
            )


def verify(conn: psycopg.Connection, anchors: Iterable[Anchor] = ()) -> Verification:
    """Recompute the chain; the first entry that breaks it, or a seal it no longer matches."""
    sealed = {a.entry_id: a for a in anchors}
    expected, previous, matched = 1, GENESIS, 0
    for entry in entries(conn):
        problem = _broken(entry, expected, previous)
        if problem is None and entry.entry_id in sealed:
            problem = _unsealed(entry, sealed.pop(entry.entry_id))
            matched += problem is None
        if problem is not None:
            return Verification(expected - 1, matched, expected, problem)
        previous, expected = entry.hash, expected + 1
    head = expected - 1
    if sealed:
        first = min(sealed.values(), key=lambda a: a.entry_id)
        problem = f"entry {first.entry_id} was sealed at {first.at} and is gone: the trail ends"
        return Verification(head, matched, first.entry_id, f"{problem} at entry {head}")
    return Verification(head, matched, None, None)


def _broken(entry: Entry, expected: int, previous: bytes) -> str | None:
    if entry.entry_id != expected:
        return f"entry {expected} is missing: the entry after {expected - 1} is {entry.entry_id}"
    if entry.previous_hash != previous:
        return (
            f"entry {expected} does not follow entry {expected - 1}: it was inserted, moved or"
            " its predecessor replaced"
        )
    if entry.computed_hash(previous) != entry.hash:
        return f"entry {expected} was changed: its fields no longer give its hash"
    return None


def _unsealed(entry: Entry, anchor: Anchor) -> str | None:
    if entry.hash.hex() != anchor.hash:
        return (
            f"entry {entry.entry_id} is not the entry sealed at {anchor.at}: the chain up to it"
            " was rewritten"
        )
    return None


def seal(conn: psycopg.Connection, key: Ed25519PrivateKey) -> Anchor:
    """Append an ``audit.seal`` entry and sign the head it makes, in one transaction."""
    public = key.public_key().public_bytes_raw().hex()
    with conn.transaction():
        entry_id = append(conn, "audit.seal", "audit_log", {"public_key": public})
        row = conn.execute(
            "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), hash"
            " FROM audit_log WHERE entry_id = %s",
            (entry_id,),
        ).fetchone()
    assert row is not None  # noqa: S101 - appended in this transaction
    unsigned = Anchor(entry_id, bytes(row[1]).hex(), row[0], public, "")
    signature = key.sign(unsigned.message()).hex()
    return Anchor(entry_id, unsigned.hash, unsigned.at, public, signature)


def write_anchor(anchor: Anchor, folder: Path) -> Path:
    """The anchor as a JSON file in ``folder``: copy the folder off the database server."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ANCHOR_FILE.format(entry_id=anchor.entry_id)
    path.write_text(json.dumps(dataclasses.asdict(anchor), indent=2) + "\n")
    return path


def read_anchors(folder: Path, trusted: Ed25519PublicKey) -> list[Anchor]:
    """The anchors in ``folder``, each signature checked against the ``trusted`` key.

    Raises:
        AuditError: naming a file that is not an anchor, or one not signed by ``trusted``.

    """
    found = []
    for path in sorted(folder.glob(ANCHOR_FILE.replace("{entry_id:012d}", "*"))):
        try:
            anchor = Anchor(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise AuditError(f"{path}: not an audit head: {exc}") from None
        try:
            trusted.verify(bytes.fromhex(anchor.signature), anchor.message())
        except (InvalidSignature, ValueError):
            raise AuditError(f"{path}: not signed by the trusted sealing key") from None
        found.append(anchor)
    return found


@dataclass(frozen=True, slots=True)
class ActionCount:
    """How often one actor did one thing in the period."""

    actor: str
    application: str
    action: str
    entries: int
    first: dt.datetime
    last: dt.datetime


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Who did what in a period: counts by actor and action, and every non-ingest entry."""

    start: dt.datetime
    end: dt.datetime
    counts: list[ActionCount]
    batches: int
    readings_stored: int
    estimates_replaced: int
    actions: list[dict[str, object]]  # every entry but batch.ingest, in order


def report(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> AuditReport:
    """Summarise the trail between ``start`` (included) and ``end`` (excluded)."""
    window = (start, end)
    counts = [
        ActionCount(*row)
        for row in conn.execute(
            "SELECT actor, application, action, count(*), min(at), max(at) FROM audit_log"
            " WHERE at >= %s AND at < %s GROUP BY 1, 2, 3 ORDER BY 3, 1, 2",
            window,
        ).fetchall()
    ]
    ingest = conn.execute(
        "SELECT count(*), coalesce(sum((detail->>'readings_stored')::bigint), 0),"
        " coalesce(sum((detail->>'estimates_replaced')::bigint), 0) FROM audit_log"
        " WHERE action = 'batch.ingest' AND at >= %s AND at < %s",
        window,
    ).fetchone()
    assert ingest is not None  # noqa: S101 - an aggregate returns one row
    actions = [
        {"entry_id": r[0], "at": r[1], "actor": r[2], "application": r[3], "action": r[4],
         "object": r[5], "detail": r[6]}
        for r in conn.execute(
            "SELECT entry_id, at, actor, application, action, object, detail FROM audit_log"
            " WHERE action <> 'batch.ingest' AND at >= %s AND at < %s ORDER BY entry_id",
            window,
        ).fetchall()
    ]  # fmt: skip
    return AuditReport(start, end, counts, int(ingest[0]), int(ingest[1]), int(ingest[2]), actions)
