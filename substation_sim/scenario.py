"""Scenario files (TOML): the field to simulate, its clock, its network and its faults.

Every error names the dotted key at fault, e.g. ``regions[1].meters_per_concentrator: must be
1..4089``. ``substation_sim/scenarios/`` holds the scenarios that ship with the project and
docs/simulator.md documents every key.
"""

from __future__ import annotations

import datetime as dt
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from substation_sim.register_map import INTERVAL_SECONDS, MAX_METERS

SCENARIO_DIR = Path(__file__).parent / "scenarios"
REGION_NAMES = ("North", "South", "East", "West")
CUSTOMER_CLASSES = ("residential", "commercial", "industrial")
METER_FAULTS = ("missing", "spike", "zero", "negative", "stuck", "rollover", "reset")
DEVICE_FAULTS = ("clock_skew", "modbus_exception", "modbus_timeout", "offline")
MQTT_FAULTS = ("duplicate", "out_of_order", "malformed", "broker_outage")
OTHER_FAULTS = ("storm", "incipient_fault")
FAULT_KINDS = METER_FAULTS + DEVICE_FAULTS + MQTT_FAULTS + OTHER_FAULTS


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


class _Table:
    """Typed access to one TOML table; errors carry the full dotted key."""

    def __init__(self, data: object, prefix: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(prefix, "must be a table")
        self.data: dict[str, Any] = data
        self.prefix = prefix
        self.asked: set[str] = set()  # keys the parser read: any other is a typo

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, default: object = None) -> Any:  # noqa: ANN401 - a TOML value
        """The raw value, noted as a known key."""
        self.asked.add(name)
        return self.data.get(name, default)

    def value(self, name: str, kind: type, default: object = None) -> Any:  # noqa: ANN401
        value = self.get(name, default)
        if value is None:
            raise ScenarioError(self.key(name), "is required")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise ScenarioError(self.key(name), f"must be {kind.__name__}, got {value!r}")
        return value

    def number(self, name: str, kind: type, default: float, low: float, high: float) -> Any:  # noqa: ANN401
        value = self.value(name, kind, default)
        if not low <= value <= high:
            raise ScenarioError(self.key(name), f"must be {low}..{high}, got {value!r}")
        return value


