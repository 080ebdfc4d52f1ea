"""Write the last chaos run's scorecards into the README's reliability table.

Reads the JSON lines ``scripts/chaos.sh`` collected (one scorecard per scenario,
``tests/scorecard.py``) and replaces what stands between the README's
``<!-- reliability:begin -->`` and ``<!-- reliability:end -->`` markers with a table: per
scenario, the readings served and how they were stored, the telemetry messages, and how long
the store took to become complete after the scenario ended.

Usage: python scripts/reliability_table.py RESULTS.jsonl README.md
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
HEADER = (
    "| scenario | readings served | stored as received | stored as estimated | other value"
    " | lost | duplicated | stored, never served | telemetry published / stored (duplicated)"
    " | complete after |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def row(card: dict) -> str:
    """One scenario's line of the table."""
    recovery = card["recovery_s"]
    telemetry = (
        f"{card['telemetry_published']:,} / {card['telemetry_stored']:,}"
        f" ({card['telemetry_duplicated']:,})"
        if card["telemetry_published"]
        else "-"
    )
    detail = f" ({card['detail']})" if card["detail"] else ""
    return (
        f"| {card['scenario']}{detail} | {card['served']:,} | {card['as_received']:,}"
        f" | {card['as_estimated']:,} | {card['wrong_value']:,} | {card['lost']:,}"
        f" | {card['duplicated']:,} | {card['invented']:,} | {telemetry}"
        f" | {'not complete' if recovery is None else f'{recovery:.1f} s'} |\n"
    )


def table(cards: list[dict]) -> str:
    """The block between the markers."""
    strength = "full" if cards and all(card["full"] for card in cards) else "reduced"
    return (
        f"Last {strength} run, {dt.datetime.now(dt.UTC):%Y-%m-%d} (`bash scripts/chaos.sh`,"
        f" {len(cards)} scenarios):\n\n" + HEADER + "".join(row(card) for card in cards)
    )


def main() -> int:
    """Rewrite the README's block; exit 1 when the markers are missing."""
    results, readme = Path(sys.argv[1]), Path(sys.argv[2])
    cards = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{readme}: no {BEGIN} ... {END} block to fill", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table(cards)}{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
