"""Scenario files (TOML): the field to simulate, its clock, its network and its faults.

The file is described by typed models (``ScenarioFile``, pydantic, the project's one
configuration convention: ``proto.settings``); every error names the dotted key at fault, e.g.
``regions[1].meters_per_concentrator: must be 1..4089, got 5000``,
and a misspelt key gets a did-you-mean. The validated file becomes a ``Scenario``.
``substation_sim/scenarios/`` holds the scenarios that ship with the project and
docs/simulator.md documents every key.
"""

from __future__ import annotations

import datetime as dt
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from proto.settings import Settings, read_toml, unique_by, validate
from substation_sim.register_map import INTERVAL_SECONDS, MAX_METERS

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class ScenarioError(ValueError):
    """The scenario is invalid; ``key`` is the dotted key at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """How many of each device one region has, and its customer mix."""

    name: str
    substations: int
    concentrators_per_substation: int
    meters_per_concentrator: int
    transformers_per_substation: int
    feeders_per_substation: int
    mix: dict[str, float]


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One configured fault: what, where, when (simulated hours from the start) and how much."""

    kind: str
    region: str | None
    substation: int | None
    start_hour: float
    hours: float
    share: float
    factor: float
    seconds: float
    index: int  # position in the scenario file, to name it in the ground truth

    def active(self, hour: float) -> bool:
        """Whether simulated hour ``hour`` (since the start) lies in this fault's window."""
        return self.start_hour <= hour < self.start_hour + self.hours


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole validated scenario."""

    name: str
    seed: int
    start: int  # Unix seconds, on the 15-minute grid
    speed: float
    history_intervals: int
    losses_share: float
    ambient_mean_c: float
    ambient_daily_swing_c: float
    host: str
    base_port: int
    mqtt_host: str
    mqtt_port: int | None
    topic_prefix: str
    publish_interval_seconds: int
    regions: tuple[RegionSpec, ...]
    faults: tuple[FaultSpec, ...] = field(default=())

    @property
    def meters(self) -> int:
        """Customer meters in the whole field."""
        return sum(
            r.substations * r.concentrators_per_substation * r.meters_per_concentrator
            for r in self.regions
        )


Region = Literal["North", "South", "East", "West"]
REGION_NAMES: tuple[str, ...] = typing.get_args(Region)
FaultKind = Literal[
    "missing", "spike", "zero", "negative", "stuck", "rollover", "reset",
    "clock_skew", "modbus_exception", "modbus_timeout", "offline",
    "duplicate", "out_of_order", "malformed", "broker_outage",
    "storm", "incipient_fault",
]  # fmt: skip


class ScenarioSection(Settings):
    """What the scenario is called, its seed and its clock."""

    name: str = Field(min_length=1)
    seed: int = Field(1, ge=0, le=2**31)
    start: int = Field("2026-11-02T00:00:00Z", description="ISO 8601 with a zone, on the grid")  # type: ignore[assignment]
    speed: float = Field(900.0, ge=0.001, le=100_000)
    history_intervals: int = Field(96, ge=96, le=2_880)
    losses_share: float = Field(0.07, ge=0.0, le=0.3)
    ambient_mean_c: float = Field(8.0, ge=-40, le=45)
    ambient_daily_swing_c: float = Field(6.0, ge=0, le=30)

    @field_validator("start", mode="before")
    @classmethod
    def _start_time(cls, text: Any) -> Any:  # noqa: ANN401 - the TOML value, checked here
        """Unix seconds of an ISO 8601 time with a zone, on a 15-minute boundary."""
        if not isinstance(text, str):
            raise ValueError("must be an ISO 8601 time, e.g. 2026-11-02T00:00:00Z")  # noqa: TRY004
        try:
            start = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not an ISO 8601 time") from None
        if start.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-11-02T00:00:00Z")
        seconds = int(start.timestamp())
        if seconds % INTERVAL_SECONDS:
            raise ValueError("must be on a 15-minute boundary")
        return seconds


class ModbusSection(Settings):
    """Where the concentrators listen: consecutive ports from ``base_port``."""

    host: str = "127.0.0.1"
    base_port: int = Field(5020, ge=1, le=65_000)


class MqttSection(Settings):
    """The broker transformers publish to; no table, no telemetry."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65_535)
    topic_prefix: str = "grid"
    publish_interval_seconds: int = Field(60, ge=1, le=3_600)


