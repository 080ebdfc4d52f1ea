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

import msgspec
from msgspec import Meta

from edge_agent.errors import ConfigError
from proto import limits
from proto.settings import (
    FilePath,
    MetricsSection,
    Settings,
    invalid,
    read_toml,
    unique,
    validate,
)

log = logging.getLogger(__name__)


# What the meters behind a device measure; only customers count as consumption. The names
# match proto MeterRole: METER_ROLE_<NAME>.
MeterRole = Literal["customer", "feeder_head", "transformer"]


class AgentSection(Settings, frozen=True):
    """Who this agent is."""

    id: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=64,
            pattern=r"\S",
            description="Agent id; must match its enrollment at the core",
            examples=["sub-north-0042"],
        ),
    ]
    signing_key_file: Annotated[
        FilePath,
        Meta(description="Ed25519 signing key, from `edge-agent keygen`", examples=["agent.key"]),
    ]


class PseudonymizationSection(Settings, frozen=True):
    """The key that turns meter serials into pseudonyms (HMAC-SHA-256)."""

    key_file: Annotated[
        FilePath, Meta(description="From `edge-agent pseudonym-keygen`", examples=["pseudonym.key"])
    ]
    key_id: Annotated[
        str,
        Meta(
            min_length=1,
            description="Sent with every batch; names the key centrally",
            examples=["north-2026-11"],
        ),
    ]


class BufferSection(Settings, frozen=True):
    """The on-disk buffer (SQLite, WAL): what is read, until the core has it."""

    path: Annotated[FilePath, Meta(description="The buffer file")] = Path("buffer.sqlite")
    synchronous: Annotated[
        Literal["full", "normal"],
        Meta(description="full: every commit on disk before the agent moves on"),
    ] = "full"
    retain_acknowledged_seconds: Annotated[
        float,
        Meta(ge=0, le=30 * 86_400, description="Keep delivered batches this long for `resend`"),
    ] = 86_400.0
    max_bytes: Annotated[
        int,
        Meta(ge=1 << 20, le=1 << 40, description="The buffer file's cap (the WAL adds <= 4 MB)"),
    ] = 1 << 30


class UplinkTlsConfig(Settings, frozen=True):
    """Optional: mutual TLS to the core (files from `core-ingest ca`); ca, cert and key all."""

    ca: Annotated[
        FilePath,
        Meta(
            description="The authority the core's certificate must come from",
            examples=["tls/ca.crt"],
        ),
    ]
    cert: Annotated[
        FilePath,
        Meta(
            description="This agent's certificate; its common name must be agent.id",
            examples=["tls/agent-sub-north-0042.crt"],
        ),
    ]
    key: Annotated[
        FilePath,
        Meta(
            description="Its private key; refused if others can read it",
            examples=["tls/agent-sub-north-0042.key"],
        ),
    ]
    server_name: (
        Annotated[
            str,
            Meta(description="The name to expect in the core's certificate, if not the target's"),
        ]
        | None
    ) = None


class UplinkSection(Settings, frozen=True):
    """The signed-batch stream to the core."""

    target: Annotated[
        str,
        Meta(min_length=1, description="The core's host:port", examples=["core.example.net:50051"]),
    ]
    batch_max_readings: Annotated[int, Meta(ge=1, le=50_000, description="Readings per batch")] = (
        5_000
    )
    batch_max_age_seconds: Annotated[
        float,
        Meta(ge=0, le=3_600, description="Seal a partial batch this long after its first reading"),
    ] = 5.0
    max_in_flight: Annotated[
        int, Meta(ge=1, le=256, description="Batches sent and not yet acknowledged")
    ] = 8
    ack_timeout_seconds: Annotated[
        float,
        Meta(ge=1, le=3_600, description="A batch unanswered this long means the link is dead"),
    ] = 60.0
    compression: Annotated[
        Literal["none", "gzip"], Meta(description="gzip: gRPC compresses each batch")
    ] = "none"
    max_bytes_per_second: Annotated[
        int, Meta(ge=0, le=10**10, description="Cap on batch bytes sent per second; 0: no cap")
    ] = 0
    tls: UplinkTlsConfig | None = None


class TransformerTopic(Settings, frozen=True):
    """One transformer's telemetry topic: an exact topic, no wildcards."""

    topic: Annotated[
        str,
        Meta(
            min_length=1,
            description="The topic its sensors publish to",
            examples=["grid/North/N-S01/N-S01-T1/telemetry"],
        ),
    ]
    transformer_id: Annotated[
        str, Meta(min_length=1, description="The transformer", examples=["N-S01-T1"])
    ]

    def __post_init__(self) -> None:
        """An exact topic: a wildcard filter would mix transformers under one id."""
        if any(c in self.topic for c in "+#"):
            raise invalid(
                "topic", f"must be a topic name, not a wildcard filter, got {self.topic!r}"
            )


