"""The core's TOML configuration, one typed model per table, merged with environment and flags.

Layers, later wins: the file (``--config``), then ``CORE_INGEST_DSN`` / ``CORE_INGEST_LISTEN``,
then command-line flags. Every error names the dotted key at fault, and an unknown key is
refused with a did-you-mean (``proto.settings``). Relative file paths are taken from the
configuration file's folder. The README's configuration reference is generated from these
models (``scripts/config_reference.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from core_ingest.errors import ConfigError
from core_ingest.lineage.config import LineageConfig
from core_ingest.quality_watch import AlertRule
from proto.settings import Address, FilePath, MetricsSection, Settings, read_toml, validate

DEFAULT_LISTEN = "127.0.0.1:50051"
REFERENCE_RULE = AlertRule()  # the reference case's rule: 0.5 % of the last hour


class DatabaseSection(Settings, frozen=True):
    """The central database."""

    dsn: Annotated[
        str,
        Meta(
            min_length=1,
            description="Or --dsn, or CORE_INGEST_DSN",
            examples=["postgresql://meterpipe_core@db.example.net/meters"],
        ),
    ]
    storage: Annotated[
        Literal["auto", "timescaledb", "native-partitioning"],
        Meta(description="For a new schema: auto takes TimescaleDB when preloaded"),
    ] = "auto"
    # Connections shared by every agent's stream: a few per database core is plenty.
    pool_size: Annotated[
        int, Meta(ge=1, le=1_000, description="Connections shared by all streams")
    ] = 8


class ServerTlsFiles(Settings, frozen=True):
    """Optional: mutual TLS only; cert, key and client_ca all, or no table."""

    cert: Annotated[
        FilePath,
        Meta(
            description="From `core-ingest ca issue-server`",
            examples=["tls/server-core.example.net.crt"],
        ),
    ]
    key: Annotated[
        FilePath,
        Meta(description="Its private key", examples=["tls/server-core.example.net.key"]),
    ]
    client_ca: Annotated[
        FilePath,
        Meta(
            description="Agents' certificates must come from this authority",
            examples=["tls/ca.crt"],
        ),
    ]


class ServerSection(Settings, frozen=True):
    """The gRPC server agents stream to."""

    listen: Annotated[Address, Meta(description="host:port")] = Address(DEFAULT_LISTEN)
    # Batches of one stream verified and written at once; the agent keeps 8 in flight.
    batches_per_stream: Annotated[
        int, Meta(ge=1, le=64, description="Batches of one agent verified and written at once")
    ] = 4
    tls: ServerTlsFiles | None = None  # None: plaintext, for loopback or inside a VPN only


class QualitySection(Settings, frozen=True):
    """The suspect-share alert (the reference case's rule); all optional."""

    alert_threshold: Annotated[
        float,
        Meta(
            ge=0,
            le=1,
            description="Alert when more than this share of readings is flagged suspect",
        ),
    ] = REFERENCE_RULE.threshold
    alert_window_seconds: Annotated[
        float, Meta(ge=1, le=86_400, description="... among those received")
    ] = REFERENCE_RULE.window_seconds
    alert_check_seconds: Annotated[
        float, Meta(ge=0.1, le=3_600, description="How often each core checks")
    ] = REFERENCE_RULE.check_seconds
    alert_min_readings: Annotated[
        int, Meta(ge=1, le=10**9, description="Fewer readings in the window raise nothing")
    ] = REFERENCE_RULE.min_readings

    @property
    def rule(self) -> AlertRule:
        """The rule the quality watch applies."""
        return AlertRule(
            threshold=self.alert_threshold,
            window_seconds=self.alert_window_seconds,
            check_seconds=self.alert_check_seconds,
            min_readings=self.alert_min_readings,
        )


class CoreConfig(Settings, frozen=True):
    """The whole configuration of one core ingest process (``core.toml``)."""

    database: DatabaseSection
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    openlineage: LineageConfig | None = None
    quality: QualitySection = msgspec.field(default_factory=QualitySection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)


def load_config(
    path: Path | None,
    *,
    dsn: str | None = None,
    listen: str | None = None,
    storage: str | None = None,
) -> CoreConfig:
    """Merge the file with overrides (None means "not given") and validate.

    Raises:
        ConfigError: naming the dotted key at fault (or ``file`` when the file itself is bad).

    """
    data: dict[str, Any] = read_toml(path, ConfigError) if path else {}
    data.setdefault("database", {})  # checked when absent too, so the error names database.dsn
    overrides = (("database", "dsn", dsn), ("server", "listen", listen))
    for table, key, value in (*overrides, ("database", "storage", storage)):
        if value is not None and isinstance(data.setdefault(table, {}), dict):
            data[table][key] = value
    return validate(CoreConfig, data, error=ConfigError, base=path.parent if path else None)
