"""Validation, estimation and editing (VEE) of meter interval readings: ruleset ``vee-1``.

Pure: ``Validator.validate`` takes a poll's readings and what validation remembers of the
meters (``MeterMemory``) and returns the flagged readings, estimates for missed intervals,
quarantined readings with their reasons, the new states and the profile values learned. It
changes nothing, so the agent adopts the outcome (``MeterMemory.adopt``) only after the buffer
committed the readings; a failed commit leaves validation exactly where it was.

Raw values are always kept: rules only set quality flags (``proto.quality.QualityFlag``).
Estimates are separate readings flagged ``ESTIMATED``. Hard checks send the reading to
quarantine instead: a value outside the bounds the core accepts (``proto.limits``: interval end,
energy, register), and a reading for the interval the meter delivered last, with different
values. A refused reading still takes its interval: no estimate is ever built across it, since
that estimate would be made of the refused values. A real reading older than the meter's newest
is passed on as late: it replaces an estimate of the same interval, in the buffer or at the
core (a reading the device held is never an estimate). docs/validation.md explains every rule.
"""

from __future__ import annotations

import array
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from edge_agent.config import VeeRules
from edge_agent.transforms.pseudonymize import PseudonymousReading
from proto import limits
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
# A time-of-day profile: 96 float32 values, NaN where the meter has no history yet.
EMPTY_PROFILE = array.array("f", [math.nan] * SLOTS_PER_DAY)
FIRST_INTERVAL = 900  # seconds after midnight UTC of a day's first interval end
LATE = "late"  # a hard check's verdict: a real reading older than the meter's newest


class MeterState(NamedTuple):
    """What validation remembers about one meter between its readings (built per reading)."""

    interval_end: int = 0
    register_wh: int = 0
    last_energy_wh: int = 0  # the last raw value, for stuck detection
    last_valid_wh: int | None = None  # the last value no rule suspected
    repeats: int = 0
    zeros: int = 0


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
    learned: list[tuple[bytes, int, float]]  # (meter, profile slot, new profile value)
    dropped: int  # identical re-reads of intervals already buffered
    # Real readings of intervals older than the meter's newest: each replaces an estimate of
    # the same interval (in the buffer while pending, at the core once sent) or is dropped
    # there as a copy of what is stored.
    late: list[PseudonymousReading]


