"""The simulated field as a whole: meters, concentrators, feeder heads and transformers over time.

``close_interval`` advances every concentrator by one 15-minute interval: true energies from the
load profiles, faults applied to what is served, the feeder-head meter fed with the true sum
plus technical losses, and the record written. ``telemetry`` gives transformer sensor readings
at any minute. No network here: ``runner`` serves this over Modbus TCP and MQTT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from substation_sim import profiles, weather
from substation_sim.concentrator import Concentrator
from substation_sim.faults import MeterEffect, apply_value_faults, fault_rng, targets
from substation_sim.record import FieldRecord, TruthRow
from substation_sim.register_map import INTERVAL_SECONDS
from substation_sim.scenario import Scenario
from substation_sim.thermal import FAULT_SIGNATURE, Reading, TransformerSensors
from substation_sim.topology import (
    ConcentratorSpec,
    MeterSet,
    SubstationSpec,
    build_topology,
)

REGISTER_MODULUS = 1_000_000_000  # a 6-digit kWh register: 999,999,999 Wh, then 0
VALUE_FAULTS = ("missing", "spike", "zero", "negative", "stuck", "storm")


@dataclass
class _MeterState:
    """What a concentrator's meters carry from one interval to the next."""

    true_register: np.ndarray  # int64, Wh, never wraps
    offset: np.ndarray  # int64, added to the true register before it is served (resets)
    last_served: np.ndarray  # int64, last served interval energy (what a stuck meter repeats)


