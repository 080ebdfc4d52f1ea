"""A circuit breaker per device: stop asking a device that keeps failing, try again later.

Pure logic with an injectable clock, so tests step time instead of sleeping. ``closed`` lets
every request through; after ``failure_threshold`` failures in a row it opens and refuses for
``reset_seconds``, doubling up to ``max_reset_seconds`` while the device stays dead; the first
poll after that is a trial (``half_open``): success closes it, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """The state of one device's breaker."""

    def __init__(
        self,
        *,
        failure_threshold: int,
        reset_seconds: float,
        max_reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args: see the module docstring; ``clock`` returns seconds (monotonic)."""
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not 0 < reset_seconds <= max_reset_seconds:
            raise ValueError("need 0 < reset_seconds <= max_reset_seconds")
        self._threshold = failure_threshold
        self._first_reset = reset_seconds
        self._max_reset = max_reset_seconds
        self._clock = clock
        self._failures = 0
        self._reset = reset_seconds
        self._open_until: float | None = None
        self.opened = 0  # how many times it opened, for statistics

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self._open_until is None:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    def seconds_to_trial(self) -> float | None:
        """While open: how long until the next trial poll; otherwise None."""
        if self._open_until is None:
            return None
        wait = self._open_until - self._clock()
        return wait if wait > 0 else None

    def allow(self) -> bool:
        """Whether a request may go to the device now."""
        return self.state != "open"

    def record_success(self) -> None:
        """The device answered: close the breaker and forget past failures."""
        self._failures = 0
        self._reset = self._first_reset
        self._open_until = None

    def record_failure(self) -> None:
        """The device failed: count it, and open the breaker at the threshold."""
        self._failures += 1
        if self.state == "half_open":
            self._reset = min(self._max_reset, self._reset * 2)
            self._open()
        elif self._failures >= self._threshold:
            self._open()

    def _open(self) -> None:
        self._open_until = self._clock() + self._reset
        self.opened += 1
