"""Score the VEE ruleset against the simulator's ground truth (used by tests/test_validate.py).

Runs a scenario's field in-process for a day, feeds every served reading through the
validator, and compares its flags and estimates with the injected faults:
recall = detected injected errors / injected errors; false-positive rate = clean readings
flagged suspect / clean readings.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.config import VeeRules
from edge_agent.transforms.pseudonymize import PseudonymousReading
from edge_agent.transforms.validate import MeterMemory, Validator
from proto.quality import SUSPECT, QualityFlag
from substation_sim import Field, FieldRecord, load_scenario

VALUE_FAULTS = {"spike", "zero", "negative", "stuck", "storm"}


@dataclass
class Score:
    """Detected and missed injected errors by kind; clean readings and false alarms."""

    injected: Counter[str] = field(default_factory=Counter)
    detected: Counter[str] = field(default_factory=Counter)
    warm_up_missed: int = 0  # errors in a meter's first interval: no history to judge by
    clean: int = 0
    false_positives: int = 0
    false_by_flag: Counter[str] = field(default_factory=Counter)
    readings: int = 0

    @property
    def recall(self) -> float:
        """Over every injected error after each meter's first interval."""
        return sum(self.detected.values()) / max(1, sum(self.injected.values()))

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / max(1, self.clean)


def validated_intervals(
    field_: Field, record: FieldRecord, intervals: int, rules: VeeRules | None = None
) -> Iterator[list[PseudonymousReading]]:
    """Close ``intervals`` intervals one by one; yield each one's validated readings.

    Every served meter reading (feeder heads left out) goes through the VEE validator with
    the meter's serial as its pseudonym, as the agent would after one poll of every device;
    the yielded readings carry their quality flags, estimates included.
    """
    validator = Validator(rules)
    memory = MeterMemory()
    seen = 0
    for _ in range(intervals):
        field_.close_interval()
        rows = record._db.execute(
            "SELECT rowid, device, serial, interval_end, energy_wh, register_wh FROM served"
            " WHERE rowid > ? AND device NOT LIKE '%-FH' ORDER BY rowid",
            (seen,),
        ).fetchall()
        seen = rows[-1][0] if rows else seen
        readings = [
            PseudonymousReading(
                serial.to_bytes(32, "big"), end, energy, register, 0, (end + 5) * 1000, device
            )
            for _, device, serial, end, energy, register in rows
        ]
        result = validator.validate(readings, memory)
        memory.adopt(result)
        yield result.readings


def _run(scenario: str, intervals: int, rules: VeeRules | None, folder: Path) -> tuple:
    record = FieldRecord(folder / "record.sqlite")
    field_ = Field(load_scenario(scenario), record=record)
    flags: dict[tuple[int, int], int] = {}
    estimated: set[tuple[int, int]] = set()
    for readings in validated_intervals(field_, record, intervals, rules):
        for reading in readings:
            key = (int.from_bytes(reading.meter, "big"), reading.interval_end)
            if reading.quality_flags & QualityFlag.ESTIMATED:
                estimated.add(key)
            else:
                flags[key] = reading.quality_flags
    return record, flags, estimated


def score(scenario: str = "storm", *, intervals: int = 96, rules: VeeRules | None = None) -> Score:
    """Run and score one scenario.

    Errors injected in the very first interval are counted apart (``warm_up_missed`` when
    undetected): a meter's first reading has no history, so only absolute rules can apply.
    """
    with tempfile.TemporaryDirectory() as tmp:
        record, flags, estimated = _run(scenario, intervals, rules, Path(tmp))
        truth = record.truth()
        record.close()
    skew = {
        (t.device, int(t.start)): int(t.served_value) - int(t.true_value)
        for t in truth
        if t.kind == "clock_skew"
    }
    result = Score(readings=len(flags))
    affected: set[tuple[int, int]] = set()
    first_end = min(end for _, end in flags)
    for row in truth:
        if row.subject is None or not row.subject.isdigit():
            continue
        serial, end = int(row.subject), row.start
        reported = (serial, end + skew.get((row.device, end), 0))
        affected.add(reported)
        if row.kind == "missing":
            hit = reported in estimated
        elif row.kind == "rollover":
            hit = bool(flags.get(reported, 0) & QualityFlag.ROLLOVER)
        elif row.kind == "reset":
            hit = bool(flags.get(reported, 0) & QualityFlag.METER_RESET)
        else:
            hit = bool(flags.get(reported, 0) & SUSPECT)
        if end <= first_end and not hit:
            result.warm_up_missed += 1
            continue
        result.injected[row.kind] += 1
        result.detected[row.kind] += hit
    skewed_devices = {(device, end + shift) for (device, end), shift in skew.items()}
    result.injected["clock_skew"] += len(skew)
    for key, value in flags.items():
        if key in affected:
            continue
        result.clean += 1
        if value & SUSPECT and not value & QualityFlag.TIME_SYNC:
            result.false_positives += 1
            result.false_by_flag[str(QualityFlag(value & SUSPECT))] += 1
    time_sync_hits = {key[1] for key, value in flags.items() if value & QualityFlag.TIME_SYNC}
    result.detected["clock_skew"] += sum(end in time_sync_hits for _, end in skewed_devices)
    return result
