"""Quality flags carried by every reading: one bitmask that edge and core read the same way.

Bits are only ever added, never reused; docs/protocol.md lists them.
"""

from __future__ import annotations

import enum


class QualityFlag(enum.IntFlag):
    """Why a reading may not be taken at face value; 0 means no rule objected."""

    DEVICE_ALARM = 1 << 0  # the meter's status word was non-zero when it was read
