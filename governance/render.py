"""How governance commands print for people: aligned tables and wrapped descriptions.

Every command also has ``--json``; these functions only lay out what the catalog, glossary
and (next) lineage and audit modules computed.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Sequence
from typing import Any

from governance.audit import AuditReport
from governance.catalog import Dataset, DatasetEntry, Hit
from governance.glossary import Glossary
from governance.lineage import BatchTrace, MeterDay, ReadingTrace, RollupTrace
from governance.reads import ReadCount
from governance.retention import Kept, Removal
from governance.versions import History, short

WIDTH = 100  # a steward's terminal; descriptions wrap under their own column


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns aligned on their widest value, two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def wrapped(text: str, indent: int) -> list[str]:
    """``text`` wrapped to ``WIDTH``, every line after the first indented by ``indent``."""
    lines = textwrap.wrap(text, max(WIDTH - indent, 30), break_on_hyphens=False) or [""]
    return [lines[0], *(" " * indent + line for line in lines[1:])]


def indented(text: str, indent: int) -> list[str]:
    """``text`` wrapped to ``WIDTH``, every line indented by ``indent``."""
    return [" " * indent + line for line in textwrap.wrap(text, WIDTH - indent)]


def dataset_lines(datasets: Sequence[Dataset]) -> list[str]:
    """The catalog's list: one line per object (owners and stewards in ``show NAME``)."""
    header = ("name", "kind", "personal data", "retention", "rows (est.)", "owner")
    rows = [
        (
            d.name,
            d.kind,
            d.personal_data,
            d.retention,
            "-" if d.rows_estimated is None else f"{d.rows_estimated:,}",
            d.owner,
        )
        for d in datasets
    ]
    return table(header, rows)


def entry_lines(entry: DatasetEntry) -> list[str]:
    """One object in full: its facts, quality rules and columns."""
    dataset = entry.dataset
    kind = dataset.kind if entry.storage == dataset.kind else f"{dataset.kind} ({entry.storage})"
    facts = [
        ("kind", kind),
        ("rows", "-" if dataset.rows_estimated is None else f"~{dataset.rows_estimated:,}"),
        ("personal data", dataset.personal_data),
        ("owner", dataset.owner),
        ("steward", dataset.steward),
        ("retention", dataset.retention),
        ("region", entry.region or "not regional"),
        ("subject lookup", ", ".join(entry.subject_columns) or "-"),
        ("source", f"{entry.source}; {entry.frequency}"),
        ("produced by", entry.produced_by),
    ]
    lines = [*wrapped(f"{dataset.name}: {dataset.description}", 2), ""]
    lines += [f"  {key:<16}" + "\n".join(wrapped(value, 18)) for key, value in facts]
    lines += [
        f"  {'quality rules' if i == 0 else '':<16}- " + "\n".join(wrapped(rule, 20))
        for i, rule in enumerate(entry.quality_rules)
    ]
    lines += ["", "  columns"]
    name_width = max(len(c.name) for c in entry.columns)
    type_width = max(len(c.type or "missing") for c in entry.columns)
    indent = 4 + name_width + 2 + type_width + 2
    for column in entry.columns:
        text = f"{column.description} ({column.unit})" if column.unit else column.description
        if column.personal_data != dataset.personal_data:
            text += f" [{column.personal_data}]"
        lead = f"    {column.name:<{name_width}}  {column.type or 'missing':<{type_width}}  "
        lines.append(lead + "\n".join(wrapped(text, indent)))
    return lines


def hit_lines(hit: Hit, glossary: Glossary) -> list[str]:
    """One search hit: what it is, and the words that matched (a term in full)."""
    lines = [f"{hit.kind:<17} {hit.name}"]
    if hit.kind == "term":
        term = glossary.terms[hit.name]
        lines += [
            term.definition,
            f"unit: {term.unit or '-'}; formula: {term.formula}",
            f"computed by: {term.computed_by} ({', '.join(term.columns)})",
        ]
    else:
        lines.append(hit.about)
        if hit.field not in {"name", "description"}:
            lines.append(f"{hit.field}: {hit.text}")
    return [lines[0], *(w for line in lines[1:] for w in indented(line, 18))]


