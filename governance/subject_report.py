"""The subject trace as a document: Markdown for a ticket or an e-mail, HTML for a browser.

Both are written from the same sections (a title, sentences, an optional table), so the two
formats always say the same thing; JSON is the trace itself.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass

from governance.subject import SubjectTrace

Row = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Section:
    """One part of the report."""

    title: str
    sentences: list[str]
    header: Row = ()
    rows: Sequence[Row] = ()


def _n(count: int, thing: str) -> str:
    """``1 correction``, ``2 corrections``."""
    return f"{count:,} {thing}" + ("" if count == 1 else "s")


def _t(moment: dt.datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M}"


def sections(found: SubjectTrace) -> list[Section]:
    """The report's parts, in the order an auditor reads them."""
    return [
        _subject(found),
        _readings(found),
        _producers(found),
        _corrections(found),
        _set_aside(found),
        _rotations(found),
        Section("Rollups", [_rollup_sentence(found.rollups)]),
        _changes(found),
        _exports(found),
        _access(found),
    ]


def _subject(found: SubjectTrace) -> Section:
    meter = found.meter
    named = ", ".join(f"`{p}`" for p in meter.pseudonyms)
    return Section(
        "The data subject",
        [
            f"Meter under {_n(len(meter.pseudonyms), 'pseudonym')}: {named}",
            f"A {meter.role} meter at substation {meter.substation}, region {meter.region}.",
        ],
    )


def _readings(found: SubjectTrace) -> Section:
    r = found.readings
    sentence = (
        f"{r['stored']:,} readings stored for intervals ending from {_t(r['first'])} to"
        f" {_t(r['last'])}: {r['read']:,} read from the meter, {r['estimated']:,} estimated by"
        f" the edge where the device held no value, {r['suspect']:,} flagged suspect; from"
        f" {r['batches']:,} signed batches."
    )
    rows = [(flag, f"{count:,}") for flag, count in found.flags.items()]
    return Section("Readings", [sentence], ("quality flag", "readings"), rows)


def _producers(found: SubjectTrace) -> Section:
    sentence = (
        "Each reading was read from the device (acquire), checked by the VEE ruleset or"
        " estimated, pseudonymized with the key named, signed by the agent, transmitted and"
        " ingested by the core:"
    )
    header = ("edge", "map", "ruleset", "key id", "core", "agent", "readings", "from", "to")
    rows = [
        (
            p["software_version"],
            str(p["register_map_version"]),
            p["validation_ruleset"] or "-",
            p["pseudonym_key_id"],
            p["core_version"],
            p["agent_id"],
            f"{p['readings']:,}",
            _t(p["first"]),
            _t(p["last"]),
        )
        for p in found.producers
    ]
    return Section("How they were produced", [sentence], header, rows)


def _corrections(found: SubjectTrace) -> Section:
    header = (
        "interval end",
        "estimated Wh",
        "read Wh",
        "estimate's batch_id",
        "read's batch_id",
        "at",
    )
    rows = [
        (
            _t(c["interval_end"]),
            f"{c['estimated_energy_wh']:,}",
            f"{c['energy_wh']:,}",
            str(c["estimated_batch_id"]),
            str(c["batch_id"]),
            _t(c["corrected_at"]),
        )
        for c in found.corrections
    ]
    sentence = f"{_n(len(found.corrections), 'correction')} in the period."
    return Section("Estimates replaced by read values", [sentence], header, rows)


def _set_aside(found: SubjectTrace) -> Section:
    sentence = (
        f"{_n(len(found.quarantined), 'reading')} quarantined (another value was stored first),"
        f" {_n(len(found.refused), 'value')} refused by the protocol's bounds."
    )
    rows = [
        (_t(q["interval_end"]), f"{q['energy_wh']:,} Wh", q["reason"], str(q["batch_id"]))
        for q in found.quarantined
    ]
    rows += [
        (_t(r["received_at"]), "refused value", r["reason"], str(r["batch_id"]))
        for r in found.refused
    ]
    header = ("interval end or received", "what", "reason", "batch_id")
    return Section("Values set aside", [sentence], header, rows)


