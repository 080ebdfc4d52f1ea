"""Full-jitter backoff: how long to wait before trying a peer again after ``attempt`` failures.

The wait is uniform below a limit that doubles with each attempt, up to a cap ("full jitter"):
gateways that lost the same core spread their retries instead of returning together. The
exponent is bounded, so an outage of any length never overflows the arithmetic.
"""

from __future__ import annotations

import random

MAX_DOUBLINGS = 32  # far past any cap: 2**32 x the first wait


def full_jitter(attempt: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` from 0)."""
    return rng.uniform(0, min(cap, first * 2 ** min(attempt, MAX_DOUBLINGS)))
