"""What a meter reading may hold: one definition, checked at both ends of the wire.

The agent refuses (quarantines) a reading outside these bounds before it buffers it; the core
sets the same readings apart with their reason. Because both read this module, a reading the
edge lets through passes the core's bounds too (unless the two clocks disagree by about a day),
and one bad record never costs a whole batch. docs/protocol.md lists them.
"""

from __future__ import annotations

INTERVAL_SECONDS = 900
EARLIEST_INTERVAL_END_S = 946_684_800  # 2000-01-01T00:00:00Z: older is a reset clock
# An interval end may lie at most this far ahead of the clock of whoever checks it (the
# gateway's when it is read, the core's when it arrives): clocks drift, but not by a day.
MAX_AHEAD_SECONDS = 86_400
# |energy| of one 15-minute interval: 10 MWh is 40 MW for 15 minutes, beyond any meter on a
# distribution grid. The agent's ``validation.max_interval_energy_wh`` may only be lower.
MAX_INTERVAL_ENERGY_WH = 10_000_000
MAX_REGISTER_WH = 2**63 - 1  # a signed 64-bit column; all-ones is "not available"
# A serialized SignedBatch: gRPC's default message limit. The agent seals below it; the core
# answers a larger one with a refusal (it takes messages up to four times this size).
MAX_BATCH_BYTES = 4 * 1024 * 1024


def reading_problem(
    interval_end: int, energy_wh: int, register_wh: int, *, now_s: float
) -> str | None:
    """Why a reading is outside what the system accepts, or None when it is within bounds."""
    if not EARLIEST_INTERVAL_END_S <= interval_end <= now_s + MAX_AHEAD_SECONDS:
        return (
            f"interval end {interval_end} is outside {EARLIEST_INTERVAL_END_S}.."
            f"{int(now_s) + MAX_AHEAD_SECONDS} (2000-01-01 to a day ahead of the clock)"
        )
    if abs(energy_wh) > MAX_INTERVAL_ENERGY_WH:
        return f"energy {energy_wh} Wh beyond the physical limit of {MAX_INTERVAL_ENERGY_WH} Wh"
    if not 0 <= register_wh <= MAX_REGISTER_WH:
        return f"register {register_wh:#x} Wh is not a reading (0..2^63-1)"
    return None
