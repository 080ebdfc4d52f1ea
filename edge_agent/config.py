"""The agent's TOML configuration, one typed model per table, validated once at start.

Every error names the dotted key at fault, e.g. ``sources.modbus[0].port: must be 1..65535,
got 70000``, and a key the agent does not know is refused with a did-you-mean
(``proto.settings``). The README's configuration reference is generated from these models
(``scripts/config_reference.py``); a test fails when it is stale.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.errors import ConfigError
from proto import limits
from proto.settings import (
    FilePath,
    MetricsSection,
    Settings,
    read_toml,
    unique_by,
    validate,
)

log = logging.getLogger(__name__)


# What the meters behind a device measure; only customers count as consumption. The names
# match proto MeterRole: METER_ROLE_<NAME>.
MeterRole = Literal["customer", "feeder_head", "transformer"]
Seconds = Annotated[float, Field(allow_inf_nan=False)]


class AgentSection(Settings):
    """Who this agent is."""

    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"\S",
        description="Agent id; must match its enrollment at the core",
        examples=["sub-north-0042"],
    )
    signing_key_file: FilePath = Field(
        description="Ed25519 signing key, from `edge-agent keygen`", examples=["agent.key"]
    )


class PseudonymizationSection(Settings):
    """The key that turns meter serials into pseudonyms (HMAC-SHA-256)."""

    key_file: FilePath = Field(
        description="From `edge-agent pseudonym-keygen`", examples=["pseudonym.key"]
    )
    key_id: str = Field(
        min_length=1,
        description="Sent with every batch; names the key centrally",
        examples=["north-2026-11"],
    )


class BufferSection(Settings):
    """The on-disk buffer (SQLite, WAL): what is read, until the core has it."""

    path: FilePath = Field(Path("buffer.sqlite"), description="The buffer file")
    synchronous: Literal["full", "normal"] = Field(
        "full", description="full: every commit on disk before the agent moves on"
    )
    retain_acknowledged_seconds: Seconds = Field(
        86_400.0, ge=0, le=30 * 86_400, description="Keep delivered batches this long for `resend`"
    )
    max_bytes: int = Field(
        1 << 30, ge=1 << 20, le=1 << 40, description="The buffer file's cap (the WAL adds <= 4 MB)"
    )


class UplinkTlsConfig(Settings):
    """Optional: mutual TLS to the core (files from `core-ingest ca`); ca, cert and key all."""

    ca: FilePath = Field(
        description="The authority the core's certificate must come from", examples=["tls/ca.crt"]
    )
    cert: FilePath = Field(
        description="This agent's certificate; its common name must be agent.id",
        examples=["tls/agent-sub-north-0042.crt"],
    )
    key: FilePath = Field(
        description="Its private key; refused if others can read it",
        examples=["tls/agent-sub-north-0042.key"],
    )
    server_name: str | None = Field(
        None, description="The name to expect in the core's certificate, if not the target's"
    )


class UplinkSection(Settings):
    """The signed-batch stream to the core."""

    target: str = Field(
        min_length=1, description="The core's host:port", examples=["core.example.net:50051"]
    )
    batch_max_readings: int = Field(5_000, ge=1, le=50_000, description="Readings per batch")
    batch_max_age_seconds: Seconds = Field(
        5.0, ge=0, le=3_600, description="Seal a partial batch this long after its first reading"
    )
    max_in_flight: int = Field(8, ge=1, le=256, description="Batches sent and not yet acknowledged")
    ack_timeout_seconds: Seconds = Field(
        60.0, ge=1, le=3_600, description="A batch unanswered this long means the link is dead"
    )
    compression: Literal["none", "gzip"] = Field(
        "none", description="gzip: gRPC compresses each batch"
    )
    max_bytes_per_second: int = Field(
        0, ge=0, le=10**10, description="Cap on batch bytes sent per second; 0: no cap"
    )
    tls: UplinkTlsConfig | None = None


class TransformerTopic(Settings):
    """One transformer's telemetry topic: an exact topic, no wildcards."""

    topic: str = Field(
        min_length=1,
        description="The topic its sensors publish to",
        examples=["grid/North/N-S01/N-S01-T1/telemetry"],
    )
    transformer_id: str = Field(min_length=1, description="The transformer", examples=["N-S01-T1"])

    @field_validator("topic")
    @classmethod
    def _exact(cls, topic: str) -> str:
        if any(c in topic for c in "+#"):
            raise ValueError("must be a topic name, not a wildcard filter")
        return topic