class Mix(Settings):
    """Shares of customer classes; they add up to 1."""

    residential: float = Field(0.0, ge=0.0, le=1.0)
    commercial: float = Field(0.0, ge=0.0, le=1.0)
    industrial: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _whole(self) -> Mix:
        total = self.residential + self.commercial + self.industrial
        if abs(total - 1.0) > 1e-6:  # noqa: PLR2004
            raise ValueError(f"shares must add up to 1, got {total}")
        return self


class RegionSection(Settings):
    """One region's devices and customers."""

    name: Region
    substations: int = Field(1, ge=1, le=500)
    concentrators_per_substation: int = Field(1, ge=1, le=64)
    meters_per_concentrator: int = Field(1000, ge=1, le=MAX_METERS)
    transformers_per_substation: int = Field(1, ge=1, le=2)
    feeders_per_substation: int = Field(4, ge=1, le=32)
    mix: Mix = Mix(residential=1.0)


class FaultSection(Settings):
    """One fault: what, where, when (simulated hours from the start) and how much."""

    kind: FaultKind
    region: Region | None = None
    substation: int | None = Field(None, ge=0, le=499)
    start_hour: float = Field(0.0, ge=0.0, le=24 * 365)
    hours: float = Field(1.0, ge=0.0, le=24 * 365)
    share: float = Field(0.01, ge=0.0, le=1.0)
    factor: float = Field(10.0, ge=-1000.0, le=1000.0)
    seconds: float = Field(30.0, ge=-86_400, le=86_400)


class ScenarioFile(Settings):
    """A whole scenario file."""

    scenario: ScenarioSection
    modbus: ModbusSection = ModbusSection()
    mqtt: MqttSection | None = None
    regions: Annotated[list[RegionSection], unique_by("name")] = Field(min_length=1)
    faults: list[FaultSection] = Field(default_factory=list)


def load_scenario(source: str | Path) -> Scenario:
    """Load a scenario by file path, or by the name of one that ships (``small``, ``storm``...)."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{source}.toml"
    if not path.exists():
        shipped = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
        raise ScenarioError("file", f"no scenario {source!r} (shipped: {shipped})")
    return parse_scenario(read_toml(path, ScenarioError))


def parse_scenario(data: dict[str, Any]) -> Scenario:
    """Validate an already-parsed scenario document."""
    file = validate(ScenarioFile, data, error=ScenarioError)
    names = [r.name for r in file.regions]
    for index, fault in enumerate(file.faults):
        if fault.region is not None and fault.region not in names:
            raise ScenarioError(f"faults[{index}].region", f"no region {fault.region!r} here")
        if fault.substation is not None and fault.region is None:
            raise ScenarioError(f"faults[{index}].substation", "needs a region")
    devices = sum(r.substations * (r.concentrators_per_substation + 1) for r in file.regions)
    if file.modbus.base_port + devices > 65_535:  # noqa: PLR2004
        raise ScenarioError("modbus.base_port", f"{devices} devices do not fit above it")
    return _scenario(file)


def _scenario(file: ScenarioFile) -> Scenario:
    head, mqtt = file.scenario, file.mqtt or MqttSection()
    return Scenario(
        name=head.name,
        seed=head.seed,
        start=head.start,
        speed=head.speed,
        history_intervals=head.history_intervals,
        losses_share=head.losses_share,
        ambient_mean_c=head.ambient_mean_c,
        ambient_daily_swing_c=head.ambient_daily_swing_c,
        host=file.modbus.host,
        base_port=file.modbus.base_port,
        mqtt_host=mqtt.host,
        mqtt_port=file.mqtt.port if file.mqtt else None,
        topic_prefix=mqtt.topic_prefix,
        publish_interval_seconds=mqtt.publish_interval_seconds,
        regions=tuple(
            RegionSpec(
                mix={k: v for k, v in r.mix.model_dump().items() if v},
                **r.model_dump(exclude={"mix"}),
            )
            for r in file.regions
        ),
        faults=tuple(FaultSpec(index=i, **f.model_dump()) for i, f in enumerate(file.faults)),
    )