class Field:
    """Every device of a scenario, stepped one interval at a time."""

    def __init__(
        self, scenario: Scenario, *, record: FieldRecord, inject_faults: bool = True
    ) -> None:
        """Build the topology and devices.

        Args:
            scenario: what to simulate.
            record: where served readings and ground truth go.
            inject_faults: False gives the same field with its errors left out: same meters,
                same clean values, same register rollovers (those are meter behaviour), which
                tests compare against.

        """
        self.scenario = scenario
        self.record = record
        self.inject = inject_faults
        self.substations: tuple[SubstationSpec, ...] = build_topology(scenario)
        self.interval = 0
        self.faults = list(scenario.faults)
        self.concentrators: dict[str, Concentrator] = {}
        self.specs: dict[str, ConcentratorSpec] = {}
        self.feeder_heads: dict[str, Concentrator] = {}
        self._state: dict[str, _MeterState] = {}
        self._feeder_register: dict[str, int] = {}
        self._class_power: dict[str, np.ndarray] = {}
        self.sensors: dict[str, TransformerSensors] = {}
        for substation in self.substations:
            self._add_substation(substation)

    def _add_substation(self, substation: SubstationSpec) -> None:
        power = np.zeros(len(profiles.CUSTOMER_CLASSES))
        for spec in substation.concentrators:
            device = Concentrator(
                name=spec.name,
                meters=spec.meters,
                history_intervals=self.scenario.history_intervals,
            )
            self.concentrators[spec.name] = device
            self.specs[spec.name] = spec
            n = len(spec.meters)
            self._state[spec.name] = _MeterState(
                true_register=spec.meters.initial_registers.copy(),
                offset=self._rollover_offsets(spec),
                last_served=np.zeros(n, dtype=np.int64),
            )
            np.add.at(
                power,
                spec.meters.classes,
                profiles.MEAN_POWER_W[spec.meters.classes] * spec.meters.scales,
            )
        self._class_power[substation.name] = power
        head = MeterSet(
            serials=np.array([substation.feeder_head_serial]),
            classes=np.zeros(1, dtype=np.int8),
            scales=np.ones(1),
            feeders=np.zeros(1, dtype=np.int16),
            initial_registers=np.zeros(1, dtype=np.int64),
        )
        self.feeder_heads[substation.name] = Concentrator(
            name=f"{substation.name}-FH",
            meters=head,
            history_intervals=self.scenario.history_intervals,
        )
        self._feeder_register[substation.name] = 0
        for transformer in substation.transformers:
            sensors = TransformerSensors(
                transformer, seed=self.scenario.seed, start=self.scenario.start
            )
            for fault in self.faults:
                if (
                    self.inject
                    and fault.kind == "incipient_fault"
                    and fault.region in (None, transformer.region)
                ):
                    sensors.fault_start = self.scenario.start + int(fault.start_hour * 3600)
                    sensors.fault_nature = fault.nature
            self.sensors[transformer.name] = sensors

    # -- time -------------------------------------------------------------------------------

    def interval_end(self, interval: int) -> int:
        """End (Unix seconds) of interval number ``interval`` (the first closes at start + 900)."""
        return self.scenario.start + interval * INTERVAL_SECONDS

    def hour(self, seconds: float) -> float:
        """Simulated hours since the scenario's start."""
        return (seconds - self.scenario.start) / 3600

    def ambient_c(self, seconds: float) -> float:
        """Ambient temperature at the substations."""
        return weather.ambient_c(
            seconds,
            mean_c=self.scenario.ambient_mean_c,
            daily_swing_c=self.scenario.ambient_daily_swing_c,
        )

    def _energies(self, spec: ConcentratorSpec, interval_end: int) -> np.ndarray:
        return profiles.interval_energy_wh(
            seed=self.scenario.seed,
            device_key=spec.key,
            classes=spec.meters.classes,
            scales=spec.meters.scales,
            interval_end=interval_end,
            interval_seconds=INTERVAL_SECONDS,
            ambient_c=self.ambient_c(interval_end - INTERVAL_SECONDS / 2),
        )

    # -- rollover placement -----------------------------------------------------------------

    def _rollover_offsets(self, spec: ConcentratorSpec) -> np.ndarray:
        """Place meters chosen for a rollover so their register wraps in the fault's first interval.

        Part of the field, not an injected error: the clean run has the same rollovers.
        """
        n = len(spec.meters)
        offset = np.zeros(n, dtype=np.int64)
        for fault in self.faults:
            if fault.kind != "rollover" or not targets(fault, spec):
                continue
            first = max(1, int(np.ceil(fault.start_hour * 3600 / INTERVAL_SECONDS)))
            used = np.zeros(n, dtype=np.int64)
            for interval in range(1, first):
                used += self._energies(spec, self.interval_end(interval))
            last = self._energies(spec, self.interval_end(first))
            picked = np.flatnonzero(
                (fault_rng(self.scenario, fault, spec.key).random(n) < fault.share) & (last > 1)
            )
            before = spec.meters.initial_registers[picked] + used[picked]
            offset[picked] = REGISTER_MODULUS - last[picked] // 2 - before
        return offset

    # -- one interval -----------------------------------------------------------------------

    def close_interval(self) -> int:
        """Close the next interval on every device; return its (true) end time."""
        self.interval += 1
        end = self.interval_end(self.interval)
        hour = self.hour(end)
        truth: list[TruthRow] = []
        served: list[tuple[str, int, int, int, int]] = []
        for substation in self.substations:
            customer_wh = 0
            for spec in substation.concentrators:
                customer_wh += self._close_concentrator(spec, end, hour, served, truth)
            self._close_feeder_head(substation, end, customer_wh, served)
        self.record.add_served(served)
        self.record.add_truth(truth)
        return end

    def _close_concentrator(
        self,
        spec: ConcentratorSpec,
        end: int,
        hour: float,
        served_rows: list[tuple[str, int, int, int, int]],
        truth: list[TruthRow],
    ) -> int:
        state = self._state[spec.name]
        energy = self._energies(spec, end)
        before = state.true_register + state.offset
        state.true_register += energy
        updated = np.ones(len(energy), dtype=bool)
        served = energy
        effects: list[MeterEffect] = []
        active = [f for f in self.faults if f.kind in VALUE_FAULTS and targets(f, spec)]
        if self.inject and active:
            served, effects = apply_value_faults(
                self.scenario,
                active,
                device_key=spec.key,
                interval_end=end,
                hour=hour,
                energy=energy,
                last_served=state.last_served,
                updated=updated,
            )
        if self.inject:
            self._apply_resets(spec, end, hour, before, truth)
        register = state.true_register + state.offset
        wrapped = np.flatnonzero(register // REGISTER_MODULUS > before // REGISTER_MODULUS)
        register = register % REGISTER_MODULUS
        skew = self._clock_skew(spec, end, hour, truth)
        reported_end = end + skew
        device = self.concentrators[spec.name]
        device.clock_offset_seconds = skew  # its clock registers are off by as much
        device.publish(
            interval_end=reported_end,
            energy=served,
            register=register,
            status=np.zeros(len(energy), dtype=np.uint16),
            updated=updated,
        )
        state.last_served = np.where(updated, served, state.last_served)
        serials = spec.meters.serials
        for effect in effects:
            truth.extend(
                TruthRow(
                    effect.fault.index,
                    effect.fault.kind,
                    effect.detail,
                    spec.name,
                    str(serials[m]),
                    end,
                    end,
                    float(energy[m]),
                    None if effect.detail == "missing" else float(served[m]),
                )
                for m in effect.meters
            )
        rollover = next((f.index for f in self.faults if f.kind == "rollover"), -1)
        truth.extend(
            TruthRow(
                rollover,
                "rollover",
                "rollover",
                spec.name,
                str(serials[m]),
                end,
                end,
                float(before[m] % REGISTER_MODULUS + energy[m]),
                float(register[m]),
            )
            for m in wrapped
        )
        index = np.flatnonzero(updated)
        served_rows.extend(
            zip(
                [spec.name] * len(index),
                serials[index].tolist(),
                [reported_end] * len(index),
                served[index].tolist(),
                register[index].tolist(),
                strict=True,
            )
        )
        return int(energy.sum())

    def _apply_resets(
        self,
        spec: ConcentratorSpec,
        end: int,
        hour: float,
        before: np.ndarray,
        truth: list[TruthRow],
    ) -> None:
        """Meters reset in this interval restart their register from zero at its start."""
        state = self._state[spec.name]
        for fault in self.faults:
            if fault.kind != "reset" or not targets(fault, spec) or not fault.active(hour):
                continue
            rng = fault_rng(self.scenario, fault, spec.key, end)
            picked = np.flatnonzero(rng.random(len(before)) < fault.share)
            true_register = (state.true_register[picked] + state.offset[picked]) % REGISTER_MODULUS
            state.offset[picked] = -(before[picked] - state.offset[picked])
            truth.extend(
                TruthRow(
                    fault.index,
                    "reset",
                    "reset",
                    spec.name,
                    str(spec.meters.serials[m]),
                    end,
                    None,
                    float(t),
                    float(state.true_register[m] + state.offset[m]),
                )
                for m, t in zip(picked, true_register, strict=True)
            )

    def _clock_skew(
        self, spec: ConcentratorSpec, end: int, hour: float, truth: list[TruthRow]
    ) -> int:
        if not self.inject:
            return 0
        for fault in self.faults:
            if fault.kind == "clock_skew" and targets(fault, spec) and fault.active(hour):
                skew = round(fault.seconds)
                truth.append(
                    TruthRow(
                        fault.index,
                        "clock_skew",
                        f"{skew:+d} s",
                        spec.name,
                        None,
                        end,
                        end,
                        float(end),
                        float(end + skew),
                    )
                )
                return skew
        return 0

    def _close_feeder_head(
        self,
        substation: SubstationSpec,
        end: int,
        customer_wh: int,
        served_rows: list[tuple[str, int, int, int, int]],
    ) -> None:
        """The feeder head measures what entered: customer energy plus technical losses."""
        energy = round(customer_wh / (1 - self.scenario.losses_share))
        self._feeder_register[substation.name] += energy
        register = self._feeder_register[substation.name] % REGISTER_MODULUS
        head = self.feeder_heads[substation.name]
        head.publish(
            interval_end=end,
            energy=np.array([energy]),
            register=np.array([register]),
            status=np.zeros(1, dtype=np.uint16),
            updated=np.ones(1, dtype=bool),
        )
        served_rows.append((head.name, substation.feeder_head_serial, end, energy, register))

    # -- transformers -----------------------------------------------------------------------

    def substation_load_w(self, substation: SubstationSpec, seconds: float) -> float:
        """Expected power drawn through the substation at that moment, losses included."""
        classes = np.arange(len(profiles.CUSTOMER_CLASSES))
        ambient = self.ambient_c(seconds)
        power = (
            self._class_power[substation.name]
            * profiles.shape_factor(classes, seconds)
            * profiles.season_factor(seconds)
            * profiles.temperature_factor(classes, ambient)
        )
        return float(power.sum()) / (1 - self.scenario.losses_share)

    def telemetry(self, seconds: int) -> list[Reading]:
        """Every transformer's sensor values at minute ``seconds``."""
        return [
            self.sensors[transformer.name].reading(
                seconds, lambda t, s=substation: self.substation_load_w(s, t), self.ambient_c
            )
            for substation in self.substations
            for transformer in substation.transformers
        ]

    def incipient_fault_truth(self) -> list[TruthRow]:
        """Ground truth of transformer faults, recorded once at the start of a run."""
        rows = []
        for fault in self.faults:
            if fault.kind != "incipient_fault" or not self.inject:
                continue
            for name, sensors in self.sensors.items():
                if sensors.fault_start is not None and fault.region in (None, sensors.spec.region):
                    rows.append(
                        TruthRow(
                            fault.index,
                            "incipient_fault",
                            f"{fault.nature}: {FAULT_SIGNATURE[fault.nature]}",
                            name,
                            name,
                            sensors.fault_start,
                            sensors.fault_start + int(fault.hours * 3600),
                            None,
                            None,
                        )
                    )
        return rows
