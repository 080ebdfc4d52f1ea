"""The agent's TOML configuration: loaded, merged with overrides, validated once at start.

Every error names the dotted key at fault, e.g. ``sources.modbus[0].port: must be 1..65535``.
The configuration reference in README.md lists every key below.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.transforms.validate import VeeRules
from proto import limits

log = logging.getLogger(__name__)

SYNCHRONOUS_MODES = ("full", "normal")
WORD_ORDERS = ("high_first", "low_first")
BYTE_ORDERS = ("big", "little")
COMPRESSIONS = ("none", "gzip")
# What the meters behind a device measure; only customers count as consumption (the first is
# the default). The names match proto MeterRole: METER_ROLE_<NAME>.
METER_ROLES = ("customer", "feeder_head", "transformer")


@dataclass(frozen=True, slots=True)
class ModbusSourceConfig:
    """One meter concentrator read over Modbus TCP."""

    name: str
    host: str
    port: int
    unit_id: int
    poll_interval_seconds: float
    timeout_seconds: float
    retries: int
    word_order: str
    byte_order: str
    backfill: bool
    failure_threshold: int
    breaker_reset_seconds: float
    role: str = "customer"  # what its meters measure: one of METER_ROLES

    @property
    def device(self) -> str:
        """How batches and lineage name this device."""
        return f"modbus://{self.host}:{self.port}/{self.unit_id}"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """The broker transformer sensors publish to, and which topic is which transformer."""

    host: str
    port: int
    client_id: str
    qos: int
    topics: dict[str, str]  # topic -> transformer id


@dataclass(frozen=True, slots=True)
class UplinkTlsConfig:
    """``[uplink.tls]``: mutual TLS to the core (files from ``core-ingest ca``)."""

    ca: Path  # the authority the core's certificate must come from
    cert: Path  # the agent's certificate; its common name is the agent id
    key: Path  # the certificate's private key, readable by the agent's user only
    server_name: str | None  # the name to expect in the core's certificate, if not the target's


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole validated configuration of one edge agent."""

    agent_id: str
    signing_key_file: Path
    pseudonym_key_file: Path
    pseudonym_key_id: str
    buffer_path: Path
    buffer_synchronous: str
    buffer_max_bytes: int
    retain_acknowledged_seconds: float
    core_target: str
    batch_max_readings: int
    batch_max_age_seconds: float
    max_in_flight: int
    ack_timeout_seconds: float
    uplink_compression: str
    uplink_max_bytes_per_second: int
    uplink_tls: UplinkTlsConfig | None
    modbus_sources: tuple[ModbusSourceConfig, ...]
    validation: VeeRules
    mqtt: MqttConfig | None


