"""Loaded by a process under test (its PYTHONPATH): its wall clock stepped as a file says.

An NTP step, or someone setting the date, moves the wall clock (CLOCK_REALTIME) only: monotonic
clocks, which timers and timeouts use, go on. This moves ``time.time`` and ``time.time_ns`` by
the seconds written in the file named by ``MP_CLOCK_STEP_FILE`` (re-read every 50 ms), and
leaves ``time.monotonic`` alone. libfaketime would reach C code too, but its 0.9.10 (Debian
bookworm) fails every sleep when monotonic clocks are left real.
"""

from __future__ import annotations

import os
import time

STEP_FILE = os.environ.get("MP_CLOCK_STEP_FILE")
REREAD_SECONDS = 0.05

if STEP_FILE:
    _real_time, _real_time_ns, _monotonic = time.time, time.time_ns, time.monotonic
    _read_at, _offset = -1.0, 0.0

    def _step() -> float:
        """The offset in seconds the file says now."""
        global _read_at, _offset  # noqa: PLW0603 - a process-wide clock, as the real one
        if _monotonic() - _read_at > REREAD_SECONDS:
            _read_at = _monotonic()
            try:
                with open(STEP_FILE, encoding="ascii") as file:  # noqa: PTH123 - no pathlib this early
                    _offset = float(file.read() or 0)
            except (OSError, ValueError):
                pass  # mid-write: the last offset holds
        return _offset

    time.time = lambda: _real_time() + _step()
    time.time_ns = lambda: _real_time_ns() + int(_step() * 1e9)