class MeterMemory:
    """What validation remembers of every meter: its state and its time-of-day profile.

    ``Validator.validate`` only reads it; ``adopt`` applies a poll's outcome once the buffer has
    committed it. The profiles live in one float32 array, 96 values a meter, changed in place:
    a gateway's 20,000 meters take 7.7 MB, and a poll allocates no copies of them (one 384-byte
    profile per meter and reading used to be the agent's largest allocation).
    """

    def __init__(
        self,
        states: Mapping[bytes, MeterState] | None = None,
        profiles: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Start from what the buffer saved.

        Args:
            states: each meter's state.
            profiles: (meter, profile) pairs, a profile as 96 little-endian float32.

        """
        self.states: dict[bytes, MeterState] = dict(states or {})
        self._offsets: dict[bytes, int] = {}
        self._values = array.array("f")
        for meter, saved in profiles:
            values = array.array("f", saved)
            if len(values) != SLOTS_PER_DAY:
                continue  # not a profile this code wrote: the meter learns a new one
            if sys.byteorder == "big":
                values.byteswap()
            offset = self._offset(meter)
            self._values[offset : offset + SLOTS_PER_DAY] = values

    def _offset(self, meter: bytes) -> int:
        """Where the meter's profile starts in the array, appended (all NaN) when new."""
        offset = self._offsets.get(meter)
        if offset is None:
            offset = self._offsets[meter] = len(self._values)
            self._values.extend(EMPTY_PROFILE)
        return offset

    def usual(self, meter: bytes, slot: int) -> float:
        """The meter's profile value for a time-of-day slot; NaN without history."""
        offset = self._offsets.get(meter)
        return math.nan if offset is None else self._values[offset + slot]

    def profile(self, meter: bytes) -> array.array[float]:
        """A copy of the meter's 96 profile values (NaN where it has no history)."""
        offset = self._offsets.get(meter)
        if offset is None:
            return array.array("f", EMPTY_PROFILE)
        return self._values[offset : offset + SLOTS_PER_DAY]

    def adopt(self, checked: Validation) -> None:
        """Take a committed poll's new states and learned profile values."""
        self.states.update(checked.states)
        values, offset = self._values, self._offset
        for meter, slot, value in checked.learned:
            values[offset(meter) + slot] = value

    def saved_profile(self, meter: bytes) -> bytes:
        """The meter's profile in the buffer's layout (96 little-endian float32)."""
        values = self.profile(meter)
        if sys.byteorder == "big":
            values.byteswap()
        return values.tobytes()

    def day_start_profiles(self, checked: Validation) -> Iterator[tuple[bytes, bytes]]:
        """Profiles to save with a poll: of meters with history whose reading opens a UTC day.

        Saving each profile once a day (and all at shutdown, ``saved_profiles``) keeps the
        commit small; a crash forgets at most a day of learning. The profiles are copied one
        at a time as the buffer writes them (in its thread: each copy is one call under the
        GIL), so polls waiting for the disk hold no copies.
        """
        for meter, state in checked.states.items():
            if state.interval_end % 86_400 <= FIRST_INTERVAL and meter in self._offsets:
                yield meter, self.saved_profile(meter)

    def saved_profiles(self) -> Iterator[tuple[bytes, bytes]]:
        """Every meter's profile in the buffer's layout, one at a time."""
        for meter in list(self._offsets):
            yield meter, self.saved_profile(meter)


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


def _state_after_refusal(reading: PseudonymousReading, state: MeterState) -> MeterState | None:
    """The meter's state once ``reading`` went to quarantine (None: unchanged).

    A refused reading newer than the meter's state, with a believable interval end, still
    takes its interval: otherwise the next reading would see a gap there and estimate it from
    the register, which carries the refused value. With a usable register the next reading is
    checked against it; without one the meter starts afresh (no register check, no estimate).
    """
    end = reading.interval_end
    if state.interval_end and end <= state.interval_end:
        return None
    if (
        not limits.EARLIEST_INTERVAL_END_S
        <= end
        <= (reading.poll_time_ms // 1000 + limits.MAX_AHEAD_SECONDS)
    ):
        return None  # the interval end itself is not believable
    if 0 <= reading.register_wh <= limits.MAX_REGISTER_WH:
        return state._replace(interval_end=end, register_wh=reading.register_wh)
    return state._replace(interval_end=0, register_wh=0)


class Validator:
    """Applies one ruleset; holds no state of its own."""

    def __init__(self, rules: VeeRules | None = None) -> None:
        """Args: rules: the thresholds; the defaults are ruleset ``vee-1`` as documented."""
        self.rules = rules or VeeRules()

    def validate(self, readings: list[PseudonymousReading], memory: MeterMemory) -> Validation:
        """Flag, estimate and quarantine one poll's readings (one per meter)."""
        out: list[PseudonymousReading] = []
        quarantined: list[Quarantined] = []
        new_states: dict[bytes, MeterState] = {}
        learned: list[tuple[bytes, int, float]] = []
        dropped = 0
        late: list[PseudonymousReading] = []
        fresh = MeterState()
        states = memory.states
        limit = self.rules.max_interval_energy_wh
        earliest, ahead = limits.EARLIEST_INTERVAL_END_S, limits.MAX_AHEAD_SECONDS
        for reading in readings:
            state = states.get(reading.meter, fresh)
            end = reading.interval_end
            # The hard checks in full only when a cheap test says one may apply.
            if (
                (state.interval_end and end <= state.interval_end)
                or abs(reading.energy_wh) > limit
                or not earliest <= end <= reading.poll_time_ms // 1000 + ahead
                or not 0 <= reading.register_wh <= limits.MAX_REGISTER_WH
            ):
                refusal = self._hard_check(reading, state)
                if not refusal:
                    dropped += 1
                    continue
                if refusal == LATE:
                    late.append(self._late(reading))
                    continue
                quarantined.append(Quarantined(reading, refusal))
                after = _state_after_refusal(reading, state)
                if after is not None:
                    new_states[reading.meter] = after
                continue
            flagged, estimates, new_states[reading.meter] = self._check(
                reading, state, memory, learned
            )
            if estimates:
                out.extend(estimates)
            out.append(flagged)
        return Validation(out, quarantined, new_states, learned, dropped, late)

    def _hard_check(self, reading: PseudonymousReading, state: MeterState) -> str:
        """Why the reading goes to quarantine: "" for an identical re-read, LATE for an older."""
        problem = limits.reading_problem(
            reading.interval_end,
            reading.energy_wh,
            reading.register_wh,
            now_s=reading.poll_time_ms / 1000,
        )
        if problem is not None:
            return problem
        if abs(reading.energy_wh) > self.rules.max_interval_energy_wh:
            return f"energy {reading.energy_wh} Wh beyond the configured limit"
        same = (
            reading.interval_end == state.interval_end
            and reading.register_wh == state.register_wh
            and reading.energy_wh == state.last_energy_wh
        )
        if same:
            return ""
        if reading.interval_end == state.interval_end:
            return "conflicting re-read of a delivered interval"
        return LATE

    def _late(self, reading: PseudonymousReading) -> PseudonymousReading:
        """A late real reading, flagged by what it shows alone (its neighbours are gone)."""
        rest = reading.interval_end % INTERVAL_SECONDS
        if min(rest, INTERVAL_SECONDS - rest) > self.rules.time_sync_seconds:
            return reading._replace(quality_flags=reading.quality_flags | TIME_SYNC)
        return reading

    def _check(
        self,
        reading: PseudonymousReading,
        state: MeterState,
        memory: MeterMemory,
        learned: list[tuple[bytes, int, float]],
    ) -> tuple[PseudonymousReading, list[PseudonymousReading], MeterState]:
        """All rules for one reading; a profile value it learns is appended to ``learned``.

        The hot path: plain ints for flags, positional constructors.
        """
        rules = self.rules
        flags = reading.quality_flags
        energy = reading.energy_wh
        end = reading.interval_end
        rest = end % INTERVAL_SECONDS
        if min(rest, INTERVAL_SECONDS - rest) > rules.time_sync_seconds:
            flags |= TIME_SYNC
        estimates: list[PseudonymousReading] = []
        if state.interval_end:
            register_flags, estimates = self._register_check(reading, state, memory)
            flags |= register_flags
        slot = ((end - INTERVAL_SECONDS // 2) // INTERVAL_SECONDS) % SLOTS_PER_DAY
        usual = memory.usual(reading.meter, slot)
        reference: float | None = state.last_valid_wh
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
        if valid:
            learned.append(
                (
                    reading.meter,
                    slot,
                    energy if usual != usual else usual + rules.profile_weight * (energy - usual),  # noqa: PLR0124
                )
            )
        new_state = MeterState(  # positional, in field order: this runs once per reading
            end,
            reading.register_wh,
            energy,
            energy if valid else state.last_valid_wh,
            repeats,
            zeros,
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
        self, reading: PseudonymousReading, state: MeterState, memory: MeterMemory
    ) -> tuple[int, list[PseudonymousReading]]:
        """Flags from the register, and estimates for the intervals it says were missed."""
        tolerance = self.rules.sum_tolerance_wh
        delta = reading.register_wh - state.register_wh
        flags = 0
        elapsed = reading.interval_end - state.interval_end
        adjacent = elapsed == INTERVAL_SECONDS
        if delta < 0:
            measured = reading.energy_wh if adjacent else None
            modulus = _rollover_modulus(state.register_wh, delta, measured, tolerance)
            if modulus is None:
                return METER_RESET, []
            flags |= ROLLOVER
            delta += modulus
        if adjacent and abs(delta - reading.energy_wh) > tolerance:
            flags |= SUM_CHECK
        estimates = []
        if 2 * elapsed >= 3 * INTERVAL_SECONDS:  # at least one interval missed
            estimates = self._estimates(reading, state, delta, flags, memory)
        if delta < reading.energy_wh - tolerance:
            flags |= SUM_CHECK  # the register moved less than this interval alone
        return flags, estimates

    def _estimates(
        self,
        reading: PseudonymousReading,
        state: MeterState,
        delta: int,
        flags: int,
        memory: MeterMemory,
    ) -> list[PseudonymousReading]:
        """Readings for the intervals the meter missed, from what its register measured."""
        elapsed = reading.interval_end - state.interval_end
        # A drifting clock moves interval ends off the grid: count whole intervals.
        gap = round(elapsed / INTERVAL_SECONDS) - 1
        if gap < 1 or gap > self.rules.max_estimate_intervals or flags & SUM_CHECK:
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
            profile = memory.profile(reading.meter)
            known = [v for v in profile if not math.isnan(v)]
            fallback = sum(known) / len(known) if known else 1.0
            by_slot = [profile[_slot(end)] for end in ends]
            weights = [fallback if math.isnan(v) else v for v in by_slot]
        parts = _split(total, weights)
        if max(parts) > self.rules.max_interval_energy_wh:
            return []  # what the register measured is beyond physics: no value is made up
        register = state.register_wh
        estimates = []
        for end, energy in zip(ends, parts, strict=True):
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
