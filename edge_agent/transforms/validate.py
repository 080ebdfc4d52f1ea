"""Validation, estimation and editing (VEE) of meter interval readings: ruleset ``vee-1``.

Pure: ``Validator.validate`` takes a poll's readings and the meters' states and returns the
flagged readings, estimates for missed intervals, quarantined readings with their reasons and
the new states. It mutates nothing, so the agent adopts the new states only after the buffer
committed the readings; a failed commit leaves validation exactly where it was.

Raw values are always kept: rules only set quality flags (``proto.quality.QualityFlag``).
Estimates are separate readings flagged ``ESTIMATED``. Two checks are hard and send the reading
to quarantine instead: a value beyond the physical limit, and a reading for an interval the
meter already delivered with different values. docs/validation.md explains every rule.
"""

from __future__ import annotations

import array
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.transforms.pseudonymize import PseudonymousReading
from proto.quality import SUSPECT, QualityFlag

RULESET_VERSION = "vee-1"
INTERVAL_SECONDS = 900
SLOTS_PER_DAY = 96
# Registers wrap at a power of ten (a 6-digit kWh register wraps at 10^9 Wh).
ROLLOVER_MODULI = tuple(10**digits for digits in range(6, 13))
NEAR_CAPACITY = 0.9
# Plain ints on the hot path: IntFlag arithmetic costs a microsecond per operation.
NEGATIVE, ZERO, SPIKE, STUCK = (
    int(QualityFlag.NEGATIVE),
    int(QualityFlag.ZERO),
    int(QualityFlag.SPIKE),
    int(QualityFlag.STUCK),
)
SUM_CHECK, TIME_SYNC = int(QualityFlag.SUM_CHECK), int(QualityFlag.TIME_SYNC)
ROLLOVER, METER_RESET = int(QualityFlag.ROLLOVER), int(QualityFlag.METER_RESET)
ESTIMATED = int(QualityFlag.ESTIMATED)
# Flags that mean the value itself is doubtful, not merely unusual for this meter.
REGISTER_SUSPECT = int(SUSPECT) & ~(SPIKE | ZERO | STUCK)
SUSPECT_BITS = int(SUSPECT)
# The time-of-day profile: 96 float32 values, NaN where the meter has no history yet.
EMPTY_PROFILE = array.array("f", [math.nan] * SLOTS_PER_DAY).tobytes()


def _profile_value(profile: bytes, slot: int) -> float:
    return struct.unpack_from("<f", profile, 4 * slot)[0]


def _profile_with(profile: bytes, slot: int, value: float) -> bytes:
    return profile[: 4 * slot] + struct.pack("<f", value) + profile[4 * slot + 4 :]


@dataclass(frozen=True, slots=True)
class VeeRules:
    """The ruleset's thresholds (``[validation]`` in the agent's configuration)."""

    spike_ratio: float = 3.0  # flag energy above (1 + ratio) x the reference
    spike_floor_wh: int = 50  # ... and at least this much above it
    zero_floor_wh: int = 20  # a zero is suspect where the meter usually uses this much
    consecutive_zeros: int = 4  # ... or when this many zeros come in a row
    stuck_repeats: int = 4  # the same non-zero value this many times in a row
    sum_tolerance_wh: int = 0  # allowed |register delta - energy|; raise for meters that round
    time_sync_seconds: int = 10  # allowed distance of the interval end from the grid
    linear_gap_intervals: int = 4  # gaps up to 1 hour: linear interpolation; longer: like-day
    max_estimate_intervals: int = 96 * 7  # longer gaps are left as gaps
    max_interval_energy_wh: int = 10_000_000  # hard limit: 40 MW for 15 minutes
    profile_weight: float = 0.2  # weight of a new value in the time-of-day profile