class MqttConfig(Settings, frozen=True, kw_only=True):  # required keys among optional ones
    """Optional: transformer telemetry over MQTT (docs/mqtt-topics.md)."""

    host: Annotated[str, Meta(min_length=1, description="The broker", examples=["127.0.0.1"])]
    port: Annotated[int, Meta(ge=1, le=65_535, description="The broker's port")] = 1883
    client_id: (
        Annotated[
            str, Meta(description="The persistent session's id (default edge-agent-<agent id>)")
        ]
        | None
    ) = None
    qos: Annotated[
        int, Meta(ge=0, le=2, description="1 or 2; 0 is best-effort and warned about")
    ] = 1
    transformers: Annotated[list[TransformerTopic], Meta(min_length=1)]

    def __post_init__(self) -> None:
        """One transformer per topic."""
        unique(self.transformers, "topic", "transformers")

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> transformer id."""
        return {t.topic: t.transformer_id for t in self.transformers}


class VeeRules(Settings, frozen=True):
    """VEE thresholds of ruleset vee-1; every key optional (docs/validation.md)."""

    spike_ratio: Annotated[
        float, Meta(ge=0, description="Flag energy above (1 + ratio) x the meter's reference")
    ] = 3.0
    spike_floor_wh: Annotated[int, Meta(ge=0, description="... and at least this far above")] = 50
    zero_floor_wh: Annotated[
        int, Meta(ge=0, description="A zero is suspect where the meter usually uses this much")
    ] = 20
    consecutive_zeros: Annotated[int, Meta(ge=0, description="... or after this many zeros")] = 4
    stuck_repeats: Annotated[
        int, Meta(ge=0, description="The same non-zero value this many times in a row")
    ] = 4
    sum_tolerance_wh: Annotated[
        int, Meta(ge=0, description="Allowed |register delta - energy|; raise for rounding")
    ] = 0
    time_sync_seconds: Annotated[
        int, Meta(ge=0, description="Allowed distance of the interval end from the grid")
    ] = 10
    linear_gap_intervals: Annotated[
        int, Meta(ge=0, description="Gaps up to this: linear interpolation; longer: like-day")
    ] = 4
    max_estimate_intervals: Annotated[
        int, Meta(ge=0, description="Longer gaps are left as gaps")
    ] = 96 * 7
    max_interval_energy_wh: Annotated[
        int,
        Meta(ge=0, le=limits.MAX_INTERVAL_ENERGY_WH, description="Hard limit; can only be lowered"),
    ] = limits.MAX_INTERVAL_ENERGY_WH
    profile_weight: Annotated[
        float, Meta(ge=0, description="Weight of a new value in the time-of-day profile")
    ] = 0.2


class ModbusSourceConfig(Settings, frozen=True):
    """One meter concentrator read over Modbus TCP; at least one."""

    name: Annotated[str, Meta(min_length=1, description="Unique", examples=["concentrator-1"])]
    host: Annotated[str, Meta(min_length=1, description="Its address", examples=["10.20.0.11"])]
    port: Annotated[int, Meta(ge=1, le=65_535, description="Modbus TCP port")] = 502
    unit_id: Annotated[int, Meta(ge=1, le=247, description="Modbus unit id")] = 1
    poll_interval_seconds: Annotated[
        float, Meta(ge=0.05, le=3_600, description="Devices start staggered over it")
    ] = 60.0
    timeout_seconds: Annotated[float, Meta(ge=0.1, le=60, description="Per request")] = 3.0
    retries: Annotated[int, Meta(ge=0, le=10, description="Extra tries per request")] = 1
    word_order: Annotated[
        Literal["high_first", "low_first"], Meta(description="high_first is the Modbus convention")
    ] = "high_first"
    byte_order: Annotated[
        Literal["big", "little"], Meta(description="big is the Modbus convention")
    ] = "big"
    backfill: Annotated[bool, Meta(description="Read missed intervals back from history")] = True
    failure_threshold: Annotated[
        int,
        Meta(ge=1, le=100, description="Failures in a row that open the device's circuit breaker"),
    ] = 3
    breaker_reset_seconds: Annotated[
        float,
        Meta(ge=0.1, le=3_600, description="First wait before a trial; doubles up to 10 minutes"),
    ] = 30.0
    role: Annotated[
        MeterRole,
        Meta(
            description="What its meters measure: feeder_head meters (energy entering the"
            " substation) are not consumption, compared with it in substation_day_losses"
        ),
    ] = "customer"

    @property
    def device(self) -> str:
        """How batches and lineage name this device."""
        return f"modbus://{self.host}:{self.port}/{self.unit_id}"


class SourcesSection(Settings, frozen=True):
    """The devices the agent reads."""

    modbus: Annotated[list[ModbusSourceConfig], Meta(min_length=1)]

    def __post_init__(self) -> None:
        """Devices are named in logs and metrics: one name each."""
        unique(self.modbus, "name", "modbus")


class AgentConfig(Settings, frozen=True, kw_only=True):  # required keys among optional ones
    """The whole configuration of one edge agent (``edge-agent.toml``)."""

    agent: AgentSection
    pseudonymization: PseudonymizationSection
    buffer: BufferSection = msgspec.field(default_factory=BufferSection)
    uplink: UplinkSection
    mqtt: MqttConfig | None = None
    validation: VeeRules = msgspec.field(default_factory=VeeRules)
    sources: SourcesSection
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)


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
    # An absent [sources] is checked as an empty one, so the error names sources.modbus.
    config = validate(AgentConfig, {"sources": {}, **data}, error=ConfigError, base=base)
    mqtt = config.mqtt
    if mqtt is None:
        return config
    if mqtt.client_id is None:  # the MQTT session is named after the agent
        mqtt = msgspec.structs.replace(mqtt, client_id=f"edge-agent-{config.agent.id}")
        config = msgspec.structs.replace(config, mqtt=mqtt)
    if mqtt.qos == 0:
        log.warning(
            "mqtt.qos = 0: the broker will not redeliver messages lost while the agent "
            "is away; telemetry is then best-effort, not at-least-once"
        )
    return config