class MqttConfig(Settings):
    """Optional: transformer telemetry over MQTT (docs/mqtt-topics.md)."""

    host: str = Field(min_length=1, description="The broker", examples=["127.0.0.1"])
    port: int = Field(1883, ge=1, le=65_535, description="The broker's port")
    client_id: str | None = Field(
        None, description="The persistent session's id (default edge-agent-<agent id>)"
    )
    qos: int = Field(1, ge=0, le=2, description="1 or 2; 0 is best-effort and warned about")
    transformers: Annotated[list[TransformerTopic], unique_by("topic")] = Field(min_length=1)

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> transformer id."""
        return {t.topic: t.transformer_id for t in self.transformers}


class VeeRules(Settings):
    """VEE thresholds of ruleset vee-1; every key optional (docs/validation.md)."""

    spike_ratio: float = Field(
        3.0, ge=0, description="Flag energy above (1 + ratio) x the meter's reference"
    )
    spike_floor_wh: int = Field(50, ge=0, description="... and at least this far above")
    zero_floor_wh: int = Field(
        20, ge=0, description="A zero is suspect where the meter usually uses this much"
    )
    consecutive_zeros: int = Field(4, ge=0, description="... or after this many zeros")
    stuck_repeats: int = Field(
        4, ge=0, description="The same non-zero value this many times in a row"
    )
    sum_tolerance_wh: int = Field(
        0, ge=0, description="Allowed |register delta - energy|; raise for rounding"
    )
    time_sync_seconds: int = Field(
        10, ge=0, description="Allowed distance of the interval end from the grid"
    )
    linear_gap_intervals: int = Field(
        4, ge=0, description="Gaps up to this: linear interpolation; longer: like-day"
    )
    max_estimate_intervals: int = Field(96 * 7, ge=0, description="Longer gaps are left as gaps")
    max_interval_energy_wh: int = Field(
        limits.MAX_INTERVAL_ENERGY_WH,
        ge=0,
        le=limits.MAX_INTERVAL_ENERGY_WH,
        description="Hard limit; can only be lowered",
    )
    profile_weight: float = Field(
        0.2, ge=0, description="Weight of a new value in the time-of-day profile"
    )


class ModbusSourceConfig(Settings):
    """One meter concentrator read over Modbus TCP; at least one."""

    name: str = Field(min_length=1, description="Unique", examples=["concentrator-1"])
    host: str = Field(min_length=1, description="Its address", examples=["10.20.0.11"])
    port: int = Field(502, ge=1, le=65_535, description="Modbus TCP port")
    unit_id: int = Field(1, ge=1, le=247, description="Modbus unit id")
    poll_interval_seconds: Seconds = Field(
        60.0, ge=0.05, le=3_600, description="Devices start staggered over it"
    )
    timeout_seconds: Seconds = Field(3.0, ge=0.1, le=60, description="Per request")
    retries: int = Field(1, ge=0, le=10, description="Extra tries per request")
    word_order: Literal["high_first", "low_first"] = Field(
        "high_first", description="high_first is the Modbus convention"
    )
    byte_order: Literal["big", "little"] = Field("big", description="big is the Modbus convention")
    backfill: bool = Field(default=True, description="Read missed intervals back from history")
    failure_threshold: int = Field(
        3, ge=1, le=100, description="Failures in a row that open the device's circuit breaker"
    )
    breaker_reset_seconds: Seconds = Field(
        30.0, ge=0.1, le=3_600, description="First wait before a trial; doubles up to 10 minutes"
    )
    role: MeterRole = Field(
        "customer",
        description="What its meters measure: feeder_head meters (energy entering the"
        " substation) are not consumption, compared with it in substation_day_losses",
    )

    @property
    def device(self) -> str:
        """How batches and lineage name this device."""
        return f"modbus://{self.host}:{self.port}/{self.unit_id}"


class SourcesSection(Settings):
    """The devices the agent reads."""

    modbus: Annotated[list[ModbusSourceConfig], unique_by("name")] = Field(min_length=1)


class AgentConfig(Settings):
    """The whole configuration of one edge agent (``edge-agent.toml``)."""

    agent: AgentSection
    pseudonymization: PseudonymizationSection
    # Defaults are validated too: the default buffer path joins the file's folder.
    buffer: BufferSection = Field({})  # type: ignore[assignment]
    uplink: UplinkSection
    mqtt: MqttConfig | None = None
    validation: VeeRules = VeeRules()
    # Validated as an empty table when absent, so a missing [[sources.modbus]] is named.
    sources: SourcesSection = Field({})  # type: ignore[assignment]
    metrics: MetricsSection = MetricsSection()

    @model_validator(mode="before")
    @classmethod
    def _mqtt_client_id(cls, data: Any) -> Any:  # noqa: ANN401 - the raw TOML document
        """The MQTT session is named after the agent unless configured."""
        mqtt, agent = data.get("mqtt"), data.get("agent")
        if isinstance(mqtt, dict) and isinstance(agent, dict) and not mqtt.get("client_id"):
            return {**data, "mqtt": {**mqtt, "client_id": f"edge-agent-{agent.get('id')}"}}
        return data


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read ``path``, apply top-level table ``overrides``, validate and return the config.

    Relative file paths in the config are taken relative to the config file's folder.

    Raises:
        ConfigError: naming the key at fault (or ``file`` when the file itself is bad).

    """
    data = read_toml(path, ConfigError)
    for table, values in (overrides or {}).items():
        data.setdefault(table, {}).update({k: v for k, v in values.items() if v is not None})
    return parse_config(data, base=path.parent)


def parse_config(data: dict[str, Any], *, base: Path) -> AgentConfig:
    """Validate an already-parsed TOML document (see ``load_config``)."""
    config = validate(AgentConfig, data, error=ConfigError, base=base)
    if config.mqtt is not None and config.mqtt.qos == 0:
        log.warning(
            "mqtt.qos = 0: the broker will not redeliver messages lost while the agent "
            "is away; telemetry is then best-effort, not at-least-once"
        )
    return config
