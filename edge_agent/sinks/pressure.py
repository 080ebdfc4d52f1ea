"""The buffer's pressure gauge: how full it is, as a level with hysteresis.

The fill counted is what is used now plus twice the largest single commit seen, so one more poll
can never hit the hard cap; the last 20 % stay free for sealing batches and recording
acknowledgements, which must always succeed. Levels: ``normal``; ``shedding`` from 60 % (the
agent drops delivered batches kept for resend and thins telemetry); ``paused`` from 80 % (no new
intervals are read; the concentrators' history keeps them). Back to shedding below 70 %, to
normal below 50 %. Pure: the agent reads the fill and acts on the level.
"""

from __future__ import annotations

SHED_AT, RELAX_BELOW = 0.60, 0.50  # thin telemetry out / back to normal
PAUSE_AT, UNPAUSE_BELOW = 0.80, 0.70  # stop / resume reading new intervals
STEP_MEMORY = 0.95  # per reading: a commit's size is forgotten within a minute or two


def pressure_level(current: str, fill: float) -> str:
    """The level for a fill share, with hysteresis around each threshold."""
    if fill >= PAUSE_AT or (current == "paused" and fill >= UNPAUSE_BELOW):
        return "paused"
    if fill >= SHED_AT or (current != "normal" and fill >= RELAX_BELOW):
        return "shedding"
    return "normal"


class PressureGauge:
    """Remembers the level and the largest recent commit between readings of the fill."""

    def __init__(self, level: str = "normal") -> None:
        """Start at ``level``."""
        self.level = level
        self._last_fill = 0.0
        self._largest_step = 0.0

    def read(self, fill: float) -> str:
        """Take a new fill share (0..1); return the level, changed or not.

        The largest recent commit is forgotten slowly: a one-off big commit must not keep the
        agent shedding for ever.
        """
        self._largest_step = max(fill - self._last_fill, self._largest_step * STEP_MEMORY)
        self._last_fill = fill
        self.level = pressure_level(self.level, fill + 2 * self._largest_step)
        return self.level
