"""Weekly load profiles made safe to release: generalized, suppressed, aggregated, measured.

The reference case applied k-anonymity before data left; load profiles need more, since a
week of 15-minute data re-identifies most households by itself (matched against another
source of the same household's use). A release here is one row per meter with:

- its quasi-identifiers, generalized along a ladder until every equivalence class holds at
  least k meters: the area (feeder, then substation, then region) and the customer class
  (residential, commercial, industrial: inferred from mean power, as no tariff data is held;
  dropped to ``any`` on the last rung). Meters of classes still too small are suppressed, up
  to ``max_suppressed`` of them; past that the next rung is tried, and past the last the
  export is refused;
- its consumption band (the quartile of the period's energy within the export): the
  sensitive attribute l-diversity is measured on;
- its weekly profile, aggregated: within each equivalence class meters are grouped by k and
  each gets its group's mean profile, so no released profile is unique. With l asked, groups
  are drawn across the energy range (every G-th meter by energy) so that each holds l bands.

The gate is measured, not assumed: pycanon computes k and l over the released table, with the
profile as one more quasi-identifier, and profile uniqueness is counted before and after the
aggregation (with the distance of each profile to its nearest other one before).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pycanon import anonymity

from governance.load_profiles import LoadProfiles

# (area level, customer class kept): the generalization ladder, finest first.
LADDER = (("feeder", True), ("substation", True), ("region", True), ("region", False))
# Upper mean-power limits of the classes (W): between the means of a household (~450 W), a
# shop or office (~4 kW) and a small plant (~40 kW).
CLASS_LIMITS_W = ((1_500.0, "residential"), (15_000.0, "commercial"))
LARGEST_CLASS = "industrial"
BANDS = ("Q1", "Q2", "Q3", "Q4")
QUASI_IDENTIFIERS = ["area", "customer_class", "profile_id"]
SENSITIVE = ["consumption_band"]
NEAREST_SAMPLE = 2_000  # profiles whose nearest neighbour is measured before aggregation


class UnreachableTargetError(Exception):
    """The export cannot reach its target; the message says what it reached and why."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a release must hold."""

    k: int
    l: int | None = None  # noqa: E741 - as the literature names it
    max_suppressed: float = 0.05  # share of the meters that may be left out


@dataclass(frozen=True, slots=True)
class Release:
    """The released table and what was measured on it."""

    table: pd.DataFrame  # area_level, area, customer_class, consumption_band, profile_id, p000...
    meter_ids: npt.NDArray[np.int64]  # the meters released, row by row (never in the table)
    area_level: str
    classes_kept: bool
    suppressed: int
    k: int  # measured by pycanon on the released table
    l: int | None  # noqa: E741
    unique_before: float  # share of profiles unique (fewer than k alike) before aggregation
    nearest_before_wh: float  # median distance of a profile to its nearest other one, before
    unique_after: int  # profiles unique after aggregation: 0 for any release


def customer_class(mean_power_w: npt.NDArray[np.float64]) -> list[str]:
    """Each meter's class by its mean power."""
    return [
        next((name for limit, name in CLASS_LIMITS_W if watts < limit), LARGEST_CLASS)
        for watts in mean_power_w
    ]


def consumption_band(energy_wh: npt.NDArray[np.int64]) -> list[str]:
    """The quartile of each meter's energy within the export (ties share a band)."""
    ranks = pd.Series(energy_wh).rank(method="min", pct=True).to_numpy()
    return [BANDS[min(int(rank * len(BANDS) - 1e-9), len(BANDS) - 1)] for rank in ranks]


def anonymize(profiles: LoadProfiles, target: Target) -> Release:
    """Climb the ladder until k (and l) hold with few enough meters suppressed; aggregate.

    Raises:
        UnreachableTargetError: no rung reaches the target within ``max_suppressed``.

    """
    if len(profiles) == 0:
        raise UnreachableTargetError(
            "no customer meter has readings in the period and regions asked"
        )
    areas = {
        "feeder": profiles.feeder,
        "substation": profiles.substation,
        "region": profiles.region,
    }
    classes = customer_class(profiles.mean_power_w)
    bands = consumption_band(profiles.energy_wh)
    reached = []
    for level, keep_class in LADDER:
        kinds = classes if keep_class else ["any"] * len(classes)
        keys = list(zip(areas[level], kinds, strict=True))
        kept = _classes_meeting(keys, bands, target)
        suppressed = int((~kept).sum())
        rung = f"{level}{'' if keep_class else ' (any class)'}"
        if kept.any() and suppressed <= target.max_suppressed * len(keys):
            try:
                return _release(profiles, target, level=level, keys=keys, bands=bands, kept=kept)
            except UnreachableTargetError as short:  # the aggregated groups fell short: climb
                reached.append(f"{rung}: {short}")
                continue
        reached.append(f"{rung}: {suppressed} suppressed")
    raise UnreachableTargetError(
        f"k={target.k}{f', l={target.l}' if target.l else ''} cannot be reached for"
        f" {len(keys)} meters with at most {target.max_suppressed:.0%} suppressed:"
        f" {'; '.join(reached)}"
    )