def report_lines(found: AuditReport, counted: list[ReadCount], note: str | None) -> list[str]:
    """The audit report: counts by action and actor, ingest totals, reads, every other action."""
    period = f"{found.start:%Y-%m-%d %H:%M} to {found.end:%Y-%m-%d %H:%M} UTC"
    lines = [f"audit trail, {period}", ""]
    lines += table(
        ("action", "actor", "application", "entries", "first", "last"),
        [
            (c.action, c.actor, c.application or "-", f"{c.entries:,}",
             f"{c.first:%Y-%m-%d %H:%M:%S}", f"{c.last:%Y-%m-%d %H:%M:%S}")
            for c in found.counts
        ],
    )  # fmt: skip
    ingest = (
        f"ingest: {found.batches:,} batches, {found.readings_stored:,} readings stored,"
        f" {found.estimates_replaced:,} estimates replaced by read values"
    )
    lines += ["", ingest, "", "reads of personal data (pgaudit):"]
    if note is not None:
        lines.append(f"  not available: {note}")
    elif not counted:
        lines.append("  none logged in the period (enabled by `governance audit enable-reads`)")
    else:
        lines += [
            "  " + line
            for line in table(
                ("login", "application", "relation", "statements", "first", "last"),
                [
                    (r.user, r.application or "-", r.relation, f"{r.statements:,}",
                     f"{r.first:%Y-%m-%d %H:%M:%S}", f"{r.last:%Y-%m-%d %H:%M:%S}")
                    for r in counted
                ],
            )
        ]  # fmt: skip
    lines += [
        "",
        f"other actions ({len(found.actions)}):",
    ]
    for action in found.actions:
        lines.append(
            f"  {action['entry_id']:>8}  {action['at']:%Y-%m-%d %H:%M:%S}  {action['action']:<19}"
            f" {action['object']}  by {action['actor']}"
        )
        lines += indented(json.dumps(action["detail"]), 12)
    return lines


def retention_lines(removals: list[Removal], kept: list[Kept], *, dry_run: bool) -> list[str]:
    """What retention removed (or would), per dataset, and what it keeps and why."""
    rows = []
    for r in removals:
        what = (
            f"{len(r.parts)} {r.method.split()[-1]}"
            if r.method != "delete rows"
            else f"{r.rows:,} rows"
        )
        rows.append((r.object, r.retention, f"{r.cutoff:%Y-%m-%d %H:%M}", r.method, what))
    header = ("dataset", "retention", "before (UTC)", "how", "would go" if dry_run else "removed")
    lines = table(header, rows)
    lines += [f"  {r.object}: {', '.join(r.parts)}" for r in removals if r.parts]
    lines += ["", "kept:"] + [f"  {k.object} ({k.retention}): {k.reason}" for k in kept]
    if dry_run:
        lines += ["", "dry run: nothing removed"]
    return lines


def versions_lines(found: History, current: str) -> list[str]:
    """Schema steps, dictionary versions (the release's marked) and the data's producers."""
    lines = ["schema:"]
    lines += [
        f"  {s.version:>3}  {s.name:<26} applied {s.applied_at:%Y-%m-%d %H:%M}"
        for s in found.schema
    ]
    lines += ["", "data dictionary:"]
    lines += [
        f"  {short(d.digest)}  release {d.release:<8} recorded {d.recorded_at:%Y-%m-%d %H:%M}"
        + ("  (this release's)" if d.digest == current else "")
        for d in found.dictionaries
    ]
    if current not in {d.digest for d in found.dictionaries}:
        lines.append(
            f"  {short(current)}  this release's, not recorded yet (run core-ingest migrate)"
        )
    lines += ["", "what produced the batches:"]
    rows = [
        (p.software_version, str(p.register_map_version), p.validation_ruleset or "-",
         p.pseudonym_key_id, p.core_version, f"{p.batches:,}", str(p.agents),
         f"{p.first:%Y-%m-%d %H:%M}", f"{p.last:%Y-%m-%d %H:%M}")
        for p in found.producers
    ]  # fmt: skip
    header = ("edge", "map", "ruleset", "key id", "core", "batches", "agents", "first", "last")
    lines += (
        ["  " + line for line in table(header, rows)] if rows else ["  no batches in the period"]
    )
    return lines


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


