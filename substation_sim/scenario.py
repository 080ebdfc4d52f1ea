"""Scenario files (TOML): the field to simulate, its clock, its network and its faults.

The file is described by typed models (``ScenarioFile``, msgspec structs, the project's one
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

import msgspec
from msgspec import Meta

from proto.settings import Settings, invalid, read_toml, unique, validate
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
    nature: str = "thermal"  # an incipient_fault's: thermal, partial_discharge or arcing

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


class ScenarioSection(Settings, frozen=True):
    """What the scenario is called, its seed and its clock."""

    name: Annotated[str, Meta(min_length=1)]
    seed: Annotated[int, Meta(ge=0, le=2**31)] = 1
    start: Annotated[str, Meta(description="ISO 8601 with a zone, on the grid")] = (
        "2026-11-02T00:00:00Z"
    )
    speed: Annotated[float, Meta(ge=0.001, le=100_000)] = 900.0
    history_intervals: Annotated[int, Meta(ge=96, le=2_880)] = 96
    losses_share: Annotated[float, Meta(ge=0.0, le=0.3)] = 0.07
    ambient_mean_c: Annotated[float, Meta(ge=-40, le=45)] = 8.0
    ambient_daily_swing_c: Annotated[float, Meta(ge=0, le=30)] = 6.0

    def __post_init__(self) -> None:
        """The start must be a time the field's clock can begin at."""
        try:
            self.start_seconds  # noqa: B018 - parsed to be checked
        except ValueError as exc:
            raise invalid("start", f"{exc}, got {self.start!r}") from None

    @property
    def start_seconds(self) -> int:
        """Unix seconds of ``start``: an ISO 8601 time with a zone, on a 15-minute boundary."""
        try:
            start = dt.datetime.fromisoformat(self.start)
        except ValueError:
            raise ValueError("not an ISO 8601 time, e.g. 2026-11-02T00:00:00Z") from None
        if start.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-11-02T00:00:00Z")
        seconds = int(start.timestamp())
        if seconds % INTERVAL_SECONDS:
            raise ValueError("must be on a 15-minute boundary")
        return seconds


class ModbusSection(Settings, frozen=True):
    """Where the concentrators listen: consecutive ports from ``base_port``."""

    host: str = "127.0.0.1"
    base_port: Annotated[int, Meta(ge=1, le=65_000)] = 5020


class MqttSection(Settings, frozen=True):
    """The broker transformers publish to; no table, no telemetry."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65_535)] = 1883
    topic_prefix: str = "grid"
    publish_interval_seconds: Annotated[int, Meta(ge=1, le=3_600)] = 60


Share = Annotated[float, Meta(ge=0.0, le=1.0)]


class Mix(Settings, frozen=True):
    """Shares of customer classes; they add up to 1."""

    residential: Share = 0.0
    commercial: Share = 0.0
    industrial: Share = 0.0

    def __post_init__(self) -> None:
        """A mix that does not add up would invent or lose customers."""
        total = self.residential + self.commercial + self.industrial
        if abs(total - 1.0) > 1e-6:  # noqa: PLR2004
            raise ValueError(f"shares must add up to 1, got {total}")


class RegionSection(Settings, frozen=True):
    """One region's devices and customers."""

    name: Region
    substations: Annotated[int, Meta(ge=1, le=500)] = 1
    concentrators_per_substation: Annotated[int, Meta(ge=1, le=64)] = 1
    meters_per_concentrator: Annotated[int, Meta(ge=1, le=MAX_METERS)] = 1000
    transformers_per_substation: Annotated[int, Meta(ge=1, le=2)] = 1
    feeders_per_substation: Annotated[int, Meta(ge=1, le=32)] = 4
    mix: Mix = msgspec.field(default_factory=lambda: Mix(residential=1.0))


class FaultSection(Settings, frozen=True):
    """One fault: what, where, when (simulated hours from the start) and how much."""

    kind: FaultKind
    region: Region | None = None
    substation: Annotated[int, Meta(ge=0, le=499)] | None = None
    start_hour: Annotated[float, Meta(ge=0.0, le=24 * 365)] = 0.0
    hours: Annotated[float, Meta(ge=0.0, le=24 * 365)] = 1.0
    share: Share = 0.01
    factor: Annotated[float, Meta(ge=-1000.0, le=1000.0)] = 10.0
    seconds: Annotated[float, Meta(ge=-86_400, le=86_400)] = 30.0
    nature: Annotated[
        Literal["thermal", "partial_discharge", "arcing"],
        Meta(description="An incipient_fault's: which gases it makes"),
    ] = "thermal"


class ScenarioFile(Settings, frozen=True, kw_only=True):  # required keys among optional ones
    """A whole scenario file."""

    scenario: ScenarioSection
    modbus: ModbusSection = msgspec.field(default_factory=ModbusSection)
    mqtt: MqttSection | None = None
    regions: Annotated[list[RegionSection], Meta(min_length=1)]
    faults: list[FaultSection] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        """A region is described once."""
        unique(self.regions, "name", "regions")


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
        start=head.start_seconds,
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
                mix={k: v for k, v in msgspec.structs.asdict(r.mix).items() if v},
                **{k: v for k, v in msgspec.structs.asdict(r).items() if k != "mix"},
            )
            for r in file.regions
        ),
        faults=tuple(
            FaultSpec(index=i, **msgspec.structs.asdict(f)) for i, f in enumerate(file.faults)
        ),
    )
