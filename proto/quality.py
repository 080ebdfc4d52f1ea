"""Quality flags carried by every reading: one bitmask that edge and core read the same way.

Bits are only ever added, never reused; docs/protocol.md lists them with the rule that sets
each. A reading with no flag passed every rule. ``ESTIMATED`` marks a value the edge made up for
a missed interval; every other flag marks a raw value kept as read.
"""

from __future__ import annotations

import enum


class QualityFlag(enum.IntFlag):
    """Why a reading may not be taken at face value; 0 means no rule objected."""

    DEVICE_ALARM = 1 << 0  # the meter's status word was non-zero when it was read
    ESTIMATED = 1 << 1  # not read: estimated for a missed interval (see the ruleset)
    NEGATIVE = 1 << 2  # negative interval energy on an import register
    ZERO = 1 << 3  # zero energy where the meter normally consumes, or zeros in a row
    SPIKE = 1 << 4  # far above the meter's usual value for that time of day / last value
    SUM_CHECK = 1 << 5  # register delta differs from the interval energy
    ROLLOVER = 1 << 6  # the register wrapped at its capacity (value is fine)
    METER_RESET = 1 << 7  # the register went back without wrapping
    TIME_SYNC = 1 << 8  # interval end more than the tolerance off the 15-minute grid
    STUCK = 1 << 9  # the same non-zero value several intervals in a row
    OUT_OF_RANGE = 1 << 10  # telemetry value outside the metric's physical range
    RATE_OF_CHANGE = 1 << 11  # telemetry value changed faster than physics allows


# Flags that say "this value is probably wrong" (the rest say "made up" or "worth knowing").
SUSPECT = (
    QualityFlag.NEGATIVE
    | QualityFlag.ZERO
    | QualityFlag.SPIKE
    | QualityFlag.SUM_CHECK
    | QualityFlag.METER_RESET
    | QualityFlag.TIME_SYNC
    | QualityFlag.STUCK
    | QualityFlag.OUT_OF_RANGE
    | QualityFlag.RATE_OF_CHANGE
)