def load_scenario(source: str | Path) -> Scenario:
    """Load a scenario by file path, or by the name of one that ships (``small``, ``storm``...)."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{source}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
        raise ScenarioError("file", f"no scenario {source!r} (shipped: {shipped})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("file", f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError("file", f"{path} is not UTF-8 text: byte {exc.start}") from None
    return parse_scenario(data)


def _start_time(table: _Table) -> int:
    text = table.value("start", str, "2026-11-02T00:00:00Z")
    try:
        start = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ScenarioError(table.key("start"), f"not an ISO 8601 time: {text!r}") from None
    if start.tzinfo is None:
        raise ScenarioError(table.key("start"), "needs a time zone, e.g. 2026-11-02T00:00:00Z")
    seconds = int(start.timestamp())
    if seconds % INTERVAL_SECONDS:
        raise ScenarioError(table.key("start"), "must be on a 15-minute boundary")
    return seconds


def _refuse_unknown(tables: list[_Table]) -> None:
    """Name the first key no parser read (a typo would otherwise take the default)."""
    for table in tables:
        for name in sorted(set(table.data) - table.asked):
            close = difflib.get_close_matches(name, table.asked, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ScenarioError(table.key(name), f"is not a known setting{hint}")


def parse_scenario(data: dict[str, Any]) -> Scenario:
    """Validate an already-parsed scenario document."""
    root = _Table(data, "")
    head, modbus, mqtt = (_Table(root.get(n, {}), n) for n in ("scenario", "modbus", "mqtt"))
    region_tables = [
        _Table(entry, f"regions[{i}]") for i, entry in enumerate(root.value("regions", list))
    ]
    regions = tuple(_region(table) for table in region_tables)
    if not regions:
        raise ScenarioError("regions", "must list at least one region")
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise ScenarioError("regions", f"a region appears twice: {names}")
    fault_tables = [_Table(entry, f"faults[{i}]") for i, entry in enumerate(root.get("faults", []))]
    faults = tuple(_fault(table, i, names) for i, table in enumerate(fault_tables))
    scenario = Scenario(
        name=head.value("name", str),
        seed=head.number("seed", int, 1, 0, 2**31),
        start=_start_time(head),
        speed=head.number("speed", float, 900.0, 0.001, 100_000),
        history_intervals=head.number("history_intervals", int, 96, 96, 2_880),
        losses_share=head.number("losses_share", float, 0.07, 0.0, 0.3),
        ambient_mean_c=head.number("ambient_mean_c", float, 8.0, -40, 45),
        ambient_daily_swing_c=head.number("ambient_daily_swing_c", float, 6.0, 0, 30),
        host=modbus.value("host", str, "127.0.0.1"),
        base_port=modbus.number("base_port", int, 5020, 1, 65_000),
        mqtt_host=mqtt.value("host", str, "127.0.0.1"),
        mqtt_port=mqtt.number("port", int, 1883, 1, 65_535) if mqtt.data else None,
        topic_prefix=mqtt.value("topic_prefix", str, "grid"),
        publish_interval_seconds=mqtt.number("publish_interval_seconds", int, 60, 1, 3_600),
        regions=regions,
        faults=faults,
    )
    _refuse_unknown([root, head, modbus, mqtt, *region_tables, *fault_tables])
    devices = sum(r.substations * (r.concentrators_per_substation + 1) for r in scenario.regions)
    if scenario.base_port + devices > 65_535:  # noqa: PLR2004
        raise ScenarioError("modbus.base_port", f"{devices} devices do not fit above it")
    return scenario


def _region(table: _Table) -> RegionSpec:
    name = table.value("name", str)
    if name not in REGION_NAMES:
        raise ScenarioError(table.key("name"), f"must be one of {REGION_NAMES}, got {name!r}")
    mix_table = _Table(table.get("mix", {"residential": 1.0}), table.key("mix"))
    mix = {}
    for kind, share in mix_table.data.items():
        if kind not in CUSTOMER_CLASSES:
            raise ScenarioError(mix_table.key(kind), f"must be one of {CUSTOMER_CLASSES}")
        mix[kind] = mix_table.number(kind, float, share, 0.0, 1.0)
    if abs(sum(mix.values()) - 1.0) > 1e-6:  # noqa: PLR2004
        raise ScenarioError(table.key("mix"), f"shares must add up to 1, got {sum(mix.values())}")
    return RegionSpec(
        name=name,
        substations=table.number("substations", int, 1, 1, 500),
        concentrators_per_substation=table.number("concentrators_per_substation", int, 1, 1, 64),
        meters_per_concentrator=table.number("meters_per_concentrator", int, 1000, 1, MAX_METERS),
        transformers_per_substation=table.number("transformers_per_substation", int, 1, 1, 2),
        feeders_per_substation=table.number("feeders_per_substation", int, 4, 1, 32),
        mix=mix,
    )


def _fault(table: _Table, index: int, regions: list[str]) -> FaultSpec:
    kind = table.value("kind", str)
    if kind not in FAULT_KINDS:
        raise ScenarioError(table.key("kind"), f"must be one of {FAULT_KINDS}, got {kind!r}")
    region = table.get("region")
    if region is not None and region not in regions:
        raise ScenarioError(table.key("region"), f"no region {region!r} in this scenario")
    substation = table.get("substation")
    if substation is not None:
        substation = table.number("substation", int, 0, 0, 499)
        if region is None:
            raise ScenarioError(table.key("substation"), "needs a region")
    return FaultSpec(
        kind=kind,
        region=region,
        substation=substation,
        start_hour=table.number("start_hour", float, 0.0, 0.0, 24 * 365),
        hours=table.number("hours", float, 1.0, 0.0, 24 * 365),
        share=table.number("share", float, 0.01, 0.0, 1.0),
        factor=table.number("factor", float, 10.0, -1000.0, 1000.0),
        seconds=table.number("seconds", float, 30.0, -86_400, 86_400),
        index=index,
    )
