"""The field a scenario describes: regions, substations, concentrators, meters, transformers.

Built deterministically from the scenario and its seed: the same scenario always gives the same
serials, customer classes, household sizes, feeders, ports and transformer ratings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from substation_sim.profiles import CLASS_CODES, MEAN_POWER_W, PEAK_FACTOR
from substation_sim.scenario import REGION_NAMES, RegionSpec, Scenario

STANDARD_RATINGS_KVA = (
    100,
    160,
    250,
    400,
    630,
    1_000,
    1_600,
    2_500,
    4_000,
    6_300,
    10_000,
    16_000,
    25_000,
    40_000,
    63_000,
)
POWER_FACTOR = 0.95
# Meters have a register history before the simulation starts (up to 500 MWh).
INITIAL_REGISTER_MAX_WH = 500_000_000


@dataclass(frozen=True, slots=True)
class MeterSet:
    """The meters behind one concentrator, as parallel arrays (one entry per meter)."""

    serials: np.ndarray  # int64, 10-digit serial numbers
    classes: np.ndarray  # int8, index into profiles.CUSTOMER_CLASSES
    scales: np.ndarray  # float64, household or business size relative to its class mean
    feeders: np.ndarray  # int16, feeder number within the substation
    initial_registers: np.ndarray  # int64, Wh on the register at the start

    def __len__(self) -> int:
        """How many meters."""
        return len(self.serials)


@dataclass(frozen=True, slots=True)
class ConcentratorSpec:
    """One concentrator: a Modbus TCP device on its own port."""

    name: str
    region: str
    substation: str
    key: int  # unique small integer, seeds this device's randomness
    port: int
    meters: MeterSet


@dataclass(frozen=True, slots=True)
class TransformerSpec:
    """One transformer; it carries ``share`` of its substation's load."""

    name: str
    region: str
    substation: str
    key: int
    rated_kva: int
    share: float


@dataclass(frozen=True, slots=True)
class SubstationSpec:
    """A substation: its concentrators, transformers and feeder-head meter."""

    name: str
    region: str
    index: int
    concentrators: tuple[ConcentratorSpec, ...]
    transformers: tuple[TransformerSpec, ...]
    feeder_head_port: int
    feeder_head_serial: int
    feeders: int

    @property
    def meter_count(self) -> int:
        """Customer meters behind all its concentrators."""
        return sum(len(c.meters) for c in self.concentrators)


def _meters(
    rng: np.random.Generator, *, base_serial: int, count: int, mix: dict[str, float], feeders: int
) -> MeterSet:
    kinds = list(mix)
    classes = rng.choice([CLASS_CODES[k] for k in kinds], size=count, p=[mix[k] for k in kinds])
    return MeterSet(
        serials=base_serial + np.arange(count, dtype=np.int64),
        classes=classes.astype(np.int8),
        scales=rng.lognormal(mean=0.0, sigma=0.35, size=count),
        feeders=rng.integers(0, feeders, size=count).astype(np.int16),
        initial_registers=rng.integers(0, INITIAL_REGISTER_MAX_WH, size=count, dtype=np.int64),
    )


def _rating(expected_peak_w: float, transformers: int) -> int:
    """The smallest standard rating that carries its share of the expected peak at 80 %."""
    needed_kva = expected_peak_w / transformers / POWER_FACTOR / 1000 / 0.8
    return next((r for r in STANDARD_RATINGS_KVA if r >= needed_kva), STANDARD_RATINGS_KVA[-1])


class _Builder:
    """Hands out ports and device keys in order while the substations are built."""

    def __init__(self, scenario: Scenario) -> None:
        self.rng = np.random.default_rng([scenario.seed, 1])
        self.port = scenario.base_port
        self.concentrator_key = 0
        self.transformer_key = 0

    def substation(self, region: RegionSpec, index: int) -> SubstationSpec:
        name = f"{region.name[0]}-S{index + 1:02d}"
        base = (REGION_NAMES.index(region.name) + 1) * 1_000_000_000 + index * 1_000_000
        concentrators = tuple(
            self._concentrator(region, name, base + c * 10_000, c)
            for c in range(region.concentrators_per_substation)
        )
        mean_w = sum(
            float(np.sum(MEAN_POWER_W[c.meters.classes] * c.meters.scales)) for c in concentrators
        )
        count = region.transformers_per_substation
        transformers = tuple(
            self._transformer(region, name, t, _rating(mean_w * PEAK_FACTOR, count), count)
            for t in range(count)
        )
        self.port += 1
        return SubstationSpec(
            name=name,
            region=region.name,
            index=index,
            concentrators=concentrators,
            transformers=transformers,
            feeder_head_port=self.port - 1,
            feeder_head_serial=base + 999_999,
            feeders=region.feeders_per_substation,
        )

    def _concentrator(
        self, region: RegionSpec, substation: str, base_serial: int, index: int
    ) -> ConcentratorSpec:
        meters = _meters(
            self.rng,
            base_serial=base_serial,
            count=region.meters_per_concentrator,
            mix=region.mix,
            feeders=region.feeders_per_substation,
        )
        spec = ConcentratorSpec(
            name=f"{substation}-C{index + 1}",
            region=region.name,
            substation=substation,
            key=self.concentrator_key,
            port=self.port,
            meters=meters,
        )
        self.concentrator_key += 1
        self.port += 1
        return spec

    def _transformer(
        self, region: RegionSpec, substation: str, index: int, rated_kva: int, count: int
    ) -> TransformerSpec:
        spec = TransformerSpec(
            name=f"{substation}-T{index + 1}",
            region=region.name,
            substation=substation,
            key=self.transformer_key,
            rated_kva=rated_kva,
            share=1 / count,
        )
        self.transformer_key += 1
        return spec


def build_topology(scenario: Scenario) -> tuple[SubstationSpec, ...]:
    """Every substation of the scenario, with ports assigned in order from ``base_port``."""
    builder = _Builder(scenario)
    return tuple(
        builder.substation(region, index)
        for region in scenario.regions
        for index in range(region.substations)
    )