def _details(detail: dict[str, object]) -> str:
    return ", ".join(f"{k} {v}" for k, v in detail.items())


def reading_lines(found: ReadingTrace) -> list[str]:
    """One reading's chain, step by step, then the batch, a correction, the rollups."""
    meter = found.meter
    lines = [
        f"reading of meter {meter.pseudonyms[-1]}",
        f"  interval ending {_when(found.interval_end)} UTC: {found.energy_wh:,} Wh"
        f" (register {found.register_wh:,} Wh), {found.provenance}"
        + (f", flags {' '.join(found.quality_flags)}" if found.quality_flags else ""),
        f"  meter: {meter.role} at substation {meter.substation}, region {meter.region}"
        + (
            f"; earlier pseudonyms {', '.join(meter.pseudonyms[:-1])}"
            if len(meter.pseudonyms) > 1
            else ""
        ),
        "",
        "chain:",
    ]
    for step in found.steps:
        lines.append(
            f"  {step['step_no']}. {step['step']:<12} {_when(step['at'])}  {step['actor']}"
        )
        lines += indented(_details(step["detail"]), 7)
    lines += ["", *batch_lines(found.batch)]
    if found.correction:
        c = found.correction
        lines += [
            "",
            (
                f"replaced an estimate: {c['estimated_energy_wh']:,} Wh"
                f" ({' '.join(c['estimated_flags'])}) of batch {c['estimated_batch_id']},"
                f" at {_when(c['corrected_at'])}"
            ),
        ]
    lines += ["", "counted in:"]
    lines += [
        f"  {r['table']} {_when(r['period'])}: {r['energy_wh']:,} Wh from {r['received']:,} read"
        f" and {r['estimated']:,} estimated readings"
        for r in found.rollups
    ] or ["  no rollup (rollups count customer meters only)"]
    return lines


def batch_lines(found: BatchTrace) -> list[str]:
    """A batch's ledger facts, signature, audit entry and versions."""
    b = found.batch
    return [
        (
            f"batch {b.agent_id}/{b.sequence} (ledger batch_id {b.batch_id}),"
            f" substation {b.substation}, region {b.region}"
        ),
        f"  signed by {b.agent_id} at {_when(b.created_at)}; key sha256 {found.agent_key_sha256}",
        f"  header sha256 {found.header_sha256} (what the signature covers)",
        f"  payload sha256 {found.payload_sha256}",
        f"  received {_when(b.received_at)}, committed {_when(b.committed_at)}",
        (
            f"  edge {b.software_version}, register map {b.register_map_version},"
            f" ruleset {b.validation_ruleset or '-'}, pseudonym key {b.pseudonym_key_id},"
            f" core {b.core_version}"
        ),
        (
            f"  schema version {found.schema_version}, dictionary"
            f" {(found.dictionary_version or '-')[:12]} at its commit"
        ),
        f"  devices: {', '.join(b.devices)}",
        (
            f"  {b.meter_readings:,} readings sent, {b.readings_stored:,} stored,"
            f" {found.estimates_replaced:,} estimates replaced, {found.quarantined:,} quarantined,"
            f" {found.refused_values:,} values refused; {b.telemetry_points:,} telemetry points"
        ),
        f"  audit entry {found.audit_entry} ({(found.audit_hash or '-')[:16]}...)"
        if found.audit_entry
        else "  audit entry: none (committed before the audit trail existed)",
    ]


