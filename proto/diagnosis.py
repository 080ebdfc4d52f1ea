"""Findings of a doctor command, and the one 80-column screen both daemons' doctors print.

``edge-agent doctor`` (a technician at a gateway) and ``core-ingest doctor`` (an operator at
the center) say what they looked at in the same shape: a part, a subject, a state, what was
seen in words and readable times, and what to do. Exit code 1 when anything needs action.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

OK, WARN, ACTION = "ok", "warn", "action"
TAGS = {OK: "ok", WARN: "warn", ACTION: "FIX"}
INDENT = 8  # where a finding's text starts, under its tag


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a doctor looked at: how it stands, and what to do when it needs action."""

    part: str  # a heading of the screen, e.g. device, buffer, database
    subject: str  # which one: a device's name, a key file, an agent, ...
    state: str  # ok, warn or action
    seen: str  # what was seen, in words and readable times
    todo: str = ""  # what to do (empty when nothing)


def needs_action(findings: Sequence[Finding]) -> bool:
    """Whether any finding needs action (a doctor then exits 1)."""
    return any(finding.state == ACTION for finding in findings)


def as_json(
    title: Mapping[str, Any], checked_ms: int, findings: Sequence[Finding]
) -> dict[str, Any]:
    """For ``--json``: ``title``'s keys, the time checked (ISO 8601) and the findings."""
    return {
        **title,
        "checked_at": iso(checked_ms),
        "needs_action": needs_action(findings),
        "findings": [asdict(finding) for finding in findings],
    }


def render(
    title: str, headings: Mapping[str, str], findings: Sequence[Finding], *, width: int = 80
) -> str:
    """The findings on one screen of ``width`` columns, grouped by part, advice under each."""
    lines = textwrap.wrap(title, width)
    for part, heading in headings.items():
        shown = [f for f in findings if f.part == part]
        if shown:
            lines.append(heading)
        for finding in shown:
            lines += textwrap.wrap(
                f"{finding.subject}: {finding.seen}",
                width,
                initial_indent=f"  {TAGS[finding.state]:<{INDENT - 3}} ",
                subsequent_indent=" " * INDENT,
                break_on_hyphens=False,
            )
            if finding.todo:
                lines += textwrap.wrap(
                    finding.todo,
                    width,
                    initial_indent=" " * INDENT + "-> ",
                    subsequent_indent=" " * (INDENT + 3),
                    break_on_hyphens=False,
                )
    actions = sum(finding.state == ACTION for finding in findings)
    if actions == 1:
        lines.append("1 finding needs action (FIX).")
    elif actions:
        lines.append(f"{actions} findings need action (FIX).")
    else:
        lines.append("Nothing needs action.")
    return "\n".join(lines)


def iso(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC, to the second."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def when(ms: int, at_ms: int) -> str:
    """A time a person reads at a glance: ``10:42:03 (14 s ago)``, the date when not today."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    today = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).date()
    shown = moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M")
    delta = (at_ms - ms) / 1000
    return f"{shown} ({duration(abs(delta))} {'ago' if delta >= 0 else 'from now'})"


def duration(seconds: float) -> str:
    """``14 s``, ``31 min``, ``2 h 3 min``, ``12 d``: as precise as a person needs."""
    minutes, hours = seconds / 60, seconds / 3600
    if seconds < 90:  # noqa: PLR2004 - below a minute and a half, seconds
        return f"{seconds:.0f} s"
    if minutes < 90:  # noqa: PLR2004
        return f"{minutes:.0f} min"
    if hours < 48:  # noqa: PLR2004
        return f"{hours:.0f} h {minutes % 60:.0f} min"
    return f"{hours / 24:.0f} d"
