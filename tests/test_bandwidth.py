"""The uplink's token bucket on a fake clock: the cap holds for any batch sizes, bursts included."""

from __future__ import annotations

import random

import pytest

from edge_agent.sinks.bandwidth import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bucket(clock: FakeClock, *, rate: float = 1_000, burst: float = 1_000) -> TokenBucket:
    return TokenBucket(bytes_per_second=rate, burst_bytes=burst, clock=clock)


def test_a_full_bucket_lets_one_burst_through_then_paces_at_the_rate():
    """The first burst's worth goes at once; each further byte waits 1/rate seconds."""
    clock = FakeClock()
    paced = bucket(clock)
    assert paced.reserve(600) == 0
    assert paced.reserve(400) == 0
    assert paced.reserve(500) == pytest.approx(0.5)
    assert paced.reserve(500) == pytest.approx(1.0)  # queued behind the previous half second


def test_a_batch_larger_than_the_bucket_waits_for_its_excess_only():
    """A batch bigger than the burst is not refused or stuck: it waits (size - burst) / rate."""
    clock = FakeClock()
    assert bucket(clock).reserve(5_000) == pytest.approx(4.0)


def test_idle_time_refills_up_to_the_burst_and_no_further():
    """After a long silence only ``burst_bytes`` go at once, not everything saved up."""
    clock = FakeClock()
    paced = bucket(clock)
    paced.reserve(1_000)
    clock.now += 3_600
    assert paced.reserve(1_000) == 0
    assert paced.reserve(1_000) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_bytes_let_through_never_exceed_the_burst_plus_rate_times_elapsed(seed):
    """For random batch sizes and gaps, every send respects burst + rate x t."""
    rng = random.Random(seed)
    clock = FakeClock()
    start = clock.now
    paced = bucket(clock, rate=2_000, burst=3_000)
    sent = 0
    for _ in range(200):
        size = rng.randint(1, 10_000)
        clock.now += rng.choice([0.0, 0.01, 0.5, 3.0])
        clock.now += paced.reserve(size)  # the sender sleeps this long, then sends
        sent += size
        assert sent <= 3_000 + 2_000 * (clock.now - start) + 1e-6


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (-5, 10)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate, burst):
    """Zero means "no cap" to the caller, which then makes no bucket at all."""
    with pytest.raises(ValueError, match="above zero"):
        TokenBucket(bytes_per_second=rate, burst_bytes=burst)