class _Section:
    """Typed access to one TOML table that reports errors with the full dotted key.

    Every key the parser asks for is noted, so ``refuse_unread`` can name any other key of
    the file as unknown (a typo would otherwise pass silently, with the default in its place).
    """

    def __init__(self, data: dict[str, Any], prefix: str, parent: _Section | None = None) -> None:
        self.data = data
        self.prefix = prefix
        self.asked: set[str] = set()
        self.children: list[_Section] = []
        if parent is not None:
            parent.children.append(self)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def table(self, name: str) -> _Section:
        self.asked.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(self.key(name), "must be a table")
        return _Section(value, self.key(name), self)

    def entries(self, name: str, index: int, entry: object) -> _Section:
        """Entry ``index`` of the array of tables ``name`` (``[[name]]``)."""
        self.asked.add(name)
        if not isinstance(entry, dict):
            raise ConfigError(f"{self.key(name)}[{index}]", "must be a table")
        return _Section(entry, f"{self.key(name)}[{index}]", self)

    def refuse_unread(self) -> None:
        """Raise ConfigError for the first key no parser asked for, here or in a sub-table."""
        for name in sorted(set(self.data) - self.asked):
            close = difflib.get_close_matches(name, self.asked, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(self.key(name), f"is not a known setting{hint}")
        for child in self.children:
            child.refuse_unread()

    def get(self, name: str, kind: type, default: Any = None) -> Any:  # noqa: ANN401 - TOML value
        self.asked.add(name)
        if name not in self.data:
            if default is None:
                raise ConfigError(self.key(name), "is required")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.key(name), f"must be {kind.__name__}, got {value!r}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, str, allowed[0])
        if value not in allowed:
            raise ConfigError(self.key(name), f"must be one of {allowed}, got {value!r}")
        return value

    def number(self, name: str, kind: type, default: float | None, low: float, high: float) -> Any:  # noqa: ANN401
        value = self.get(name, kind, default)
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be {low}..{high}, got {value!r}")
        return value


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read ``path``, apply top-level table ``overrides``, validate and return the config.

    Relative file paths in the config are taken relative to the config file's folder.

    Raises:
        ConfigError: naming the key at fault (or ``file`` when the file itself is bad).

    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("file", f"{path} is not UTF-8 text: byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("file", f"{path} is not valid TOML: {exc}") from None
    for table, values in (overrides or {}).items():
        data.setdefault(table, {}).update({k: v for k, v in values.items() if v is not None})
    return parse_config(data, base=path.parent)


def parse_config(data: dict[str, Any], *, base: Path) -> AgentConfig:
    """Validate an already-parsed TOML document (see ``load_config``)."""
    root = _Section(data, "")
    agent = root.table("agent")
    pseudo = root.table("pseudonymization")
    buffer = root.table("buffer")
    uplink = root.table("uplink")
    synchronous = buffer.choice("synchronous", SYNCHRONOUS_MODES)
    agent_id = agent.get("id", str)
    if not agent_id.strip() or len(agent_id) > 64:  # noqa: PLR2004 - fits the core's agent_id column
        raise ConfigError(agent.key("id"), "must be 1..64 characters")
    config = AgentConfig(
        agent_id=agent_id,
        signing_key_file=base / agent.get("signing_key_file", str),
        pseudonym_key_file=base / pseudo.get("key_file", str),
        pseudonym_key_id=pseudo.get("key_id", str),
        buffer_path=base / buffer.get("path", str, "buffer.sqlite"),
        buffer_synchronous=synchronous,
        buffer_max_bytes=buffer.number("max_bytes", int, 1 << 30, 1 << 20, 1 << 40),
        retain_acknowledged_seconds=buffer.number(
            "retain_acknowledged_seconds", float, 86_400.0, 0, 30 * 86_400
        ),
        core_target=uplink.get("target", str),
        batch_max_readings=uplink.number("batch_max_readings", int, 5_000, 1, 50_000),
        batch_max_age_seconds=uplink.number("batch_max_age_seconds", float, 5.0, 0, 3_600),
        max_in_flight=uplink.number("max_in_flight", int, 8, 1, 256),
        ack_timeout_seconds=uplink.number("ack_timeout_seconds", float, 60.0, 1, 3_600),
        uplink_compression=uplink.choice("compression", COMPRESSIONS),
        uplink_max_bytes_per_second=uplink.number("max_bytes_per_second", int, 0, 0, 10**10),
        uplink_tls=_uplink_tls(uplink, base=base),
        modbus_sources=_modbus_sources(root),
        validation=_validation(root.table("validation")),
        mqtt=_mqtt(root.table("mqtt"), agent_id),
    )
    root.refuse_unread()
    return config


def _mqtt(table: _Section, agent_id: str) -> MqttConfig | None:
    """The MQTT source, or None without an ``[mqtt]`` table."""
    if not table.data:
        return None
    entries = table.data.get("transformers", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            table.key("transformers"),
            "must list at least one [[mqtt.transformers]] with topic and id",
        )
    topics = {}
    for index, entry in enumerate(entries):
        section = table.entries("transformers", index, entry)
        topic = section.get("topic", str)
        if any(c in topic for c in "+#"):
            raise ConfigError(section.key("topic"), "must be a topic name, not a wildcard filter")
        if topic in topics:
            raise ConfigError(section.key("topic"), f"{topic!r} is mapped twice")
        topics[topic] = section.get("transformer_id", str)
    qos = table.number("qos", int, 1, 0, 2)
    if qos == 0:
        log.warning(
            "mqtt.qos = 0: the broker will not redeliver messages lost while the agent "
            "is away; telemetry is then best-effort, not at-least-once"
        )
    return MqttConfig(
        host=table.get("host", str),
        port=table.number("port", int, 1883, 1, 65_535),
        client_id=table.get("client_id", str, f"edge-agent-{agent_id}"),
        qos=qos,
        topics=topics,
    )


def _uplink_tls(uplink: _Section, *, base: Path) -> UplinkTlsConfig | None:
    """``[uplink.tls]``, or None for plaintext; ca, cert and key all, or no table at all."""
    if "tls" not in uplink.data:
        return None
    tls = uplink.table("tls")
    return UplinkTlsConfig(
        ca=base / tls.get("ca", str),
        cert=base / tls.get("cert", str),
        key=base / tls.get("key", str),
        server_name=tls.get("server_name", str, "") or None,
    )


def _validation(table: _Section) -> VeeRules:
    """The VEE thresholds; every key defaults to ruleset vee-1's value."""
    defaults = VeeRules()
    values = {}
    for setting in dataclasses.fields(VeeRules):
        default = getattr(defaults, setting.name)
        kind = type(default)
        high = limits.MAX_INTERVAL_ENERGY_WH if setting.name == "max_interval_energy_wh" else 10**9
        values[setting.name] = table.number(setting.name, kind, default, 0, high)
    return VeeRules(**values)


def _modbus_sources(root: _Section) -> tuple[ModbusSourceConfig, ...]:
    table = root.table("sources")
    entries = table.data.get("modbus", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            "sources.modbus", "must list at least one concentrator ([[sources.modbus]])"
        )
    sources = []
    for index, entry in enumerate(entries):
        section = table.entries("modbus", index, entry)
        sources.append(
            ModbusSourceConfig(
                name=section.get("name", str),
                host=section.get("host", str),
                port=section.number("port", int, 502, 1, 65_535),
                unit_id=section.number("unit_id", int, 1, 1, 247),
                poll_interval_seconds=section.number(
                    "poll_interval_seconds", float, 60.0, 0.05, 3_600
                ),
                timeout_seconds=section.number("timeout_seconds", float, 3.0, 0.1, 60),
                retries=section.number("retries", int, 1, 0, 10),
                word_order=section.choice("word_order", WORD_ORDERS),
                byte_order=section.choice("byte_order", BYTE_ORDERS),
                backfill=section.get("backfill", bool, True),
                failure_threshold=section.number("failure_threshold", int, 3, 1, 100),
                breaker_reset_seconds=section.number(
                    "breaker_reset_seconds", float, 30.0, 0.1, 3_600
                ),
                role=section.choice("role", METER_ROLES),
            )
        )
    names = [s.name for s in sources]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ConfigError("sources.modbus", f"name {duplicate!r} is used twice")
    return tuple(sources)
