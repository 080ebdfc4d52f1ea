"""Fault injection: which faults are active where and when, and what each does to a value.

Faults draw from their own random streams (seeded by scenario seed, fault index, device and
time), so a run with faults and the same run without them see identical clean values; the
difference between the two is exactly what the ground truth records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from substation_sim.scenario import FaultSpec, Scenario
from substation_sim.topology import ConcentratorSpec

STORM_EFFECTS = ("spike", "zero", "negative")
FAULT_STREAM = 3  # random stream family of fault decisions (profiles use 2)


@dataclass(frozen=True, slots=True)
class MeterEffect:
    """What one fault did to one meter in one interval."""

    fault: FaultSpec
    detail: str
    meters: np.ndarray  # indexes into the concentrator's meters


def targets(fault: FaultSpec, concentrator: ConcentratorSpec) -> bool:
    """Whether the fault's region and substation selection covers this concentrator."""
    if fault.region is not None and fault.region != concentrator.region:
        return False
    return fault.substation is None or concentrator.substation.endswith(
        f"S{fault.substation + 1:02d}"
    )


def fault_rng(scenario: Scenario, fault: FaultSpec, *keys: int) -> np.random.Generator:
    """The random stream of one fault at one device and time."""
    return np.random.default_rng([scenario.seed, FAULT_STREAM, fault.index, *keys])


def chosen(rng: np.random.Generator, share: float, eligible: np.ndarray) -> np.ndarray:
    """Indexes of eligible meters picked with probability ``share`` each."""
    return np.flatnonzero(eligible & (rng.random(len(eligible)) < share))


def stuck_meters(scenario: Scenario, fault: FaultSpec, device_key: int, count: int) -> np.ndarray:
    """The meters a stuck fault freezes: one choice for the whole window."""
    rng = fault_rng(scenario, fault, device_key)
    return chosen(rng, fault.share, np.ones(count, dtype=bool))


def apply_value_faults(  # noqa: PLR0913 - one call per device and interval, all of it needed
    scenario: Scenario,
    faults: list[FaultSpec],
    *,
    device_key: int,
    interval_end: int,
    hour: float,
    energy: np.ndarray,
    last_served: np.ndarray,
    updated: np.ndarray,
) -> tuple[np.ndarray, list[MeterEffect]]:
    """Apply the energy and missing-interval faults active now; return served energy and effects.

    ``updated`` is cleared for meters that miss the interval. A meter gets at most one fault
    per interval (the first in scenario order), so every served value has one explanation.
    """
    served = energy.copy()
    free = np.ones(len(energy), dtype=bool)
    effects = []
    for fault in faults:
        if not fault.active(hour):
            continue
        if fault.kind == "stuck":
            frozen = stuck_meters(scenario, fault, device_key, len(energy))
            index = frozen[free[frozen] & (energy[frozen] != last_served[frozen])]
            served[index] = last_served[index]
            effects.append(MeterEffect(fault, "stuck", index))
            free[index] = False
            continue
        rng = fault_rng(scenario, fault, device_key, interval_end)
        index = chosen(rng, fault.share, free & (energy > 0))
        details = (
            rng.choice(STORM_EFFECTS, size=len(index))
            if fault.kind == "storm"
            else np.full(len(index), fault.kind)
        )
        for detail in np.unique(details):
            picked = index[details == detail]
            if detail == "spike":
                served[picked] = np.maximum(
                    energy[picked] + 1, (energy[picked] * fault.factor).astype(np.int64)
                )
            elif detail == "zero":
                served[picked] = 0
            elif detail == "negative":
                served[picked] = -energy[picked]
            elif detail == "missing":
                updated[picked] = False
            effects.append(MeterEffect(fault, str(detail), picked))
        free[index] = False
    return served, effects


class RequestFaults:
    """Per-request decisions for one Modbus device, with a log of what was injected.

    Call ``decide()`` for each request; ``drain()`` returns the injected events since the last
    call, as (fault, kind, simulated time), for the ground truth.
    """

    def __init__(
        self,
        scenario: Scenario,
        faults: list[FaultSpec],
        device: ConcentratorSpec,
        clock: Callable[[], float],
    ) -> None:
        """Args: faults: the scenario's; device: the concentrator; clock: simulated Unix time."""
        self._faults = [
            f
            for f in faults
            if f.kind in ("modbus_exception", "modbus_timeout") and targets(f, device)
        ]
        self._start = scenario.start
        self._clock = clock
        self._rng = np.random.default_rng([scenario.seed, FAULT_STREAM, 999, device.key])
        self._events: list[tuple[FaultSpec, str, int]] = []

    def decide(self) -> str | None:
        """``"exception"``, ``"timeout"`` or None (answer normally) for the request at hand."""
        now = self._clock()
        hour = (now - self._start) / 3600
        for fault in self._faults:
            if fault.active(hour) and self._rng.random() < fault.share:
                kind = "timeout" if fault.kind == "modbus_timeout" else "exception"
                self._events.append((fault, kind, int(now)))
                return kind
        return None

    def drain(self) -> list[tuple[FaultSpec, str, int]]:
        """Injected events since the last call."""
        events, self._events = self._events, []
        return events
