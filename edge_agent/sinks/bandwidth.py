"""Pace the uplink to ``uplink.max_bytes_per_second`` with a token bucket (pure, clock injected).

Bytes are paid for before they go: ``reserve`` takes a batch's bytes at once, into debt if need
be, and says how long to wait until the debt is paid back. So by any moment ``t`` seconds after
the bucket was made, at most ``burst_bytes + rate x t`` bytes have been let through, however
large a single batch is compared with the bucket. A gateway on a shared or metered link (a
cellular modem, a satellite terminal) then leaves room for everything else on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

BURST_SECONDS = 1.0  # after an idle spell, one second's worth of bytes may go at once


class TokenBucket:
    """Tokens are bytes; they refill at ``bytes_per_second`` up to ``burst_bytes``."""

    def __init__(
        self,
        *,
        bytes_per_second: float,
        burst_bytes: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start full, so the first ``burst_bytes`` go at once.

        Args:
            bytes_per_second: the long-run rate, above zero.
            burst_bytes: how many tokens an idle bucket saves up.
            clock: monotonic seconds (tests pass a fake one).

        """
        if bytes_per_second <= 0 or burst_bytes <= 0:
            raise ValueError("bytes_per_second and burst_bytes must be above zero")
        self.rate = bytes_per_second
        self.capacity = burst_bytes
        self._clock = clock
        self._tokens = burst_bytes
        self._stamp = clock()

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` tokens now; return the seconds to wait before sending them."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= nbytes
        return max(0.0, -self._tokens / self.rate)

    async def wait_sendable(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may go; cancelling forfeits the tokens (the cap only tightens)."""
        await asyncio.sleep(self.reserve(nbytes))
