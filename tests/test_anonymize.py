"""Releases of weekly load profiles: k, l and profile uniqueness hold, or the export is refused.

Pure logic on made-up populations; each property is checked here with pandas, independently of
the pycanon measurement the release carries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.anonymize import Target, UnreachableTargetError, anonymize
from governance.load_profiles import LoadProfiles

SLOTS = 168


def population(
    feeders: list[int],
    *,
    per_substation: int = 2,
    per_region: int = 2,
    watts: list[float] | None = None,
    seed: int = 1,
) -> LoadProfiles:
    """``feeders[i]`` meters on feeder i; feeders grouped into substations, those into regions."""
    rng = np.random.default_rng(seed)
    feeder = [f"F{i}" for i, count in enumerate(feeders) for _ in range(count)]
    substation = [f"S{int(f[1:]) // per_substation}" for f in feeder]
    region = [f"R{int(s[1:]) // per_region}" for s in substation]
    count = len(feeder)
    power = np.array(watts) if watts is not None else rng.uniform(200, 1_200, count)
    profile = rng.gamma(2.0, power[:, None] / 8, size=(count, SLOTS))
    return LoadProfiles(
        meter_id=np.arange(1, count + 1, dtype=np.int64),
        feeder=feeder,
        substation=substation,
        region=region,
        mean_power_w=power,
        energy_wh=(profile.sum(axis=1) * 4).astype(np.int64),
        profile_wh=profile,
        key_ids=["k1"],
    )


def holds(table: pd.DataFrame, k: int, l: int | None) -> None:  # noqa: E741
    """Every (area, class, profile) group has k rows and, if asked, l bands; checked by pandas."""
    groups = table.groupby(["area", "customer_class", "profile_id"])["consumption_band"]
    assert groups.size().min() >= k
    if l:
        assert groups.nunique().min() >= l
    profiles = table.filter(regex=r"^p\d{3}$").round(1)
    assert profiles.value_counts().min() >= k  # no profile shared by fewer than k rows


def test_feeders_big_enough_are_released_at_feeder_level_with_no_unique_profile():
    release = anonymize(population([12, 12, 12, 12]), Target(k=5))
    assert release.area_level == "feeder"
    assert (release.k, release.suppressed, release.unique_after) == (5, 0, 0)
    assert release.unique_before == 1.0  # every raw profile told its household apart
    assert release.nearest_before_wh > 0
    holds(release.table, 5, None)
    assert sorted(release.meter_ids) == list(range(1, 49))
    assert "meter_id" not in release.table.columns


def test_small_feeders_climb_to_the_substation():
    release = anonymize(population([3, 3, 3, 3, 3, 3, 3, 3]), Target(k=5))
    assert release.area_level == "substation"
    assert set(release.table["area"]) == {"S0", "S1", "S2", "S3"}
    holds(release.table, 5, None)


def test_a_lone_large_customer_is_suppressed_when_few_enough():
    watts = [500.0] * 39 + [60_000.0]  # one industrial meter among households
    release = anonymize(population([20, 20], watts=watts), Target(k=5))
    assert release.suppressed == 1
    assert 40 not in release.meter_ids
    assert set(release.table["customer_class"]) == {"residential"}


def test_l_diversity_draws_groups_across_the_bands():
    release = anonymize(population([40, 40]), Target(k=4, l=3))
    assert release.l is not None
    assert release.l >= 3
    holds(release.table, 4, 3)


def test_an_unreachable_target_is_refused_naming_each_level():
    with pytest.raises(UnreachableTargetError) as refused:
        anonymize(population([3, 3]), Target(k=10))
    message = str(refused.value)
    assert "k=10 cannot be reached for 6 meters with at most 5% suppressed" in message
    assert "feeder: 6 suppressed" in message
    assert "region (any class): 6 suppressed" in message


def test_nothing_to_export_is_refused():
    with pytest.raises(UnreachableTargetError, match="no customer meter"):
        anonymize(population([]), Target(k=2))


@settings(max_examples=40, deadline=None)
@given(
    feeders=st.lists(st.integers(min_value=0, max_value=25), min_size=1, max_size=8),
    k=st.integers(min_value=2, max_value=8),
    l=st.one_of(st.none(), st.integers(min_value=2, max_value=4)),
    industrial=st.integers(min_value=0, max_value=5),
    seed=st.integers(min_value=0, max_value=1_000),
)
def test_any_population_is_released_safe_or_refused(feeders, k, l, industrial, seed):  # noqa: E741
    """Whatever the population and target: a release holds k, l and uniqueness, or none is made."""
    count = sum(feeders)
    rng = np.random.default_rng(seed)
    watts = list(rng.uniform(200, 1_200, count))
    for i in range(min(industrial, count)):
        watts[i] = 50_000.0
    target = Target(k=k, l=l)
    try:
        release = anonymize(population(feeders, watts=watts, seed=seed), target)
    except UnreachableTargetError:
        return
    holds(release.table, k, l)
    assert release.suppressed <= target.max_suppressed * count
    assert len(release.table) + release.suppressed == count
    assert release.unique_after == 0
