"""Transformer sensors: IEC 60076-7 temperatures, phase currents, tap position, dissolved gases.

Temperatures come from the ``transformer-thermal-model`` package (IEC 60076-7 difference
equations), run an hour of simulated time at a time at one-minute steps. Each run starts an hour
early from the previously computed top-oil temperature, so the hot-spot state (which the package
restarts at every run) has settled long before the hour that is used.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from transformer_thermal_model.model import Model
from transformer_thermal_model.schemas import InputProfile, UserTransformerSpecifications
from transformer_thermal_model.schemas.thermal_model.initial_state import (
    InitialLoad,
    InitialTopOilTemp,
)
from transformer_thermal_model.transformer import DistributionTransformer

from substation_sim.topology import TransformerSpec

logging.getLogger("transformer_thermal_model").setLevel(logging.WARNING)

SECONDARY_VOLTAGE_V = 20_000.0  # a primary substation: HV/MV transformers feeding 20 kV feeders
POWER_FACTOR = 0.95
NO_LOAD_LOSS_SHARE = 0.002  # of rated power: typical of oil-immersed distribution transformers
LOAD_LOSS_SHARE = 0.012
CHUNK_MINUTES = 60
WARM_UP_MINUTES = 60  # ~9 winding time constants: the restarted hot-spot state has settled
TAP_NEUTRAL = 9
TAP_RANGE = (1, 17)
GASES = ("H2", "CH4", "C2H6", "C2H4", "C2H2", "CO", "CO2")
GAS_BASELINE_PPM = np.array([15.0, 8.0, 5.0, 3.0, 0.2, 250.0, 2_200.0])
GAS_DRIFT_PPM_PER_DAY = np.array([0.05, 0.03, 0.02, 0.01, 0.0, 1.0, 8.0])
# How each gas grows per day of an incipient fault, by the fault's nature (GASES' order):
# - thermal (an overheated joint, T3): ethylene fastest, then methane, above hydrogen; a week
#   of fault multiplies ethylene by about 20;
# - partial_discharge (corona in a gas-filled cavity, PD): hydrogen, some methane and ethane,
#   no ethylene or acetylene;
# - arcing (discharges of high energy, D2): acetylene fastest, then ethylene, hydrogen, methane.
# Developed, each gives its textbook diagnosis by IEC 60599's ratios (analytics.dga).
FAULT_GROWTH_PER_DAY = {
    "thermal": np.array([1.25, 1.45, 1.2, 1.55, 1.05, 1.05, 1.02]),
    "partial_discharge": np.array([1.6, 1.3, 1.15, 1.0, 1.0, 1.01, 1.0]),
    "arcing": np.array([1.35, 1.3, 1.05, 1.4, 1.7, 1.03, 1.01]),
}
FAULT_SIGNATURE = {
    "thermal": "C2H4, CH4, H2 rising",
    "partial_discharge": "H2 rising, some CH4",
    "arcing": "C2H2, C2H4, H2 rising",
}
# What each nature's gases reach when the transformer is about to fail: the key gas at ten
# times its typical concentration (the simulator's ground truth of "failure").
FAILURE_PPM = {"thermal": ("C2H4", 2_800.0), "partial_discharge": ("H2", 1_500.0),
               "arcing": ("C2H2", 200.0)}  # fmt: skip


def nominal_current_a(rated_kva: float) -> float:
    """Secondary nominal current of a three-phase transformer at the feeder voltage."""
    return rated_kva * 1000 / (math.sqrt(3) * SECONDARY_VOLTAGE_V)


def iec_model(rated_kva: float) -> DistributionTransformer:
    """The package's ONAN distribution transformer with losses typical for its rating."""
    return DistributionTransformer(
        user_specs=UserTransformerSpecifications(
            load_loss=rated_kva * 1000 * LOAD_LOSS_SHARE,
            nom_load_sec_side=nominal_current_a(rated_kva),
            no_load_loss=rated_kva * 1000 * NO_LOAD_LOSS_SHARE,
            amb_temp_surcharge=10.0,
        )
    )