@dataclass(frozen=True, slots=True)
class MeterState:
    """What validation remembers about one meter between its readings."""

    interval_end: int = 0
    register_wh: int = 0
    last_energy_wh: int = 0  # the last raw value, for stuck detection
    last_valid_wh: int | None = None  # the last value no rule suspected
    repeats: int = 0
    zeros: int = 0
    profile: bytes = EMPTY_PROFILE  # 96 little-endian float32, NaN = no history for that slot


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A reading kept out of the batches, with the rule that refused it."""

    reading: PseudonymousReading
    reason: str


@dataclass(frozen=True, slots=True)
class Validation:
    """The outcome for one poll."""

    readings: list[PseudonymousReading]  # flagged readings and estimates, in time order
    quarantined: list[Quarantined]
    states: dict[bytes, MeterState]  # new states of the meters this poll touched
    dropped: int  # identical re-reads of intervals already buffered


def _slot(interval_end: int) -> int:
    return ((interval_end - INTERVAL_SECONDS // 2) // INTERVAL_SECONDS) % SLOTS_PER_DAY


def _rollover_modulus(
    previous: int, delta: int, measured: int | None, tolerance: int
) -> int | None:
    """The register capacity that explains a drop of ``delta`` as a wrap, if any.

    A wrap starts near the capacity (the last 10 % of it) and, when the energy since the last
    reading is known (``measured``), lands exactly where that energy puts it.
    """
    for modulus in ROLLOVER_MODULI:
        near_capacity = NEAR_CAPACITY * modulus <= previous < modulus
        if measured is None:
            fits = delta + modulus >= 0
        else:
            fits = abs(delta + modulus - measured) <= tolerance
        if near_capacity and fits:
            return modulus
    return None


def _split(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` into whole numbers that add up exactly."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    raw = [total * w / weight_sum for w in weights]
    parts = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


class Validator:
    """Applies one ruleset; holds no state of its own."""

    def __init__(self, rules: VeeRules | None = None) -> None:
        """Args: rules: the thresholds; the defaults are ruleset ``vee-1`` as documented."""
        self.rules = rules or VeeRules()

    def validate(
        self, readings: list[PseudonymousReading], states: Mapping[bytes, MeterState]
    ) -> Validation:
        """Flag, estimate and quarantine one poll's readings (one per meter)."""
        out: list[PseudonymousReading] = []
        quarantined: list[Quarantined] = []
        new_states: dict[bytes, MeterState] = {}
        dropped = 0
        fresh = MeterState()
        limit = self.rules.max_interval_energy_wh
        for reading in readings:
            state = states.get(reading.meter, fresh)
            # The hard checks in full only when a cheap test says one may apply.
            if (state.interval_end and reading.interval_end <= state.interval_end) or abs(
                reading.energy_wh
            ) > limit:
                refusal = self._hard_check(reading, state)
                if refusal == "":
                    dropped += 1
                elif refusal is not None:
                    quarantined.append(Quarantined(reading, refusal))
                continue
            flagged, estimates, new_states[reading.meter] = self._check(reading, state)
            if estimates:
                out.extend(estimates)
            out.append(flagged)
        return Validation(out, quarantined, new_states, dropped)

    def _hard_check(self, reading: PseudonymousReading, state: MeterState) -> str | None:
        """None: go on; "": an identical re-read to drop; otherwise the quarantine reason."""
        if abs(reading.energy_wh) > self.rules.max_interval_energy_wh:
            return f"energy {reading.energy_wh} Wh beyond the physical limit"
        if state.interval_end and reading.interval_end <= state.interval_end:
            same = (
                reading.interval_end == state.interval_end
                and reading.register_wh == state.register_wh
                and reading.energy_wh == state.last_energy_wh
            )
            if same:
                return ""
            return (
                "conflicting re-read of a delivered interval"
                if reading.interval_end == state.interval_end
                else "older than an interval already delivered"
            )
        return None

    def _check(
        self, reading: PseudonymousReading, state: MeterState
    ) -> tuple[PseudonymousReading, list[PseudonymousReading], MeterState]:
        """All rules for one reading (hot path: plain ints for flags, bytes for the profile)."""
        rules = self.rules
        flags = reading.quality_flags
        energy = reading.energy_wh
        end = reading.interval_end
        rest = end % INTERVAL_SECONDS
        if min(rest, INTERVAL_SECONDS - rest) > rules.time_sync_seconds:
            flags |= TIME_SYNC
        estimates: list[PseudonymousReading] = []
        if state.interval_end:
            register_flags, delta = self._register_check(reading, state)
            flags |= register_flags
            estimates = self._estimates(reading, state, delta, flags)
            if delta is not None and delta < energy - rules.sum_tolerance_wh:
                flags |= SUM_CHECK  # the register moved less than this interval alone
        slot = ((end - INTERVAL_SECONDS // 2) // INTERVAL_SECONDS) % SLOTS_PER_DAY
        usual = _profile_value(state.profile, slot)
        reference = state.last_valid_wh
        if usual == usual and (reference is None or usual > reference):  # noqa: PLR0124 - NaN test
            reference = usual
        zeros = state.zeros + 1 if energy == 0 else 0
        repeats = state.repeats + 1 if state.interval_end and energy == state.last_energy_wh else 0
        if energy < 0:
            flags |= NEGATIVE
        if energy == 0 and (
            zeros >= rules.consecutive_zeros
            or reference is None
            or reference >= rules.zero_floor_wh
        ):
            flags |= ZERO
        if (
            reference is not None
            and energy > (1 + rules.spike_ratio) * reference
            and energy - reference > rules.spike_floor_wh
        ):
            flags |= SPIKE
        if energy > 0 and repeats + 1 >= rules.stuck_repeats:
            flags |= STUCK
        # A value the register confirms is real even when unusual (a shift starting, a heater
        # switched on): it becomes the new reference, so a lasting change is flagged once,
        # not for ever. Without a register to compare, any suspicion keeps it out.
        valid = not flags & (REGISTER_SUSPECT if state.interval_end else SUSPECT_BITS)
        profile = state.profile
        if valid:
            learned = energy if usual != usual else usual + rules.profile_weight * (energy - usual)  # noqa: PLR0124
            profile = _profile_with(profile, slot, learned)
        new_state = MeterState(  # positional, in field order: this runs once per reading
            end,
            reading.register_wh,
            energy,
            energy if valid else state.last_valid_wh,
            repeats,
            zeros,
            profile,
        )
        flagged = PseudonymousReading(
            reading.meter,
            reading.interval_end,
            energy,
            reading.register_wh,
            flags,
            reading.poll_time_ms,
            reading.device,
        )
        return flagged, estimates, new_state

    def _register_check(
        self, reading: PseudonymousReading, state: MeterState
    ) -> tuple[int, int | None]:
        """Flags from the register, and the energy it measured since the last reading."""
        tolerance = self.rules.sum_tolerance_wh
        delta = reading.register_wh - state.register_wh
        flags = 0
        adjacent = reading.interval_end - state.interval_end == INTERVAL_SECONDS
        if delta < 0:
            measured = reading.energy_wh if adjacent else None
            modulus = _rollover_modulus(state.register_wh, delta, measured, tolerance)
            if modulus is None:
                return METER_RESET, None
            flags |= ROLLOVER
            delta += modulus
        if adjacent and abs(delta - reading.energy_wh) > tolerance:
            flags |= SUM_CHECK
        return flags, delta

    def _estimates(
        self, reading: PseudonymousReading, state: MeterState, delta: int | None, flags: int
    ) -> list[PseudonymousReading]:
        """Readings for the intervals the meter missed, from what its register measured."""
        elapsed = reading.interval_end - state.interval_end
        # A drifting clock moves interval ends off the grid: count whole intervals.
        gap = round(elapsed / INTERVAL_SECONDS) - 1
        if delta is None or gap < 1 or gap > self.rules.max_estimate_intervals or flags & SUM_CHECK:
            return []
        total = delta - reading.energy_wh
        if total < 0:
            return []
        ends = [state.interval_end + INTERVAL_SECONDS * (i + 1) for i in range(gap)]
        if gap <= self.rules.linear_gap_intervals:
            start = state.last_energy_wh
            weights = [
                max(0.0, start + (reading.energy_wh - start) * (i + 1) / (gap + 1))
                for i in range(gap)
            ]
        else:  # like-day: the meter's own profile for those times of day
            profile = array.array("f", state.profile)
            known = [v for v in profile if not math.isnan(v)]
            fallback = sum(known) / len(known) if known else 1.0
            by_slot = [profile[_slot(end)] for end in ends]
            weights = [fallback if math.isnan(v) else v for v in by_slot]
        register = state.register_wh
        estimates = []
        for end, energy in zip(ends, _split(total, weights), strict=True):
            register += energy
            estimates.append(
                PseudonymousReading(
                    reading.meter,
                    end,
                    energy,
                    register,
                    ESTIMATED,
                    reading.poll_time_ms,
                    reading.device,
                )
            )
        return estimates