def _classes_meeting(
    keys: list[tuple[str, str]], bands: list[str], target: Target
) -> npt.NDArray[np.bool_]:
    """Rows whose equivalence class has k meters and, if asked, l distinct bands."""
    frame = pd.DataFrame({"key": keys, "band": bands})
    grouped = frame.groupby("key")
    size = grouped["band"].transform("size")
    distinct = grouped["band"].transform("nunique")
    ok = size >= target.k
    if target.l:
        ok &= distinct >= target.l
    return ok.to_numpy()


def _release(  # noqa: PLR0913 - the rung chosen, passed on as is
    profiles: LoadProfiles,
    target: Target,
    *,
    level: str,
    keys: list[tuple[str, str]],
    bands: list[str],
    kept: npt.NDArray[np.bool_],
) -> Release:
    # Shuffled: the meters' order (their ids, first seen first) must not carry into the file.
    rows = np.random.default_rng().permutation(np.flatnonzero(kept))
    original = profiles.profile_wh[rows]
    groups = _groups([keys[i] for i in rows], profiles.energy_wh[rows], target)
    aggregated = np.empty_like(original)
    for members in groups:
        aggregated[members] = original[members].mean(axis=0)
    aggregated = np.round(aggregated, 1)
    table = pd.DataFrame(
        {
            "area_level": level,
            "area": [keys[i][0] for i in rows],
            "customer_class": [keys[i][1] for i in rows],
            "consumption_band": [bands[i] for i in rows],
            "profile_id": _profile_ids(aggregated),
        }
    )
    slots = pd.DataFrame(aggregated, columns=[f"p{slot:03d}" for slot in range(original.shape[1])])
    table = pd.concat([table, slots], axis=1)
    measured_k = int(anonymity.k_anonymity(table, QUASI_IDENTIFIERS))
    measured_l = (
        int(anonymity.l_diversity(table, QUASI_IDENTIFIERS, SENSITIVE)) if target.l else None
    )
    unique_after = _unique(aggregated, target.k)
    if measured_k < target.k or (target.l and (measured_l or 0) < target.l) or unique_after:
        raise UnreachableTargetError(
            f"measured k={measured_k}, l={measured_l}, {unique_after} unique profiles"
        )
    return Release(
        table=table,
        meter_ids=profiles.meter_id[rows],
        area_level=level,
        classes_kept=any(key[1] != "any" for key in keys),
        suppressed=len(keys) - len(rows),
        k=measured_k,
        l=measured_l,
        unique_before=_unique(original, target.k) / len(rows),
        nearest_before_wh=_median_nearest(original),
        unique_after=unique_after,
    )


def _groups(
    keys: list[tuple[str, str]], energy_wh: npt.NDArray[np.int64], target: Target
) -> list[npt.NDArray[np.int64]]:
    """Groups of at least k rows within each equivalence class, by energy.

    Without l: k consecutive meters by energy (alike profiles, the most useful means); the
    remainder joins the last group. With l: every G-th meter by energy (G = size // k), so a
    group spans the class's range of bands.
    """
    found: list[npt.NDArray[np.int64]] = []
    for key in dict.fromkeys(keys):
        members = np.array([i for i, other in enumerate(keys) if other == key], dtype=np.int64)
        members = members[np.argsort(energy_wh[members], kind="stable")]
        count = len(members) // target.k
        if target.l:
            found.extend(members[start::count] for start in range(count))
        else:
            cuts = [target.k * i for i in range(1, count)]
            found.extend(np.split(members, cuts))
    return found


def _profile_ids(profiles: npt.NDArray[np.float64]) -> list[str]:
    """A short digest of each profile's values: equal profiles, equal ids."""
    return [hashlib.sha256(row.tobytes()).hexdigest()[:12] for row in profiles]


def _unique(profiles: npt.NDArray[np.float64], k: int) -> int:
    """Profiles that fewer than k rows share exactly (to 0.1 Wh)."""
    _, inverse, counts = np.unique(
        np.round(profiles, 1), axis=0, return_inverse=True, return_counts=True
    )
    return int((counts[inverse.ravel()] < k).sum())


def _median_nearest(profiles: npt.NDArray[np.float64]) -> float:
    """Median Euclidean distance (Wh) from a profile to its nearest other one.

    Measured on up to ``NEAREST_SAMPLE`` profiles against all of them, in blocks.
    """
    if len(profiles) < 2:  # noqa: PLR2004 - a nearest other needs two
        return 0.0
    sample = profiles[: min(len(profiles), NEAREST_SAMPLE)]
    squares = (profiles**2).sum(axis=1)
    nearest = []
    for start in range(0, len(sample), 256):
        block = sample[start : start + 256]
        distances = (block**2).sum(axis=1)[:, None] + squares[None, :] - 2 * block @ profiles.T
        for offset in range(len(block)):
            distances[offset, start + offset] = np.inf  # not itself
        nearest.append(np.sqrt(np.maximum(distances.min(axis=1), 0.0)))
    return float(np.median(np.concatenate(nearest)))
