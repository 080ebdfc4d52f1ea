"""The batch-to-rows arithmetic of the core's hot path, against plain Python."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest

from core_ingest.store.rollups import rollup_delta
from proto.quality import SUSPECT, QualityFlag


@pytest.mark.parametrize("spread_days", [0, 3, 800])  # one interval, a backlog, years apart
def test_rollup_delta_equals_a_plain_sum_by_interval_start(spread_days):
    """Buckets by the interval's start; received / estimated / suspect counted apart."""
    rng = random.Random(spread_days)
    base = 1_793_577_600
    ends = [base + 900 * rng.randrange(0, 96 * spread_days + 1) for _ in range(3000)]
    energy = [rng.randrange(-50, 5_000) for _ in ends]
    flags = [rng.choice([0, 0, 0, 2, 16, 18, 64]) for _ in ends]
    for period in (3600, 86_400):
        delta = rollup_delta(np.array(ends), np.array(energy), np.array(flags), period)
        sums: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
        for end, wh, flag in zip(ends, energy, flags, strict=True):
            bucket = (end - 900) // period * period
            sums[bucket][0] += wh
            sums[bucket][1 if not flag & QualityFlag.ESTIMATED else 2] += 1
            sums[bucket][3] += bool(flag & SUSPECT)
        got = zip(
            delta.bucket,
            delta.energy_wh,
            delta.received,
            delta.estimated,
            delta.suspect,
            strict=True,
        )
        assert {b: [e, r, x, s] for b, e, r, x, s in got} == dict(sums)
        assert delta.bucket == sorted(delta.bucket)


def test_rollup_energy_is_summed_exactly_in_integers():
    """No float on the way: two readings of 2^53 + 1 Wh sum to 2^54 + 2, not 2 Wh short."""
    ends = np.array([1_793_577_600, 1_793_577_600])
    delta = rollup_delta(ends, np.array([2**53 + 1, 2**53 + 1]), np.array([0, 0]), 3600)
    assert delta.energy_wh == [2**54 + 2]