def meter_day_lines(found: MeterDay) -> list[str]:
    """A meter's day: its counts, then each interval with its provenance and batch."""
    lines = [
        (
            f"meter {found.meter.pseudonyms[-1]}, {found.day}: {found.read} read,"
            f" {found.estimated} estimated, {found.missing} missing of 96"
        ),
        f"batches: {', '.join(found.batches) or '-'}",
        "",
    ]
    lines += table(
        ("interval end", "Wh", "provenance", "flags", "batch"),
        [
            (f"{i['interval_end'].astimezone(dt.UTC):%H:%M}", f"{i['energy_wh']:,}",
             i["provenance"], " ".join(i["flags"]) or "-", i["batch"])
            for i in found.intervals
        ],
    )  # fmt: skip
    return lines


def rollup_lines(found: RollupTrace) -> list[str]:
    """A rollup row against the sums of the stored readings, and the batches behind it."""

    def figures(row: dict[str, int] | None) -> str:
        if row is None:
            return "no row"
        return (
            f"{row['energy_wh']:,} Wh, {row['received']:,} read, {row['estimated']:,} estimated,"
            f" {row['suspect']:,} suspect"
        )

    lines = [
        f"{found.table} {found.substation} {_when(found.period)} UTC",
        f"  stored:          {figures(found.stored)}",
        f"  readings now:    {figures(found.summed)}",
        "  " + ("consistent" if found.consistent else "differs: readings were changed or removed"
                " since (retention, corrections), or the rollup was"),
        "",
    ]  # fmt: skip
    lines += table(
        ("batch", "readings", "Wh", "estimated"),
        [
            (b["batch"], f"{b['readings']:,}", f"{b['energy_wh']:,}", f"{b['estimated']:,}")
            for b in found.batches
        ],
    )
    return lines


def grant_lines(document: dict[str, dict[str, list[str]]]) -> list[str]:
    """The grants ``access init`` applied: object, then each role's privileges."""
    rows = [
        (name, role, ", ".join(privileges))
        for name, roles in sorted(document.items())
        for role, privileges in sorted(roles.items())
    ]
    return table(("object", "role", "privileges"), rows)


def export_lines(document: dict[str, Any]) -> list[str]:
    """What ``export`` wrote and measured."""
    classes = "kept" if document["customer_classes_kept"] else "generalized to any"
    diverse = f", l={document['l']}" if document["l"] is not None else ""
    nearest = document["median_nearest_profile_wh_before"]
    return [
        (
            f"export {document['export_id']}: {document['meters']:,} meters written to"
            f" {document['file']} ({document['suppressed']:,} suppressed)"
        ),
        f"  generalized to: {document['area_level']}, customer classes {classes}",
        f"  measured (pycanon): k={document['k']}{diverse}",
        (
            f"  profiles unique before aggregation: {document['profiles_unique_before']:.0%}"
            f" (median distance to the nearest other: {nearest:,.0f} Wh);"
            f" after: {document['profiles_unique_after']}"
        ),
        f"  pseudonym keys: {', '.join(document['key_ids']) or '-'}",
        f"  sha256 {document['sha256']}; audit entry {document['audit_entry']}",
    ]


def erasure_lines(document: dict[str, Any]) -> list[str]:
    """What ``subject erase`` removed: each table's rows before and after."""
    rows = [
        (table, f"{before:,}", f"{document['after'][table]:,}")
        for table, before in document["before"].items()
    ]
    receipt = document["edge_receipt"]
    edge = (
        f"gateway buffer: {receipt['agent_id']} erased it at {receipt['erased_at']}"
        f" (sha256 {receipt['sha256']})"
        if receipt
        else "gateway buffer: no receipt given (run `edge-agent subject erase` there)"
    )
    return [
        f"erased meter ids {document['meter_ids']} ({len(document['pseudonyms'])} pseudonyms)",
        *table(("table", "rows before", "after"), rows),
        f"rollup rows corrected: {document['rollup_rows_corrected']}",
        edge,
        f"sha256 of the rows deleted {document['sha256']}; audit entry {document['audit_entry']}",
        (
            "next: restart the cores (they remember meter ids: a batch still carrying this"
            " meter would be stored under the erased id)"
        ),
    ]
