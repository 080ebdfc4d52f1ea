"""The circuit breaker, stepped with a fake clock."""

from __future__ import annotations

import pytest

from edge_agent.sources.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_seconds=10, max_reset_seconds=40, clock=clock)


def test_opens_after_the_threshold_and_tries_again_after_the_reset_time():
    """Three failures in a row open it; after 10 s one trial is allowed."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        b.record_failure()
    assert b.allow()
    b.record_failure()
    assert (b.state, b.allow()) == ("open", False)
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.2
    assert (b.state, b.allow()) == ("half_open", True)


def test_a_failed_trial_doubles_the_wait_up_to_the_cap():
    """While the device stays dead the waits grow 10, 20, 40, 40 s."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    waits = []
    for _ in range(4):
        opened_at = clock.now
        while not b.allow():
            clock.now += 1
        waits.append(clock.now - opened_at)
        b.record_failure()
    assert waits == [10, 20, 40, 40]


def test_success_closes_and_resets():
    """A success closes the breaker and the next outage starts from the first wait."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    b.record_success()
    assert b.state == "closed"
    b.record_failure()
    b.record_failure()
    assert b.allow()


def test_a_success_between_failures_keeps_it_closed():
    """Failures must be consecutive to open it."""
    b = breaker(Clock())
    for _ in range(5):
        b.record_failure()
        b.record_failure()
        b.record_success()
    assert b.state == "closed"


@pytest.mark.parametrize(("threshold", "reset", "cap"), [(0, 1, 1), (1, 0, 1), (1, 5, 1)])
def test_bad_settings_are_refused(threshold, reset, cap):
    with pytest.raises(ValueError, match=r"must|need"):
        CircuitBreaker(failure_threshold=threshold, reset_seconds=reset, max_reset_seconds=cap)