def _rotations(found: SubjectTrace) -> Section:
    rows = [
        (
            f"{r['old'][:16]}...",
            f"{r['new'][:16]}...",
            r["old_key_id"],
            r["new_key_id"],
            r["agent_id"],
        )
        for r in found.rotations
    ]
    sentence = f"{_n(len(found.rotations), 'edge key rotation')} involving its pseudonyms."
    header = ("old pseudonym", "new pseudonym", "old key", "new key", "agent")
    return Section("Key rotations", [sentence], header, rows)


def _changes(found: SubjectTrace) -> Section:
    sentence = (
        "Entries of the audit trail in the period that changed or removed stored readings"
        " (any meter's: the statements are in the audit report) or applied retention:"
    )
    rows = [
        (str(c["entry_id"]), _t(c["at"]), c["actor"], c["action"], c["object"])
        for c in found.changes
    ]
    header = ("entry", "at", "actor", "action", "object")
    return Section("Changes to stored readings and retention", [sentence], header, rows)


def _exports(found: SubjectTrace) -> Section:
    sentence = (
        f"{_n(len(found.exports), 'anonymized export')} of the period's readings included the"
        " meter (its weekly profile averaged with at least k - 1 others', no identifier"
        " written):"
    )
    rows = [
        (
            str(e["export_id"]),
            _t(e["made_at"]),
            e["made_by"],
            e["dataset"],
            f"k={e['k']}" + (f", l={e['l']}" if e["l"] else ""),
            e["area_level"],
            e["file_name"],
        )
        for e in found.exports
    ]
    header = ("export", "at", "by", "dataset", "target", "area level", "file")
    return Section("Anonymized exports", [sentence], header, rows)


def _rollup_sentence(rollups: dict[str, object]) -> str:
    if "note" in rollups:
        return f"Counted in no rollup: {rollups['note']}."
    return (
        f"Counted in {rollups['hourly']:,} hourly and {rollups['daily']:,} daily rollup rows of"
        f" substation {rollups['substation']} (region {rollups['region']}), which are public"
        " aggregates."
    )


def _access(found: SubjectTrace) -> Section:
    if found.reads_unavailable is not None:
        unavailable = f"Reads of personal data: not available ({found.reads_unavailable})."
        return Section("Access", [unavailable])
    sentences = [
        (
            "Reads of personal-data tables in the period, by login (pgaudit); those whose"
            f" statement names this meter: {len(found.reads_naming)}."
        ),
        *(
            f"{_t(r['at'])} {r['user']} ({r['application'] or '-'}) read"
            f" {', '.join(r['relations'])}: {r['statement']}"
            for r in found.reads_naming
        ),
    ]
    header = ("login", "application", "relation", "statements", "first", "last")
    rows = [
        (r.user, r.application or "-", r.relation, f"{r.statements:,}", _t(r.first), _t(r.last))
        for r in found.reads
    ]
    return Section("Access", sentences, header, rows)


def title(found: SubjectTrace) -> str:
    """What the report is about."""
    return (
        f"Data of meter {found.meter.pseudonyms[-1][:16]}..., {_t(found.start)} to"
        f" {_t(found.end)} UTC"
    )


def markdown(found: SubjectTrace) -> str:
    """The report as Markdown."""
    lines = [f"# {title(found)}", ""]
    for section in sections(found):
        lines += [f"## {section.title}", "", *(f"{s}\n" for s in section.sentences)]
        if section.rows:
            lines.append("| " + " | ".join(section.header) + " |")
            lines.append("| " + " | ".join("---" for _ in section.header) + " |")
            lines += [
                "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                for row in section.rows
            ]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


STYLE = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #bbb;padding:.2em .6em;text-align:left}th{background:#eee}"
)


def html_page(found: SubjectTrace) -> str:
    """The report as one self-contained HTML page."""
    heading = html.escape(title(found))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{heading}</title>",
        f"<style>{STYLE}</style></head><body><h1>{heading}</h1>",
    ]
    for section in sections(found):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(s.replace('`', ''))}</p>" for s in section.sentences]
        if section.rows:
            parts.append(_html_row("th", section.header).join(("<table>", "")))
            parts += [_html_row("td", row) for row in section.rows]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_row(cell: str, values: Row) -> str:
    return "<tr>" + "".join(f"<{cell}>{html.escape(v)}</{cell}>" for v in values) + "</tr>"
