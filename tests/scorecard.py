"""Reliability scorecards: what the field served against what reached the database, and how.

Every chaos scenario ends with one: each meter reading the simulator served (its own record,
not a log line) is looked up in the database by its pseudonym and interval end. It is stored
as received (read, with the served value), stored as an estimate although it was served,
stored with another value, or not stored at all (lost, unless still in the edge buffer).
Duplicates are rows beyond one for a reading; invented readings are stored as read though no
device served them (an estimate is allowed only where nothing was served). Telemetry: each
message the simulator published to the broker against the messages stored (one row per
metric, keyed by transformer and time).

With ``MP_CHAOS_RESULTS`` set (``scripts/chaos.sh`` sets it), each scenario's card is
appended to that file as a JSON line, which ``scripts/reliability_table.py`` renders into the
README's reliability section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from proto.quality import QualityFlag
from substation_sim.record import ServedReading

ESTIMATE = int(QualityFlag.ESTIMATED)
FULL = os.environ.get("MP_CHAOS") == "full"  # scripts/chaos.sh: the full scenarios; CI: reduced


def scaled(reduced: int, full: int) -> int:
    """``full`` in a full chaos run, ``reduced`` in the test suite."""
    return full if FULL else reduced


@dataclass(frozen=True, slots=True)
class Scorecard:
    """One scenario's outcome, counted reading by reading."""

    scenario: str
    served: int
    as_received: int
    as_estimated: int
    wrong_value: int
    lost: int
    duplicated: int
    invented: int = 0  # stored as read, though no device served it
    telemetry_published: int = 0
    telemetry_stored: int = 0
    telemetry_duplicated: int = 0
    recovery_s: float | None = None
    detail: str = ""

    def named(self, scenario: str) -> Scorecard:
        """The same card under the scenario's name."""
        return dataclasses.replace(self, scenario=scenario)

    def problems(self) -> list[str]:
        """Every way the scenario broke a guarantee (empty: none)."""
        found = [
            f"{count:,} {what}"
            for count, what in (
                (self.as_estimated, "served readings stored as estimates"),
                (self.wrong_value, "readings stored with another value than served"),
                (self.lost, "served readings lost"),
                (self.duplicated, "readings stored more than once"),
                (self.invented, "readings stored as read that no device served"),
                (self.telemetry_published - self.telemetry_stored, "telemetry messages lost"),
                (self.telemetry_duplicated, "telemetry messages stored twice"),
            )
            if count
        ]
        if self.as_received + self.as_estimated + self.wrong_value + self.lost != self.served:
            found.append("the counts do not add up to the readings served")
        return found


def pseudonym(key: bytes, serial: int) -> bytes:
    """The meter's pseudonym under the agent's key, as the agent computes it."""
    return hmac.digest(key, str(serial).encode(), hashlib.sha256)


def score(  # noqa: PLR0913 - what the card is computed from
    scenario: str,
    *,
    served: list[ServedReading],
    pseudonym_key: bytes,
    dsn: str,
    published: Sequence[tuple[str, int]] = (),
    recovery_s: float | None = None,
    detail: str = "",
) -> Scorecard:
    """Count ``served`` readings and ``published`` messages against the database at ``dsn``."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT m.pseudonym, extract(epoch FROM interval_end)::bigint + clock_offset_s,"
            " energy_wh, register_wh, quality_flags FROM meter_readings"
            " JOIN meters m USING (meter_id)"
        ).fetchall()
        telemetry = conn.execute(
            "SELECT transformer_id, (extract(epoch FROM time) * 1000)::bigint, count(*)"
            " FROM transformer_telemetry WHERE metric = 'hot_spot_c' GROUP BY 1, 2"
        ).fetchall()
    copies = Counter((bytes(m), end) for m, end, *_ in rows)
    stored = {(bytes(m), end): (wh, reg, flags) for m, end, wh, reg, flags in rows}
    keys = {(pseudonym(pseudonym_key, r.serial), r.interval_end): r for r in served}
    outcome: Counter[str] = Counter()
    for key, reading in keys.items():
        found = stored.get(key)
        if found is None:
            outcome["lost"] += 1
        elif found[2] & ESTIMATE:
            outcome["estimated"] += 1
        elif found[:2] != (reading.energy_wh, reading.register_wh):
            outcome["wrong"] += 1
        else:
            outcome["received"] += 1
    return Scorecard(
        scenario=scenario,
        served=len(served),
        as_received=outcome["received"],
        as_estimated=outcome["estimated"],
        wrong_value=outcome["wrong"],
        lost=outcome["lost"],
        duplicated=sum(n - 1 for n in copies.values()),
        invented=sum(
            1 for key, (*_, flags) in stored.items() if not flags & ESTIMATE and key not in keys
        ),
        telemetry_published=len(published),
        telemetry_stored=len(telemetry),
        telemetry_duplicated=sum(n - 1 for *_, n in telemetry),
        recovery_s=recovery_s,
        detail=detail,
    )


def telemetry_missing(published: Sequence[tuple[str, int]], dsn: str) -> list[tuple[str, int]]:
    """The ``published`` messages (topic, simulated time) not stored, in publishing order."""
    with psycopg.connect(dsn) as conn:
        stored = set(
            conn.execute(
                "SELECT transformer_id, extract(epoch FROM time)::bigint"
                " FROM transformer_telemetry WHERE metric = 'hot_spot_c'"
            ).fetchall()
        )
    # topics are grid/<region>/<substation>/<transformer>/telemetry
    return [(t, at) for t, at in published if (t.split("/")[3], at) not in stored]


def settle(
    card_now: Callable[[], Scorecard],
    *,
    done: Callable[[Scorecard], bool] = lambda card: not card.problems(),
    timeout: float = 120,
) -> float | None:
    """Seconds until ``card_now()`` is ``done`` (no problem); None if not after ``timeout``.

    Score the scenario afterwards either way: the card says what is still wrong.
    """
    started = time.monotonic()
    while not done(card_now()):
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.5)
    return time.monotonic() - started


def record(card: Scorecard) -> Scorecard:
    """Append ``card`` to ``MP_CHAOS_RESULTS`` when set; return it."""
    if path := os.environ.get("MP_CHAOS_RESULTS"):
        with Path(path).open("a", encoding="utf-8") as results:
            results.write(json.dumps({"full": FULL, **dataclasses.asdict(card)}) + "\n")
    return card


def assert_clean(card: Scorecard) -> None:
    """Record the card, then fail naming every guarantee it broke."""
    record(card)
    assert card.problems() == [], f"{card.scenario}: {'; '.join(card.problems())}"