def temperatures(
    rated_kva: float,
    currents_a: np.ndarray,
    ambient_c: np.ndarray,
    *,
    start: int,
    initial_top_oil_c: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-oil and hot-spot temperatures at one-minute steps from ``start`` (Unix seconds).

    Without an initial top-oil temperature the run starts in the steady state of its first load.
    """
    index = [
        dt.datetime.fromtimestamp(start + 60 * i, dt.UTC).replace(tzinfo=None)
        for i in range(len(currents_a))
    ]
    profile = InputProfile.create(
        datetime_index=index, load_profile=currents_a, ambient_temperature_profile=ambient_c
    )
    initial = (
        InitialLoad(initial_load=float(currents_a[0]))
        if initial_top_oil_c is None
        else InitialTopOilTemp(initial_top_oil_temp=initial_top_oil_c)
    )
    output = Model(
        temperature_profile=profile, transformer=iec_model(rated_kva), initial_condition=initial
    ).run()
    return output.top_oil_temp_profile.to_numpy(), output.hot_spot_temp_profile.to_numpy()


@dataclass(frozen=True, slots=True)
class Reading:
    """Everything one transformer reports at one minute."""

    transformer: str
    time: int
    ambient_c: float
    top_oil_c: float
    hot_spot_c: float
    currents_a: tuple[float, float, float]
    tap_position: int
    gases_ppm: dict[str, float]


class TransformerSensors:
    """One transformer's sensor values over time, computed an hour at a time."""

    def __init__(self, spec: TransformerSpec, *, seed: int, start: int) -> None:
        """Args: spec: the transformer; seed: the scenario's; start: simulated start (Unix s)."""
        self.spec = spec
        self.seed = seed
        self.start = start
        self.fault_start: int | None = None  # set by an incipient_fault
        self.fault_nature = "thermal"
        self._chunk_start: int | None = None
        self._top_oil: np.ndarray = np.empty(0)
        self._hot_spot: np.ndarray = np.empty(0)
        self._currents: np.ndarray = np.empty(0)
        self._ambient: np.ndarray = np.empty(0)
        self._warm_top_oil: float | None = None

    def reading(self, time: int, load_w: callable, ambient_c: callable) -> Reading:  # type: ignore[valid-type]
        """Sensor values at minute ``time``; ``load_w(t)`` and ``ambient_c(t)`` drive the model."""
        chunk = time - (time - self.start) % (CHUNK_MINUTES * 60)
        if chunk != self._chunk_start:
            self._compute_chunk(chunk, load_w, ambient_c)
        i = (time - chunk) // 60
        rng = np.random.default_rng([self.seed, 4, self.spec.key, time])
        current = float(self._currents[i])
        imbalance = 1.0 + 0.03 * rng.standard_normal(3)
        ratio = current / nominal_current_a(self.spec.rated_kva)
        tap = int(np.clip(TAP_NEUTRAL + round((ratio - 0.5) * 6), *TAP_RANGE))
        return Reading(
            transformer=self.spec.name,
            time=time,
            ambient_c=round(float(self._ambient[i]), 2),
            top_oil_c=round(float(self._top_oil[i]), 2),
            hot_spot_c=round(float(self._hot_spot[i]), 2),
            currents_a=tuple(round(current * float(f), 1) for f in imbalance),  # type: ignore[arg-type]
            tap_position=tap,
            gases_ppm=self._gases(time, rng),
        )

    def gases_at(self, time: int) -> dict[str, float]:
        """The dissolved gases ``reading(time)`` publishes, without running the thermal model."""
        rng = np.random.default_rng([self.seed, 4, self.spec.key, time])
        rng.standard_normal(3)  # the phase imbalance ``reading`` draws first
        return self._gases(time, rng)

    def _compute_chunk(
        self, chunk: int, load_w: Callable[[int], float], ambient_c: Callable[[int], float]
    ) -> None:
        warm_start = chunk - WARM_UP_MINUTES * 60
        times = warm_start + 60 * np.arange(WARM_UP_MINUTES + CHUNK_MINUTES)
        watts = np.array([load_w(int(t)) for t in times]) * self.spec.share
        currents = watts / (math.sqrt(3) * SECONDARY_VOLTAGE_V * POWER_FACTOR)
        ambient = np.array([ambient_c(int(t)) for t in times])
        top_oil, hot_spot = temperatures(
            self.spec.rated_kva,
            currents,
            ambient,
            start=warm_start,
            initial_top_oil_c=self._warm_top_oil
            if self._chunk_start == chunk - CHUNK_MINUTES * 60
            else None,
        )
        # The next chunk warms up from this chunk's first minute.
        self._warm_top_oil = float(top_oil[WARM_UP_MINUTES])
        self._chunk_start = chunk
        self._top_oil, self._hot_spot = top_oil[WARM_UP_MINUTES:], hot_spot[WARM_UP_MINUTES:]
        self._currents, self._ambient = currents[WARM_UP_MINUTES:], ambient[WARM_UP_MINUTES:]

    def _gases(self, time: int, rng: np.random.Generator) -> dict[str, float]:
        days = (time - self.start) / 86_400
        ppm = GAS_BASELINE_PPM * (1 + 0.2 * (self.spec.key % 3)) + GAS_DRIFT_PPM_PER_DAY * days
        if self.fault_start is not None and time >= self.fault_start:
            growth = FAULT_GROWTH_PER_DAY[self.fault_nature]
            ppm = ppm * growth ** ((time - self.fault_start) / 86_400)
        ppm = ppm * (1 + 0.01 * rng.standard_normal(len(GASES)))
        return {gas: round(float(value), 2) for gas, value in zip(GASES, ppm, strict=True)}
